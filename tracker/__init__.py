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

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tracker._runtime import trackers
from tracker._runtime.run import Run
from tracker._runtime.subtask import Subtask
from tracker._runtime.trackers import Tracker, configure, current_run
from tracker._telemetry import child_env
from tracker._version import __version__
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

T = TypeVar("T")


def run(
    task_name: str | None = None,
    total_subtasks: int | None = None,
    stage: str | None = None,
    *,
    task_type: str | None = None,
    log_path: str | None = None,
    parent_run_id: str | None = None,
) -> Run:
    """Start a run and make it current; use it as a context manager (FINISHED on leaving,
    FAILED on an exception). ``task_name`` defaults to the script's name; ``stage`` to the
    name's prefix (DAILY_, STATIC_ …)."""
    return trackers.default_tracker().run(
        task_name,
        total_subtasks,
        stage,
        task_type=task_type,
        log_path=log_path,
        parent_run_id=parent_run_id,
    )


def progress(
    iterable: Iterable[T], desc: str | None = None, *, total: int | None = None
) -> Iterator[T]:
    """Iterate ``iterable`` as a subtask of the current run (started if none), counting items."""
    return trackers.default_tracker().progress(iterable, desc, total=total)


def track(name: Any = None, *, total_subtasks: int | None = None) -> Any:
    """Decorator: a call is a run when none is going, else a subtask of the current run."""
    return trackers.default_tracker().track(name, total_subtasks=total_subtasks)


def flush(timeout: float | None = None) -> bool:
    """Wait until everything tracked so far is written or spooled; False if not in time."""
    return trackers.default_tracker().flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """End the runs still going (FINISHED) and write their final state; what exit does."""
    return trackers.default_tracker().shutdown(timeout)


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
