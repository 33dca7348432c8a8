"""The spans of one run: a run span, a child span per subtask (nested ones nest), message events.

Attributes follow the OpenTelemetry CI/CD semantic conventions (``cicd.pipeline.*``,
``error.type``), with ``pipetrack.*`` for what they lack. Progress messages become span events at
most once per ``min_event_interval`` per span; a message held back is kept and written (with its
own time) when the span ends, so the last word of every subtask survives.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Imported only when telemetry is on (tracker._telemetry._run loads this module lazily), so the
# API is imported here once rather than on every call.
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracker._model.secrets import mask_secrets

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

MIN_EVENT_INTERVAL = 1.0
MESSAGE_EVENT = "pipetrack.message"
RUN_KEY = 0  # rate-limit key of messages that belong to the run rather than a subtask

# Run status -> cicd.pipeline.result; subtask status -> cicd.pipeline.task.run.result
RUN_RESULTS = {"FINISHED": "success", "FAILED": "failure", "CANCELLED": "cancellation"}
SUBTASK_RESULTS = {"COMPLETED": "success", "FAILED": "failure", "CANCELLED": "cancellation"}
MAX_MESSAGE_CHARS = 4096


def error_type(
    error: BaseException | None, exit_code: int | None = None, hint: str | None = None
) -> str:
    """A low-cardinality ``error.type``: the exception's class name (qualified unless builtin),
    else ``hint`` (a class name known only as text), ``exit_code`` for a wrapped command's
    non-zero exit, else the conventions' ``_OTHER``."""
    if error is not None:
        cls = type(error)
        if cls.__module__ == "builtins":
            return cls.__qualname__
        return f"{cls.__module__}.{cls.__qualname__}"
    if hint:
        return hint
    if exit_code:
        return "exit_code"
    return "_OTHER"


def trace_id_hex(span: Span) -> str | None:
    """The span's trace id as 32 lowercase hex digits, or ``None`` for an invalid context."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@dataclass
class _Pending:
    attributes: dict[str, Any]
    timestamp_ns: int


@dataclass
class _Events:
    """Rate-limit state of one span's message events."""

    last_emit: float | None = None
    pending: _Pending | None = None
    held_back: int = 0  # messages superseded before they could be written


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


class RunSpans:
    """Creates and ends the spans of one run; every method is safe to call from any thread."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        run_id: str,
        task_name: str,
        stage: str,
        task_type: str | None = None,
        total_subtasks: int | None = None,
        parent_run_id: str | None = None,
        parent: Context | None = None,
        min_event_interval: float = MIN_EVENT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracer = tracer
        self._run_id = run_id
        self._interval = min_event_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._ended = False
        # CI/CD conventions: the pipeline run span is a SERVER span; DESIGN.md names it after
        # the task, which is also the low-cardinality pipeline name.
        self._run = tracer.start_span(
            task_name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=_clean(
                {
                    "cicd.pipeline.name": task_name,
                    "cicd.pipeline.run.id": run_id,
                    "cicd.pipeline.action.name": "RUN",
                    "pipetrack.stage": stage,
                    "pipetrack.task_type": task_type,
                    "pipetrack.total_subtasks": total_subtasks,
                    "pipetrack.parent_run_id": parent_run_id,
                }
            ),
        )
        # The open subtasks' spans, outermost (first started) first. One dict, each change one
        # operation: a handler that raises (KeyboardInterrupt) between two steps of a change
        # must not leave a subtask half-registered for the signal worker's run_ended to meet.
        self._subtasks: dict[int, Span] = {}
        self._events: dict[int, _Events] = {RUN_KEY: _Events()}

    @property
    def trace_id(self) -> str | None:
        return trace_id_hex(self._run)

    def span_for(self, index: int | None) -> Span:
        """Subtask ``index``'s span while it is open, else the run's: what a child process or a
        nested run belongs under."""
        with self._lock:
            span = self._subtasks.get(index) if index is not None else None
            return span if span is not None else self._run

    # -- subtasks ------------------------------------------------------------------------------

    def subtask_started(
        self,
        index: int,
        name: str,
        *,
        parent_index: int | None = None,
        items_total: int | None = None,
    ) -> None:
        with self._lock:
            if self._ended or index in self._subtasks:
                return
            # The tracker knows which subtask encloses which (per thread); without a parent
            # the subtask is a direct child of the run.
            parent = self._subtasks.get(parent_index) if parent_index is not None else None
            context = trace.set_span_in_context(parent if parent is not None else self._run)
            # Its events first: a subtask is open once its span is in _subtasks, and message()
            # then finds its events.
            self._events[index] = _Events()
            self._subtasks[index] = self._tracer.start_span(
                name,
                context=context,
                # The pipeline's name, run id and stage are on the run span; repeating them
                # on every subtask span would only add to each span's cost.
                attributes=_clean(
                    {
                        "cicd.pipeline.task.name": name,
                        "cicd.pipeline.task.run.id": f"{self._run_id}/{index}",
                        "pipetrack.subtask.index": index,
                        "pipetrack.subtask.parent_index": parent_index,
                        "pipetrack.items.total": items_total,
                    }
                ),
            )

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
        with self._lock:
            span = self._subtasks.pop(index, None)
            if span is None:
                return
            self._end_subtask_locked(
                index,
                span,
                status,
                error=error,
                message=message,
                percent=percent,
                items_complete=items_complete,
                items_total=items_total,
            )

    def _end_subtask_locked(
        self,
        index: int,
        span: Span,
        status: str,
        *,
        error: BaseException | None,
        message: str | None,
        percent: float | None = None,
        items_complete: int | None = None,
        items_total: int | None = None,
    ) -> None:
        events = self._events.pop(index, _Events())
        self._flush_pending(span, events)
        result = SUBTASK_RESULTS.get(status, "error")
        span.set_attributes(
            _clean(
                {
                    "cicd.pipeline.task.run.result": result,
                    "pipetrack.percent_complete": percent,
                    "pipetrack.items.complete": items_complete,
                    "pipetrack.items.total": items_total,
                    "pipetrack.messages.held_back": events.held_back or None,
                }
            )
        )
        self._set_outcome(span, result, error=error, message=message)
        span.end()

    # -- messages ------------------------------------------------------------------------------

    def message(
        self,
        text: str,
        *,
        index: int | None = None,
        percent: float | None = None,
        items_complete: int | None = None,
        items_total: int | None = None,
    ) -> None:
        """A progress message: an event on subtask ``index`` while it is open, else on the run;
        written now or, if one was written less than the interval ago, later."""
        attributes = _clean(
            {
                "message": text[:MAX_MESSAGE_CHARS],
                "pipetrack.percent_complete": percent,
                "pipetrack.items.complete": items_complete,
                "pipetrack.items.total": items_total,
            }
        )
        now_ns = time.time_ns()
        now = self._clock()
        with self._lock:
            if self._ended:
                return
            if index is None or index not in self._subtasks:
                index = RUN_KEY
            span = self._subtasks[index] if index != RUN_KEY else self._run
            events = self._events[index]
            if events.last_emit is None or now - events.last_emit >= self._interval:
                if events.pending is not None:
                    events.held_back += 1
                    events.pending = None
                span.add_event(MESSAGE_EVENT, attributes, timestamp=now_ns)
                events.last_emit = now
            else:
                if events.pending is not None:
                    events.held_back += 1
                events.pending = _Pending(attributes, now_ns)

    @staticmethod
    def _flush_pending(span: Span, events: _Events) -> None:
        if events.pending is not None:
            span.add_event(
                MESSAGE_EVENT, events.pending.attributes, timestamp=events.pending.timestamp_ns
            )
            events.pending = None

    # -- outcome -------------------------------------------------------------------------------

    @staticmethod
    def _set_outcome(
        span: Span,
        result: str,
        *,
        error: BaseException | None,
        message: str | None,
        exit_code: int | None = None,
        detail: str | None = None,
        error_type_hint: str | None = None,
    ) -> None:
        # Error text goes to the trace backend masked as it goes to the database
        # (tracker._model.secrets).
        message = None if message is None else mask_secrets(message)
        if error is not None:
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            span.record_exception(
                error,
                {
                    "exception.message": mask_secrets(str(error)),
                    "exception.stacktrace": mask_secrets(stack),
                },
            )
        elif detail:
            # The exception object is gone (e.g. reported by sys.excepthook); its text is not.
            span.add_event(
                "exception",
                {
                    "exception.type": error_type_hint or "_OTHER",
                    "exception.message": message or "",
                    "exception.stacktrace": mask_secrets(detail),
                },
            )
        if result in ("failure", "error"):
            span.set_attribute("error.type", error_type(error, exit_code, error_type_hint))
            description = message or (
                f"{type(error).__name__}: {mask_secrets(str(error))}" if error else None
            )
            span.set_status(Status(StatusCode.ERROR, description))
        elif result == "cancellation":
            # A cancelled run did not do its work: marked as an error so trace views flag it,
            # with the result attribute telling it apart from a failure.
            span.set_status(
                Status(StatusCode.ERROR, f"cancelled: {message}" if message else "cancelled")
            )

    def run_ended(
        self,
        status: str,
        *,
        error: BaseException | None = None,
        message: str | None = None,
        detail: str | None = None,
        error_type_hint: str | None = None,
        exit_code: int | None = None,
        overall_percent: float | None = None,
    ) -> None:
        """End open subtask spans (innermost first) and the run span with ``status``.

        ``detail`` (a traceback as text) and ``error_type_hint`` stand in for ``error`` when
        only the failure's description is known."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            result = RUN_RESULTS.get(status, "error")
            # Subtasks still open when the run ends share its fate; the exception is recorded
            # once, on the innermost, where it was raised.
            sub_status = {"success": "COMPLETED", "cancellation": "CANCELLED"}.get(result, "FAILED")
            innermost = True
            while self._subtasks:
                index, span = self._subtasks.popitem()  # the last started: innermost first
                self._end_subtask_locked(
                    index,
                    span,
                    sub_status,
                    error=error if innermost else None,
                    message=message,
                )
                innermost = False
            run_events = self._events.pop(RUN_KEY, _Events())
            self._flush_pending(self._run, run_events)
            self._run.set_attributes(
                _clean(
                    {
                        "cicd.pipeline.result": result,
                        "pipetrack.status": status,
                        "pipetrack.exit_code": exit_code,
                        "pipetrack.overall_percent_complete": overall_percent,
                        "pipetrack.messages.held_back": run_events.held_back or None,
                    }
                )
            )
            self._set_outcome(
                self._run,
                result,
                error=error,
                message=message,
                exit_code=exit_code,
                detail=detail,
                error_type_hint=error_type_hint,
            )
            self._run.end()
