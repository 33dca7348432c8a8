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

An observer may also have ``end_timeout()``: how long, at most, its ``on_run_end`` may take to
deliver what it has (telemetry flushes there when a signal ends the run); the signal handler
waits that long for it before the process ends.

Progress calls never reach observers: gauges should read ``Run`` state in their own callbacks
(``tracker._runtime.trackers.live_runs()`` lists the runs being tracked). An observer that raises is
logged and skipped; it never breaks the pipeline.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tracker._runtime.run import Run
from tracker._runtime.subtask import Subtask

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


def end_timeout() -> float:
    """The longest ``end_timeout()`` of the observers (0 when none says)."""
    longest = 0.0
    for observer in _observers:
        method = getattr(observer, "end_timeout", None)
        if method is None:
            continue
        try:
            longest = max(longest, float(method()))
        except Exception:
            logger.exception("pipetrack observer %r failed in end_timeout", observer)
    return longest


def _after_fork_in_child() -> None:
    # A thread of the parent may have held it at the fork: held for ever in the child.
    global _lock  # noqa: PLW0603 - replaced, never acquired, in the child
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
