"""The project's own error type: a problem with the user's input or setup, reported without a traceback.

Every command-line entry point turns a `UserError` into one `error: …` line and exit status 2, and lets
anything else raise with its traceback: an unexpected exception is a bug to be seen, not a message to be read.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file, a setting that cannot work, a busy output directory: fixable by the user.
    The message says what is wrong and where (file, line, field, setting)."""
