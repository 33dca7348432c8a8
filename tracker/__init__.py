"""pipetrack's tracker: the library pipeline scripts import to record what they are doing.

Two faces on one machinery (see the README):

* Pythonic: ``with tracker.run("DAILY_01_BDC_Locations", total_subtasks=112) as run:``,
  ``with run.subtask("Loading Delaware", items_total=8) as st: st.advance()``,
  ``for s in tracker.progress(states, "Processing states"):``, ``@tracker.track``,
  ``run.count("rows_written", n)``;
* the original design's: ``track_init``, ``track_status``, ``track_task_progress``,
  ``track_finish``, ``track_error``, ``genter``/``gexit``/``gmessage``, and ``gcount``.

Progress calls do no I/O; a writer thread upserts the canonical record in PostgreSQL and spools
to local files while the database is unreachable.
"""

from __future__ import annotations

import importlib
import typing

from tracker._version import __version__
from tracker.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidStatus,
    InvalidValue,
    MigrationError,
    NoActiveRun,
    RunClosed,
    SubtaskOrderError,
    TrackerError,
)

if typing.TYPE_CHECKING:
    from tracker._api import flush, progress, run, shutdown, track
    from tracker._runtime.run import Run
    from tracker._runtime.subtask import Subtask
    from tracker._runtime.trackers import Tracker, configure, current_run
    from tracker._telemetry import child_env
    from tracker.compat import (
        gcount,
        genter,
        gexit,
        gmessage,
        track_error,
        track_finish,
        track_init,
        track_status,
        track_task_progress,
    )

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "InvalidStatus",
    "InvalidValue",
    "MigrationError",
    "NoActiveRun",
    "Run",
    "RunClosed",
    "Subtask",
    "SubtaskOrderError",
    "Tracker",
    "TrackerError",
    "__version__",
    "child_env",
    "configure",
    "current_run",
    "flush",
    "gcount",
    "genter",
    "gexit",
    "gmessage",
    "progress",
    "run",
    "shutdown",
    "track",
    "track_error",
    "track_finish",
    "track_init",
    "track_status",
    "track_task_progress",
]

# The machinery loads on first use (PEP 562), so that `import tracker` and the `pipetrack`
# command's light subcommands (progress, message, enter, exit: called in a pipeline's loops)
# do not pay for the runtime, the writer and telemetry they never use.
_HOMES = {
    "Run": "tracker._runtime.run",
    "Subtask": "tracker._runtime.subtask",
    "Tracker": "tracker._runtime.trackers",
    "child_env": "tracker._telemetry",
    "configure": "tracker._runtime.trackers",
    "current_run": "tracker._runtime.trackers",
    **dict.fromkeys(("flush", "progress", "run", "shutdown", "track"), "tracker._api"),
    **dict.fromkeys(
        (
            "gcount",
            "genter",
            "gexit",
            "gmessage",
            "track_error",
            "track_finish",
            "track_init",
            "track_status",
            "track_task_progress",
        ),
        "tracker.compat",
    ),
}


def __getattr__(name: str) -> typing.Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tracker' has no attribute {name!r}")
    # All of it at the first use, before any run can start (and install the signal handlers):
    # an import later, inside a script's loop, is where a signal could freeze the main thread
    # holding an import lock that the signal's own work then waits for. Telemetry first:
    # importing it registers its exit hook, which must run after the tracker's own.
    importlib.import_module("tracker._telemetry")
    for attribute, home in _HOMES.items():
        globals()[attribute] = getattr(importlib.import_module(home), attribute)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
