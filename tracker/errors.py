"""The exceptions pipetrack raises (in strict mode, or from its command line).

TrackerError
├── ConfigurationError (ValueError)   a setting or DSN that cannot be used
├── DatabaseUnavailable (ConnectionError)   the database cannot be reached in time
└── MigrationError   the schema could not be brought up to date
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "DatabaseUnavailable", "MigrationError", "TrackerError"]


class TrackerError(Exception):
    """Root of every error pipetrack raises."""

    __module__ = "tracker"


class ConfigurationError(TrackerError, ValueError):
    """A setting, environment variable or DSN that pipetrack cannot use."""

    __module__ = "tracker"


class DatabaseUnavailable(TrackerError, ConnectionError):
    """The database did not answer, refused the connection, or rejected the credentials."""

    __module__ = "tracker"

    def __init__(self, message: str, *, target: str = "") -> None:
        super().__init__(message)
        #: the redacted DSN or description of what was tried
        self.target = target


class MigrationError(TrackerError):
    """A schema migration failed or the applied schema does not match the shipped files."""

    __module__ = "tracker"

    def __init__(self, message: str, *, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version
