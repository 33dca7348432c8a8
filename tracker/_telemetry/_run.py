"""The telemetry of one run, as the tracker sees it: one object it calls at each transition.

Combines the run's spans, its metrics and its place in the cross-process context. With
telemetry off it still carries the run id to child processes, and imports no OpenTelemetry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from tracker._telemetry import _config, _context

if TYPE_CHECKING:
    from tracker._telemetry._metrics import Instruments
    from tracker._telemetry._spans import RunSpans

logger = logging.getLogger("tracker")


class ProgressRatios(NamedTuple):
    """A run's progress as ratios 0 to 1; ``None`` where there is none (no subtask open)."""

    overall: float | None
    subtask: float | None


ProgressSource = Callable[[], ProgressRatios]
"""How the gauges read a run's progress: called at metric collection, never on progress calls."""


class Resources(NamedTuple):
    """What a run's latest resource sample and its work counts say (None: not measured)."""

    cpu_seconds: float | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    tcp_received_bytes: int | None = None
    tcp_sent_bytes: int | None = None
    open_fds: int | None = None
    db_connections: int | None = None
    other_connections: int | None = None
    counts: tuple[tuple[str, int], ...] = ()  # (name, count) of each work count


ResourceSource = Callable[[], Resources]
"""How the resource instruments read a run's figures, at metric collection only."""


class RunTelemetry:
    """Spans, metrics and child context of one run. Never raises into the tracker."""

    def __init__(
        self,
        *,
        run_id: str,
        task_name: str,
        stage: str,
        progress: ProgressSource,
        task_type: str | None = None,
        total_subtasks: int | None = None,
        parent_run_id: str | None = None,
        min_event_interval: float | None = None,
        current_index: _context.CurrentIndex | None = None,
        resources: ResourceSource | None = None,
    ) -> None:
        """``current_index`` tells which subtask the calling thread is in (for child processes
        and nested runs); ``progress`` and ``resources`` are read only when metrics are
        collected."""
        self.run_id = run_id
        self.spans: RunSpans | None = None
        self._telemetry: _config.Telemetry | None = None
        self._instruments: Instruments | None = None
        self._metric_key: int | None = None
        self._started = time.monotonic()
        try:
            telemetry = _config.current()
            if telemetry is not None:
                self._start(
                    telemetry,
                    task_name=task_name,
                    stage=stage,
                    progress=progress,
                    task_type=task_type,
                    total_subtasks=total_subtasks,
                    parent_run_id=parent_run_id,
                    min_event_interval=min_event_interval,
                    resources=resources,
                )
        except Exception:
            logger.exception("telemetry: could not start the run's telemetry; going on without")
        _context.enter(run_id, self.spans, current_index)

    def _start(
        self,
        telemetry: _config.Telemetry,
        *,
        task_name: str,
        stage: str,
        progress: ProgressSource,
        task_type: str | None,
        total_subtasks: int | None,
        parent_run_id: str | None,
        min_event_interval: float | None,
        resources: ResourceSource | None,
    ) -> None:
        from tracker._telemetry._metrics import instruments_for
        from tracker._telemetry._spans import MIN_EVENT_INTERVAL, RunSpans

        self._telemetry = telemetry
        if telemetry.tracer is not None:
            self.spans = RunSpans(
                telemetry.tracer,
                run_id=self.run_id,
                task_name=task_name,
                stage=stage,
                task_type=task_type,
                total_subtasks=total_subtasks,
                parent_run_id=parent_run_id,
                parent=_parent_context(parent_run_id),
                min_event_interval=(
                    MIN_EVENT_INTERVAL if min_event_interval is None else min_event_interval
                ),
            )
        self._instruments = instruments_for(telemetry)
        if self._instruments is not None:
            self._metric_key = self._instruments.run_started(
                task_name=task_name, stage=stage, source=progress, resources=resources
            )

    @property
    def trace_id(self) -> str | None:
        """The run's trace id (32 lowercase hex digits) for the canonical row, or ``None``."""
        return self.spans.trace_id if self.spans is not None else None

    def subtask_started(
        self,
        index: int,
        name: str,
        *,
        parent_index: int | None = None,
        items_total: int | None = None,
    ) -> None:
        if self.spans is None:
            return
        try:
            self.spans.subtask_started(
                index, name, parent_index=parent_index, items_total=items_total
            )
        except Exception:
            logger.debug("telemetry: subtask start failed", exc_info=True)

    def subtask_ended(
        self,
        index: int,
        status: str,
        *,
        error: BaseException | None = None,
        message: str | None = None,
        percent: float | None = None,
        items_complete: int | None = None,
        items_total: int | None = None,
    ) -> None:
        if self.spans is None:
            return
        try:
            self.spans.subtask_ended(
                index,
                status,
                error=error,
                message=message,
                percent=percent,
                items_complete=items_complete,
                items_total=items_total,
            )
        except Exception:
            logger.debug("telemetry: subtask end failed", exc_info=True)

    def message(
        self,
        text: str,
        *,
        index: int | None = None,
        percent: float | None = None,
        items_complete: int | None = None,
        items_total: int | None = None,
    ) -> None:
        if self.spans is None:
            return
        try:
            self.spans.message(
                text,
                index=index,
                percent=percent,
                items_complete=items_complete,
                items_total=items_total,
            )
        except Exception:
            logger.debug("telemetry: message event failed", exc_info=True)

    def run_ended(
        self,
        status: str,
        *,
        error: BaseException | None = None,
        message: str | None = None,
        detail: str | None = None,
        error_type: str | None = None,
        exit_code: int | None = None,
        overall_percent: float | None = None,
    ) -> None:
        """End the run's spans and metrics. ``detail``/``error_type`` describe a failure whose
        exception object is no longer at hand (its traceback text and class name)."""
        _context.leave(self.run_id)
        try:
            if self.spans is not None:
                self.spans.run_ended(
                    status,
                    error=error,
                    message=message,
                    detail=detail,
                    error_type_hint=error_type,
                    exit_code=exit_code,
                    overall_percent=overall_percent,
                )
            if self._instruments is not None and self._metric_key is not None:
                from tracker._telemetry import _spans

                result = _spans.RUN_RESULTS.get(status, "error")
                failed = result in ("failure", "error")
                self._instruments.run_ended(
                    self._metric_key,
                    duration_s=time.monotonic() - self._started,
                    result=result,
                    error_type=_spans.error_type(error, exit_code, error_type) if failed else None,
                )
                self._metric_key = None
            if status == "CANCELLED" and self._telemetry is not None:
                # A signal ends the process right after this (re-raised with its default
                # action, which skips atexit): deliver now, within the exit timeout.
                self._telemetry.flush(_config.exit_timeout())
        except Exception:
            logger.debug("telemetry: run end failed", exc_info=True)


def _parent_context(parent_run_id: str | None) -> Any:
    """Where the run span belongs: under the current span of its parent run when that run is
    under way in this process (a nested run), else under the context a parent process handed
    over in ``TRACEPARENT``, else under whatever span is current (a root if none)."""
    span = _context.span_of_run(parent_run_id)
    if span is not None:
        from opentelemetry import trace

        return trace.set_span_in_context(span)
    return _context.incoming_context()
