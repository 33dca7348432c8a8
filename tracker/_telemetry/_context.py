"""One trace across processes: the environment a child process inherits, and reading it back.

A parent hands its children ``TRACEPARENT``/``TRACESTATE`` (W3C Trace Context, the variable names
the OpenTelemetry specification gives for environment carriers) pointing at its current subtask
span, and its run id; a child that starts a run with them becomes a child span of that subtask and
records the parent run. Reading the run id needs no OpenTelemetry at all.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from tracker._env import PIPETRACK_RUN_ID

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from tracker._telemetry._spans import RunSpans

logger = logging.getLogger("tracker")

TRACEPARENT = "TRACEPARENT"
TRACESTATE = "TRACESTATE"


CurrentIndex = Callable[[], "int | None"]
"""The calling thread's innermost open subtask of a run (its index), as the tracker knows it."""


class _Frame(NamedTuple):
    run_id: str
    spans: RunSpans | None
    current_index: CurrentIndex | None

    def span(self) -> Span | None:
        if self.spans is None:
            return None
        index = self.current_index() if self.current_index is not None else None
        return self.spans.span_for(index)


# Runs of this process that are under way, innermost last. A list, not a contextvar: child
# processes are started from any thread, and the run they belong to is the process's run.
_lock = threading.Lock()
_active: list[_Frame] = []


def enter(run_id: str, spans: RunSpans | None, current_index: CurrentIndex | None = None) -> None:
    """Note a run as under way, so :func:`child_env` hands its id (and span) to children."""
    with _lock:
        _active.append(_Frame(run_id, spans, current_index))


def leave(run_id: str) -> None:
    with _lock:
        for i in range(len(_active) - 1, -1, -1):
            if _active[i].run_id == run_id:
                del _active[i]
                return


def span_of_run(run_id: str | None) -> Span | None:
    """The current span of a run of this process that is under way (a nested run's parent)."""
    if run_id is None:
        return None
    with _lock:
        frames = [f for f in _active if f.run_id == run_id and f.spans is not None]
    return frames[-1].span() if frames else None


def forget_all() -> None:
    """After a fork: the child tracks none of its parent's runs (as the tracker does). The lock
    is replaced, not acquired: another thread may have held it at the fork."""
    global _lock  # noqa: PLW0603 - the child's own lock
    _lock = threading.Lock()
    _active.clear()


def _innermost() -> _Frame | None:
    with _lock:
        return _active[-1] if _active else None


def parent_run_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The enclosing run's id from the environment (canonical UUID text), or ``None``."""
    env = os.environ if environ is None else environ
    raw = env.get(PIPETRACK_RUN_ID, "").strip()
    if not raw:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        logger.warning("ignoring %s=%r: not a UUID", PIPETRACK_RUN_ID, raw)
        return None


def incoming_context(environ: Mapping[str, str] | None = None) -> Context | None:
    """The trace context a parent process handed over, or ``None`` (imports the API only when
    ``TRACEPARENT`` is set)."""
    env = os.environ if environ is None else environ
    traceparent = env.get(TRACEPARENT, "").strip()
    if not traceparent:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent}
    if env.get(TRACESTATE):
        carrier["tracestate"] = env[TRACESTATE]
    context = TraceContextTextMapPropagator().extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        logger.warning("ignoring %s=%r: not a W3C traceparent", TRACEPARENT, traceparent)
        return None
    return context


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process, so a run it starts joins this one.

    A copy of ``env`` (default: ``os.environ``) with ``PIPETRACK_RUN_ID`` set to the current run
    and, when telemetry is on, ``TRACEPARENT``/``TRACESTATE`` pointing at the span of the calling
    thread's current subtask (else the run's). Without a current run the environment is
    returned as it is (a context this process inherited passes through to its children). Use
    it as ``subprocess.run(cmd, env=tracker.child_env())``.
    """
    out = dict(os.environ if env is None else env)
    frame = _innermost()
    if frame is None:
        return out
    out[PIPETRACK_RUN_ID] = frame.run_id
    span = frame.span()
    if span is not None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        context = trace.set_span_in_context(span)
        TraceContextTextMapPropagator().inject(carrier, context)
        if "traceparent" in carrier:
            out[TRACEPARENT] = carrier["traceparent"]
            out.pop(TRACESTATE, None)
            if carrier.get("tracestate"):
                out[TRACESTATE] = carrier["tracestate"]
    return out
