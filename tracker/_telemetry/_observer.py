"""The tracker's telemetry observer: turns Run transitions into RunTelemetry calls.

Registered with ``tracker._runtime.observers`` when ``tracker._telemetry`` is imported. It is
called on run start, subtask start and end, messages and run end — never on progress calls; the
gauges read a run's progress themselves when the SDK collects.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from tracker._telemetry import _config
from tracker._telemetry._run import ProgressRatios, Resources, RunTelemetry

if TYPE_CHECKING:
    from tracker._runtime.run import Run
from tracker._runtime.subtask import Subtask

# "KeyError: 'x'" / "SystemExit: 3" / "pkg.Error" - what Run.fail() makes of an exception.
_TYPE_PREFIX = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def progress_of(run: Run) -> ProgressRatios:
    """A run's progress as ratios, read under its lock (called at metric collection only)."""
    with run._lock:
        overall = run.overall_percent()
        shown = run.shown
        subtask = shown.fraction() if shown is not None and shown.ended is None else None
    return ProgressRatios(None if overall is None else overall / 100.0, subtask)


def resources_of(run: Run) -> Resources:
    """A run's latest resource figures and its work counts (at metric collection only)."""
    with run._lock:
        usage = run.usage
        return Resources(
            usage.cpu_seconds,
            usage.disk_read_bytes,
            usage.disk_write_bytes,
            usage.tcp_received_bytes,
            usage.tcp_sent_bytes,
            run.open_fds,
            run.db_connections,
            run.other_connections,
            tuple(run.counts.values.items()),
        )


def _innermost_index(run: Run) -> int | None:
    """The calling thread's innermost open subtask of ``run``, as the tracker tracks it."""
    subtask = run.innermost_subtask()
    return subtask.index if subtask is not None else None


def _live_exception(described: str | None) -> BaseException | None:
    """The exception being handled on this thread, if it is the one ``described``.

    Runs and subtasks end from ``__exit__`` or an ``except`` block while the exception is in
    flight; the tracker records only its text, so the object is picked up here for
    ``record_exception``. Checked against the text so an unrelated exception is never blamed.
    """
    exc = sys.exc_info()[1]
    if exc is None:
        return None
    if described is None:
        return exc
    name = type(exc).__name__
    return exc if described in (name, f"{name}: {exc}") else None


def error_type_from_message(message: str | None) -> str | None:
    match = _TYPE_PREFIX.match(message or "")
    return match.group(1) if match else None


class TelemetryObserver:
    """One per process; keeps the RunTelemetry of each run it saw start.

    No lock: the runs dict is only read and changed by single dict operations (get, set, pop,
    clear), each atomic. A lock here was held by the main thread when a signal handler, on top
    of it, ended the run and waited for the same lock for ever (issue 14); the signal path no
    longer runs on top of the main thread, but nothing here needs one either.
    """

    def __init__(self) -> None:
        self._runs: dict[str, RunTelemetry] = {}

    def _of(self, run: Run) -> RunTelemetry | None:
        return self._runs.get(run.run_id)

    def end_timeout(self) -> float:
        """How long ``on_run_end`` may flush when a signal ends a run (see _observers)."""
        return _config.exit_timeout() if _config.active() else 0.0

    def on_run_start(self, run: Run) -> None:
        telemetry = RunTelemetry(
            run_id=run.run_id,
            task_name=run.task_name,
            stage=run.task_stage,
            task_type=run.context.get("task_type"),
            total_subtasks=run.total_subtasks,
            parent_run_id=run.parent_run_id,
            progress=lambda: progress_of(run),
            current_index=lambda: _innermost_index(run),
            resources=lambda: resources_of(run),
        )
        self._runs[run.run_id] = telemetry
        if telemetry.trace_id is not None:
            run.set_trace_id(telemetry.trace_id)

    def on_subtask_start(self, run: Run, subtask: Subtask) -> None:
        telemetry = self._of(run)
        if telemetry is not None:
            telemetry.subtask_started(
                subtask.index,
                subtask.name,
                parent_index=subtask.parent_index,
                items_total=subtask.items_total,
            )

    def on_subtask_end(self, run: Run, subtask: Subtask) -> None:
        telemetry = self._of(run)
        if telemetry is None:
            return
        failed = subtask.status == "FAILED"
        telemetry.subtask_ended(
            subtask.index,
            subtask.status,
            error=_live_exception(None) if failed else None,
            message=subtask.message if failed else None,
            percent=subtask.percent(),
            items_complete=subtask.items_complete,
            items_total=subtask.items_total,
        )

    def on_message(self, run: Run, text: str) -> None:
        telemetry = self._of(run)
        if telemetry is not None:
            telemetry.message(text, index=_innermost_index(run))

    def forget_all(self) -> None:
        """After a fork: the child continues none of its parent's runs."""
        self._runs.clear()

    def on_run_end(self, run: Run) -> None:
        telemetry = self._runs.pop(run.run_id, None)
        if telemetry is None:
            return
        failed = run.status == "FAILED"
        error = _live_exception(run.error_message) if run.status != "FINISHED" else None
        telemetry.run_ended(
            run.status,
            error=error,
            message=run.error_message,
            detail=run.error_detail if failed and error is None else None,
            error_type=error_type_from_message(run.error_message) if failed else None,
            exit_code=run.exit_code,
            overall_percent=run.overall_percent(),
        )
