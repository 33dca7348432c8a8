"""pipetrack's tracker: the library pipeline scripts import to record what they are doing."""

from __future__ import annotations

from tracker.errors import ConfigurationError, DatabaseUnavailable, MigrationError, TrackerError

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "MigrationError",
    "TrackerError",
    "__version__",
]
