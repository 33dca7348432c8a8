"""The tracker and telemetry together: the canonical row carries the trace id, the spans follow
the runs the tracker records, and a parent's child processes join its trace."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.telemetry_support import (
    PROTOCOLS,
    black_hole_server,
    by_name,
    flush_and_collect,
    pointed_receiver,
    slow_collector_env,
)
from tracker._runtime.trackers import Tracker
from tracker._telemetry import _config

STATUS_ERROR = 2


@pytest.fixture
def otlp(monkeypatch):
    with pointed_receiver(monkeypatch, "grpc") as receiver:
        yield receiver


@pytest.fixture
def tracked(db_dsn):
    t = Tracker(dsn=db_dsn, lifecycle=False)
    yield t
    t.shutdown(10)


def row(db, run_id):
    return db.execute(
        "SELECT execution_status, trace_id, parent_run_id::text, error_message"
        " FROM pipeline_status WHERE run_id = %s",
        (run_id,),
    ).fetchone()


def test_a_failing_run_stores_its_trace_id_and_its_spans_record_the_exception(otlp, tracked, db):
    started = []

    def pipeline():
        with tracked.run("DAILY_LOAD", total_subtasks=2) as run:
            started.append(run)
            with run.subtask("extract", items_total=3) as step:
                step.advance()
                run.message("extracting")
            with run.subtask("transform"):
                raise KeyError("missing column")

    with pytest.raises(KeyError):
        pipeline()
    (run,) = started
    assert tracked.flush(10)

    status, trace_id, _, error_message = row(db, run.run_id)
    assert status == "FAILED"
    assert "missing column" in error_message
    spans = by_name(flush_and_collect(otlp, 3))
    assert trace_id == spans["DAILY_LOAD"].trace_id == run.trace_id
    assert spans["extract"].parent_span_id == spans["DAILY_LOAD"].span_id
    assert spans["extract"].attributes["pipetrack.items.complete"] == 1
    assert [e[2]["message"] for e in spans["extract"].events] == ["extracting"]
    for name in ("transform", "DAILY_LOAD"):
        assert spans[name].status_code == STATUS_ERROR
        assert spans[name].attributes["error.type"] == "KeyError"
        assert any(e[0] == "exception" for e in spans[name].events)
    assert spans["DAILY_LOAD"].attributes["cicd.pipeline.run.id"] == run.run_id


def test_with_telemetry_off_the_row_has_no_trace_id(tracked, db):
    with tracked.run("STATIC_X") as run, run.subtask("only"):
        pass
    assert tracked.flush(10)
    assert row(db, run.run_id)[:2] == ("FINISHED", None)
    assert _config.current() is None


CHILD = """
import sys
import tracker
t = tracker.Tracker(lifecycle=False)
with t.run(sys.argv[1]) as run:
    with run.subtask("child work"):
        pass
t.shutdown(10)
print(run.run_id)
"""


def test_a_parent_and_two_child_processes_make_one_trace(otlp, tracked, db, db_dsn):
    from tracker._telemetry import child_env

    children = []
    with tracked.run("DAILY_PARENT") as run:
        for i in (1, 2):
            with run.subtask(f"launch {i}"):
                env = child_env()
                env["PIPETRACK_DSN"] = db_dsn
                result = subprocess.run(
                    [sys.executable, "-c", textwrap.dedent(CHILD), f"DAILY_CHILD_{i}"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert result.returncode == 0, result.stderr
                children.append(result.stdout.strip())
    assert tracked.flush(10)

    spans = flush_and_collect(otlp, 7)
    assert len({s.trace_id for s in spans}) == 1
    named = {s.name: s for s in spans}
    assert named["DAILY_PARENT"].parent_span_id == ""
    for i, child_run_id in zip((1, 2), children, strict=True):
        child_root = named[f"DAILY_CHILD_{i}"]
        assert child_root.parent_span_id == named[f"launch {i}"].span_id
        assert child_root.resource["process.pid"] != named["DAILY_PARENT"].resource["process.pid"]
        assert child_root.attributes["pipetrack.parent_run_id"] == run.run_id
        status, trace_id, parent_run_id, _ = row(db, child_run_id)
        assert status == "FINISHED"
        assert parent_run_id == run.run_id
        assert trace_id == run.trace_id
    child_steps = [s for s in spans if s.name == "child work"]
    assert len(child_steps) == 2
    assert {s.parent_span_id for s in child_steps} == {
        named["DAILY_CHILD_1"].span_id,
        named["DAILY_CHILD_2"].span_id,
    }
    assert os.environ.get("TRACEPARENT") is None


def wait_until_blocked_in_read(pid: int) -> None:
    """Until the child's main thread sits in read(2) on stdin.

    CPython runs a Python signal handler between bytecodes: a SIGTERM that lands after the
    child's last check but before it enters read() waits until read() returns, which here is
    never. Signalling once the child is inside read() makes the EINTR path deterministic."""
    read_number = {"x86_64": "0", "aarch64": "63"}[platform.machine()]  # __NR_read
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as syscall:
            if syscall.read().split(" ", 1)[0] == read_number:
                return
        time.sleep(0.01)
    raise AssertionError("the child never blocked in read()")


SIGTERMED = """
import sys
import tracker
with tracker.run("DAILY_LONG") as run:
    with run.subtask("waiting"):
        print(run.run_id, flush=True)
        sys.stdin.read()  # until the test sends SIGTERM
"""


def test_a_run_killed_by_sigterm_still_delivers_its_cancelled_spans(otlp, db, db_dsn):
    env = dict(os.environ, PIPETRACK_DSN=db_dsn)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGTERMED)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = child.stdout.readline().strip()
        wait_until_blocked_in_read(child.pid)
        child.terminate()
        child.wait(30)
    finally:
        child.stdin.close()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGTERM  # died of the signal: no atexit ran

    assert otlp.collected.wait_for(lambda: len(otlp.collected.spans()) >= 2)
    spans = by_name(otlp.collected.spans())
    root = spans["DAILY_LONG"]
    assert root.attributes["cicd.pipeline.result"] == "cancellation"
    assert root.status_message == "cancelled: SIGTERM received"
    assert spans["waiting"].attributes["cicd.pipeline.task.run.result"] == "cancellation"
    status, trace_id, _, _ = row(db, run_id)
    assert status == "CANCELLED"
    assert trace_id == root.trace_id


@pytest.fixture
def black_hole():
    with black_hole_server() as port:
        yield port


STEADY = """
import tracker
with tracker.run("DAILY_STEADY", total_subtasks=20) as run:
    for i in range(20):
        with run.subtask(f"part {i}", items_total=5) as step:
            for _ in range(5):
                step.advance()
            run.message(f"part {i} done")
print(run.run_id)
"""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_silent_collector_leaves_the_pipeline_on_time_and_its_row_complete(
    black_hole, db, db_dsn, protocol
):
    env = dict(os.environ, PIPETRACK_DSN=db_dsn, **slow_collector_env(black_hole, protocol))
    # The timeout is the assertion: exporting waits at most the 1 s exit timeout, never the
    # exporter's own 60 s.
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STEADY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    run_id = result.stdout.strip()
    status, trace_id, _, error = row(db, run_id)
    assert (status, error) == ("FINISHED", None)
    assert len(trace_id) == 32
    overall, total = db.execute(
        "SELECT overall_percent_complete, total_subtasks FROM pipeline_status WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert (overall, total) == (100, 20)
    statuses = db.execute(
        "SELECT subtask_status, items_complete FROM pipeline_subtask WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    assert statuses == [("COMPLETED", 5)] * 20


UNCAUGHT = """
import tracker
run = tracker.run("DAILY_UNCAUGHT")
print(run.run_id, flush=True)
run.subtask("parsing")
raise RuntimeError("kaput")
"""


def test_an_uncaught_exception_fails_the_run_and_its_spans_still_leave_at_exit(otlp, db, db_dsn):
    # The exception object is gone by the time sys.excepthook reports it; the spans carry its
    # type and traceback from the text the tracker recorded, and pipetrack's exit flush runs
    # after the tracker's exit hook has ended the run.
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(UNCAUGHT)],
        env=dict(os.environ, PIPETRACK_DSN=db_dsn),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "RuntimeError: kaput" in result.stderr
    run_id = result.stdout.strip()

    assert otlp.collected.wait_for(lambda: len(otlp.collected.spans()) >= 2)
    spans = by_name(otlp.collected.spans())
    root = spans["DAILY_UNCAUGHT"]
    assert root.status_code == STATUS_ERROR
    assert root.attributes["error.type"] == "RuntimeError"
    (exception,) = [e[2] for e in root.events if e[0] == "exception"]
    assert exception["exception.type"] == "RuntimeError"
    assert exception["exception.stacktrace"].startswith("Traceback (most recent call last)")
    assert "line 6" in exception["exception.stacktrace"]
    assert spans["parsing"].attributes["cicd.pipeline.task.run.result"] == "failure"
    status, trace_id, _, error_message = row(db, run_id)
    assert (status, error_message) == ("FAILED", "RuntimeError: kaput")
    assert trace_id == root.trace_id


QUIET = """
import sys
import tracker
with tracker.run("DAILY_QUIET", total_subtasks=3) as run:
    for i in range(3):
        with run.subtask(f"part {i}", items_total=2) as step:
            step.advance(2)
            run.message(f"part {i}")
assert tracker.flush(30)
print(run.run_id)
print(sorted({m.split(".")[0] for m in sys.modules if m.startswith(("opentelemetry", "grpc"))}))
"""


def test_a_tracked_pipeline_with_nothing_configured_loads_no_telemetry(db, db_dsn):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(QUIET)],
        env=dict(env, PIPETRACK_DSN=db_dsn),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    run_id, modules = result.stdout.split()
    assert modules == "[]"
    assert row(db, run_id)[:2] == ("FINISHED", None)


def test_a_command_wrapped_by_pipetrack_run_joins_the_wrapper_trace(otlp, db, db_dsn):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracker",
            "run",
            "--task",
            "DAILY_WRAPPER",
            "--",
            sys.executable,
            "-c",
            textwrap.dedent(CHILD),
            "DAILY_WRAPPED",
        ],
        env=dict(os.environ, PIPETRACK_DSN=db_dsn),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    child_run_id = result.stdout.strip()

    assert otlp.collected.wait_for(lambda: len(otlp.collected.spans()) >= 3)
    spans = by_name(otlp.collected.spans())
    wrapper, wrapped = spans["DAILY_WRAPPER"], spans["DAILY_WRAPPED"]
    assert wrapped.trace_id == wrapper.trace_id
    assert wrapped.parent_span_id == wrapper.span_id
    status, trace_id, parent_run_id, _ = row(db, child_run_id)
    assert status == "FINISHED"
    assert trace_id == wrapper.trace_id
    assert parent_run_id == wrapper.attributes["cicd.pipeline.run.id"]


def test_a_run_nested_in_this_process_is_a_child_span_of_the_outer_subtask(otlp, tracked, db):
    with (
        tracked.run("DAILY_OUTER") as outer,
        outer.subtask("call inner"),
        tracked.run("DAILY_INNER") as inner,
        inner.subtask("inner step"),
    ):
        pass
    assert tracked.flush(10)

    spans = by_name(flush_and_collect(otlp, 4))
    assert spans["DAILY_INNER"].parent_span_id == spans["call inner"].span_id
    assert spans["inner step"].parent_span_id == spans["DAILY_INNER"].span_id
    assert len({s.trace_id for s in spans.values()}) == 1
    _, trace_id, parent_run_id, _ = row(db, inner.run_id)
    assert (trace_id, parent_run_id) == (outer.trace_id, outer.run_id)


def test_subtasks_nest_as_the_tracker_nests_them_per_thread(otlp, tracked):
    import threading

    def worker(run, ready, go):
        with run.subtask("worker step"):
            ready.set()
            go.wait(30)
            run.message("from the worker")

    with tracked.run("DAILY_THREADS") as run, run.subtask("outer"):
        ready, go = threading.Event(), threading.Event()
        thread = threading.Thread(target=worker, args=(run, ready, go))
        thread.start()
        assert ready.wait(30)
        with run.subtask("inner"):
            run.message("from the main thread")
            go.set()
            thread.join(30)

    spans = by_name(flush_and_collect(otlp, 4))
    root = spans["DAILY_THREADS"]
    # As the tracker records it (parent_index): a worker thread's first subtask belongs to the
    # run's own thread's innermost one; "inner" does not swallow the worker's step or message.
    assert spans["worker step"].parent_span_id == spans["outer"].span_id
    assert spans["outer"].parent_span_id == root.span_id
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert [e[2]["message"] for e in spans["inner"].events] == ["from the main thread"]
    assert [e[2]["message"] for e in spans["worker step"].events] == ["from the worker"]
