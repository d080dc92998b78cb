"""Errors that are the user's to fix: the CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """A mistake in input, flags or configuration that the user can fix.

    The message must name the problem (the key, the file, the limit and the given value).
    `hint` is an optional next step shown after it, e.g. the command that fixes it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(UserError):
    """A configuration file or flag names an unknown key or has a value of the wrong type."""


class ArtifactError(UserError):
    """An input artifact directory is missing, incomplete or of the wrong kind."""
