"""A signal handler that raises (Python's own KeyboardInterrupt for SIGINT, a script's
``sys.exit``) runs wherever CPython checks for signals: at a function's start, after a call
returns, at a loop's jump back. Raised at each such point of a tracking call in turn, it leaves
none of the tracker's locks held, so the pipeline's unwinding, its exit hooks and the writer
thread still get them (issue 14). One left held stopped the writer: the exit then waited out
its whole timeout and spooled a final state the database already had.
"""

from __future__ import annotations

import dis
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracker
from tests.tracker_support import default_tracker_on
from tracker._sampling import SharedSampler
from tracker._telemetry._spans import RunSpans

# Where CPython 3.11-3.13 runs pending signal handlers: after these instructions (a call
# returned, a loop jumped back) and at a function's start (RESUME).
CHECKED_AFTER = frozenset({"CALL", "CALL_FUNCTION_EX", "CALL_KW", "JUMP_BACKWARD"})
CHECKED_AT = frozenset({"RESUME"})


class Interrupted(BaseException):
    """What the handler raises (as KeyboardInterrupt or SystemExit would)."""


@functools.cache
def _exception_table(code: CodeType) -> list[Any]:
    return list(dis.Bytecode(code).exception_entries)


def _handler_at(code: CodeType, offset: int) -> int | None:
    """The exception handler covering ``offset`` in ``code`` (None: none)."""
    for entry in _exception_table(code):
        if entry.start <= offset < entry.end:
            return int(entry.target)
    return None


@contextmanager
def interrupted_at(point: int, within: str = "") -> Iterator[list[str]]:
    """Raise Interrupted at the ``point``-th signal check of the body on this thread (counting
    from 1), of code in files whose path ends with ``within``; yields a list that names where,
    once it has been raised.

    A handler run after a call returns raises at that call, its effect done; a trace function
    can raise only before the next instruction, so that stands in for it where the same
    exception handler covers both (a ``with`` block's end is not such a place: its exit
    sequence follows the block's last call, outside the block)."""
    seen = 0
    last: dict[int, tuple[str, int]] = {}
    where: list[str] = []

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal seen
        frame.f_trace_opcodes = True
        if event != "opcode":
            return trace
        code, offset = frame.f_code, frame.f_lasti
        if not code.co_filename.endswith(within):
            return trace
        name = dis.opname[code.co_code[offset]]
        before = last.get(id(frame))
        last[id(frame)] = (name, offset)
        checked = name in CHECKED_AT or (
            before is not None
            and before[0] in CHECKED_AFTER
            and _handler_at(code, before[1]) == _handler_at(code, offset)
        )
        if checked:
            seen += 1
            if seen == point:
                where.append(f"{code.co_filename}:{frame.f_lineno} {code.co_name}")
                raise Interrupted
        return trace

    sys.settrace(trace)
    try:
        yield where
    finally:
        sys.settrace(None)


def held_locks(instance: tracker.Tracker) -> list[object]:
    return [lock for lock in instance._signal_locks() if lock._is_owned()]  # type: ignore[attr-defined]


def test_an_interrupt_at_any_signal_check_of_the_writers_wake_leaves_its_lock_free(
    db_dsn: str, tmp_path: Path
) -> None:
    # wake() is what the main thread calls at every subtask boundary and message: the writer's
    # condition lock is the one lock a script's own code path takes that the writer needs.
    with default_tracker_on(db_dsn, tmp_path / "spool") as instance:
        run = instance.run("DAILY_signal_points")
        point = 0
        while True:
            point += 1
            with interrupted_at(point) as where, suppress(Interrupted):
                instance.writer.wake()
            assert held_locks(instance) == [], f"held after an interrupt at {where}"
            if not where:
                break
        assert point > 1  # interrupted somewhere at least once
        # The writer was never stopped: the run's end is written.
        assert run.finish()
        assert run.flush(30.0)


def test_an_interrupt_at_any_signal_check_of_a_sample_on_the_main_thread_leaves_its_lock_free():
    # The writer's samples wait for this lock (bounded) and a run's end waits for them: one
    # left held made each later sample wait out its bound, and the exit its timeout.
    shared = SharedSampler()  # no sampler attached: the lock is taken all the same
    point = 0
    while True:
        point += 1
        with interrupted_at(point) as where, suppress(Interrupted):
            shared.sample(timeout=0.1)
        assert not shared._lock.locked(), f"held after an interrupt at {where}"
        if not where:
            break
    assert point > 1


@pytest.mark.parametrize("call", ["start", "end"])
def test_an_interrupt_at_any_signal_check_of_a_subtask_span_leaves_the_run_able_to_end(call):
    # SIGINT inside a subtask's start or end (its KeyboardInterrupt unwinds the script) while
    # the signal worker ends the run's spans: the run span and every subtask span the run
    # holds still end. A subtask half-registered (in one of two lists) made the run's end
    # raise KeyError, and its span was lost.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test_signal_points")
    point = 0
    while True:
        point += 1
        exporter.clear()
        spans = RunSpans(tracer, run_id=f"run-{point}", task_name="T", stage="DAILY")
        spans.subtask_started(1, "outer")
        if call == "end":
            spans.subtask_started(2, "inner", parent_index=1)
        here = "tracker/_telemetry/_spans.py"
        with interrupted_at(point, within=here) as where, suppress(Interrupted):
            if call == "start":
                spans.subtask_started(2, "inner", parent_index=1)
            else:
                spans.subtask_ended(2, "COMPLETED")
        spans.message("after the interrupt", index=2)
        spans.run_ended("CANCELLED", message="SIGINT received")
        ended = [span.name for span in exporter.get_finished_spans()]
        assert {"T", "outer"} <= set(ended), f"interrupted at {where}: {ended}"
        assert sorted(ended) == sorted(set(ended)), f"a span ended twice: {ended}"
        assert not spans._subtasks, f"interrupted at {where}: a subtask span left open"
        if not where:
            break
    assert point > 1
    provider.shutdown()
