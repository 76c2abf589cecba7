"""Errors that mean "the user asked for something invalid".

The command line prints these as one line and exits non-zero, without a
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a bad option, file, spec or checkpoint."""


class CheckpointError(UserError):
    """A checkpoint or artifact is missing, truncated, edited or incompatible."""


def did_you_mean(word: object, options) -> str:
    """' (did you mean 'x'?)' naming the closest of ``options`` to a mistyped
    ``word`` (difflib's ratio, cutoff 0.6), or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_os_error(exc: OSError) -> str:
    """One line for a filesystem error: the path and what is wrong with it."""
    import errno
    import os

    names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n is not None]
    what = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and names and os.path.isfile(names[0]):
        what = "is a file, so no directory can be made there or under it"
    if names:
        return f"{' -> '.join(str(n) for n in names)}: {what}"
    return f"{what} ({exc})" if str(exc) and str(exc) != what else what


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an exception that is the user's to fix
    (a UserError, a filesystem error, memory the requested sizes do not fit
    in), or None for a bug."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MemoryError):
        detail = f" ({exc})" if str(exc) else ""
        return f"out of memory{detail}: the requested sizes do not fit in this machine's memory"
    if isinstance(exc, OSError) and (exc.filename is not None or exc.errno is not None):
        return describe_os_error(exc)
    return None
