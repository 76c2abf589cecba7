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
