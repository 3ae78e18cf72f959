"""User-facing errors.

A ``UserError`` is a problem the user can fix (a bad config value, a missing file, a full disk). The CLI prints
its message without a traceback and exits with status 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by input or environment, with a message that names the file, field and fix."""


class ConfigError(UserError):
    """The run config (file or command-line override) is malformed or invalid."""


class RunFolderError(UserError):
    """The run folder cannot be used: unwritable, or made by a different config."""
