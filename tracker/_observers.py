"""The seam for telemetry: observers told about a run's transitions, never about progress ticks.

An observer (OpenTelemetry spans and events, next) implements any of the methods of
``RunObserver`` and is added with ``add_observer``. The tracker calls them synchronously on the
thread that caused the transition:

* ``on_run_start(run)``   — after the run exists, before its first write is queued; an observer
  may set ``run.trace_id`` (32 lowercase hex digits) here and it is stored with the run;
* ``on_subtask_start(run, subtask)`` / ``on_subtask_end(run, subtask)`` — at each boundary
  (``subtask.status`` is COMPLETED or FAILED at the end);
* ``on_message(run, text)`` — for ``gmessage()`` / ``Run.message()`` (not for messages attached
  to progress calls, which arrive at loop speed);
* ``on_run_end(run)`` — once, when the run reaches FINISHED, FAILED or CANCELLED
  (``run.error_message``/``run.error_detail`` hold the failure).

Progress calls never reach observers: gauges should read ``Run`` state in their own callbacks
(``tracker._tracker.live_runs()`` lists the runs being tracked). An observer that raises is
logged and skipped; it never breaks the pipeline.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tracker._run import Run, Subtask

logger = logging.getLogger("tracker")


class RunObserver(Protocol):
    """What an observer may implement (every method is optional)."""

    def on_run_start(self, run: Run) -> None: ...

    def on_subtask_start(self, run: Run, subtask: Subtask) -> None: ...

    def on_subtask_end(self, run: Run, subtask: Subtask) -> None: ...

    def on_message(self, run: Run, text: str) -> None: ...

    def on_run_end(self, run: Run) -> None: ...


_observers: tuple[Any, ...] = ()
_lock = threading.Lock()


def add_observer(observer: object) -> None:
    """Start telling ``observer`` about transitions (of every Tracker in this process)."""
    global _observers  # noqa: PLW0603 - a process-wide registry, replaced (never mutated) for readers
    with _lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def remove_observer(observer: object) -> None:
    global _observers  # noqa: PLW0603 - see add_observer
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)


def notify(event: str, *args: object) -> None:
    """Call ``event`` on every observer that has it; an observer's failure is only logged."""
    for observer in _observers:
        method = getattr(observer, event, None)
        if method is None:
            continue
        try:
            method(*args)
        except Exception:
            logger.exception("pipetrack observer %r failed in %s", observer, event)
