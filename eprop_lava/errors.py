"""Errors that mean "the user asked for something invalid".

The command line prints these as one line and exits non-zero, without a
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a bad option, file, spec or checkpoint."""


class CheckpointError(UserError):
    """A checkpoint or artifact is missing, truncated, edited or incompatible."""
