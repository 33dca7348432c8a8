"""The exceptions pipetrack raises (in strict mode, or from its command line).

TrackerError
├── ConfigurationError (ValueError)   a setting or DSN that cannot be used
├── DatabaseUnavailable (ConnectionError)   the database cannot be reached in time
├── MigrationError   the schema could not be brought up to date
├── InvalidValue (ValueError)   a progress figure, count, name or message the tracker cannot use
│   └── InvalidStatus   a status name that is not one of the known ones
├── RunClosed (RuntimeError)   a call on a run that already reached a final status
├── SubtaskOrderError (RuntimeError)   gexit() without genter(), or subtasks closed out of order
└── NoActiveRun (RuntimeError)   a module-level call when no run is being tracked

The tracker raises the last four only in strict mode; otherwise it logs a warning and sanitizes.
Each class carries the exit status the ``pipetrack`` command ends with when it meets one
(``exit_code``: 1, 2 for a bad configuration, 3 for an unreachable database).
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "InvalidStatus",
    "InvalidValue",
    "MigrationError",
    "NoActiveRun",
    "RunClosed",
    "SubtaskOrderError",
    "TrackerError",
]


class TrackerError(Exception):
    """Root of every error pipetrack raises."""

    __module__ = "tracker"
    #: the ``pipetrack`` command's exit status for this error (documented in the README)
    exit_code = 1


class ConfigurationError(TrackerError, ValueError):
    """A setting, environment variable or DSN that pipetrack cannot use."""

    __module__ = "tracker"
    exit_code = 2  # as argparse's for bad arguments


class DatabaseUnavailable(TrackerError, ConnectionError):
    """The database did not answer, refused the connection, or rejected the credentials."""

    __module__ = "tracker"
    exit_code = 3

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


class InvalidValue(TrackerError, ValueError):
    """A progress figure, item count, name or message the tracker cannot use as given."""

    __module__ = "tracker"

    def __init__(
        self, message: str, *, run_id: str | None = None, argument: str = "", value: object = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        #: the parameter that received the value, e.g. ``"overall_percent"``
        self.argument = argument
        self.value = value


class InvalidStatus(InvalidValue):
    """A run or subtask status name that is not one of the known ones."""

    __module__ = "tracker"


class RunClosed(TrackerError, RuntimeError):
    """A call on a run that already reached FINISHED, FAILED or CANCELLED."""

    __module__ = "tracker"

    def __init__(self, message: str, *, run_id: str | None = None, status: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class SubtaskOrderError(TrackerError, RuntimeError):
    """``gexit()`` without an open subtask, or a subtask closed while its children are open."""

    __module__ = "tracker"

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class NoActiveRun(TrackerError, RuntimeError):
    """A module-level tracking call while no run is being tracked in this process."""

    __module__ = "tracker"
