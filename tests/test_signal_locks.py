"""A signal never hangs a tracked process, whatever lock the main thread holds when it lands, and
a fork never hangs the child, whatever lock another thread held (issue 14): real processes that
signal themselves inside a lock the run's end needs, or fork while a thread holds the locks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.otlp_receiver import running_receiver
from tests.tracker_support import (
    child_env,
    fetch_run,
    fetch_subtasks,
    run_script,
    silent_port,
    spool_files,
)
from tracker._model.state import RunCore, SubtaskCore
from tracker._runtime import handoff
from tracker._runtime.handoff import handed_over

# The exit timeout the children use, and the bound on their whole life: the exit timeout, a
# moment for spooling, the observers' wait, and start-up on a busy machine.
EXIT_TIMEOUT = 5.0
LIFE_BOUND = EXIT_TIMEOUT + 25.0


@pytest.fixture
def env(db_dsn, tmp_path):
    return child_env(db_dsn, tmp_path / "data", PIPETRACK_EXIT_TIMEOUT=str(EXIT_TIMEOUT))


def signalled(
    env, mode: str, signum: signal.Signals
) -> tuple[str, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    try:
        result = run_script("signal_in_lock.py", env, mode, signum.name, timeout=LIFE_BOUND)
    except subprocess.TimeoutExpired as exc:  # run() has killed and reaped the child
        pytest.fail(f"{mode}/{signum.name}: still running after {LIFE_BOUND} s: {exc.stderr!r}")
    assert time.monotonic() - started < LIFE_BOUND
    first = result.stdout.splitlines()[0] if result.stdout else ""
    assert first.startswith("RUN "), result.stderr
    return first.split()[1], result


def assert_cancelled(db, run_id: str, signum: signal.Signals) -> None:
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "CANCELLED"
    assert row["execution_end"] is not None
    assert row["exit_code"] == 128 + signum
    assert row["error_message"] == f"{signum.name} received"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_inside_an_observers_lock_ends_the_process_by_the_signal(env, db, signum):
    run_id, result = signalled(env, "observer", signum)
    assert result.returncode == -signum, result.stderr
    assert_cancelled(db, run_id, signum)
    statuses = [s["subtask_status"] for s in fetch_subtasks(db, run_id)]
    assert statuses == ["COMPLETED", "FAILED"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_inside_the_runs_lock_is_written_to_the_database_not_only_spooled(
    env, db, tmp_path, signum
):
    run_id, result = signalled(env, "run_lock", signum)
    assert result.returncode == -signum, result.stderr
    assert_cancelled(db, run_id, signum)
    spool = tmp_path / "data" / "spool"
    assert not (spool.exists() and list(spool.glob("*.jsonl")))
    assert "did not take the final status" not in result.stderr
    # The observers were told too, from the signal thread, once the main thread lent the lock.
    assert "END CANCELLED" in result.stdout.splitlines()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_inside_the_telemetry_lock_ends_the_process_by_the_signal(env, db, signum):
    with running_receiver() as receiver:
        env = {
            **env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("http/protobuf"),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        }
        # Not lent (its holder calls OpenTelemetry): the run's spans wait for the main thread,
        # which takes the signal's action once the observers' bound is out.
        run_id, result = signalled(env, "spans", signum)
    assert result.returncode == -signum, result.stderr
    assert_cancelled(db, run_id, signum)


def test_lent_locks_come_back_with_their_counts():
    lock = threading.RLock()
    lock.acquire()
    lock.acquire()
    borrowed = []

    def borrow() -> None:
        if lock.acquire(timeout=5):
            borrowed.append(True)
            lock.release()

    with handed_over([lock, lock]) as lent:
        thread = threading.Thread(target=borrow)
        thread.start()
        thread.join(30)
    assert borrowed == [True]
    assert lent.restored
    lock.release()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_lent_lock_its_borrower_keeps_is_reported_not_waited_for(monkeypatch):
    monkeypatch.setattr(handoff, "RESTORE_TIMEOUT", 0.2)
    lock = threading.RLock()
    lock.acquire()
    borrowed, stop = threading.Event(), threading.Event()

    def keep() -> None:
        with lock:
            borrowed.set()
            stop.wait(30)

    thread = threading.Thread(target=keep)
    try:
        with handed_over([lock]) as lent:
            thread.start()
            assert borrowed.wait(10)
        assert not lent.restored
        assert not lock._is_owned()
    finally:
        stop.set()
        thread.join(30)


def test_the_scripts_own_handler_still_decides_the_exit_inside_an_observers_lock(env, db):
    run_id, result = signalled(env, "handler", signal.SIGTERM)
    assert result.returncode == 7, result.stderr
    assert "own handler ran" in result.stdout
    assert_cancelled(db, run_id, signal.SIGTERM)


def test_a_child_forked_while_a_thread_holds_the_trackers_locks_tracks_its_own_run(env, db):
    result = run_script("fork_in_lock.py", env, "20", timeout=LIFE_BOUND + 20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "PARENT 0" in lines, result.stdout + result.stderr
    (child,) = [line.split()[1] for line in lines if line.startswith("CHILD ")]
    row = fetch_run(db, child)
    assert row["execution_status"] == "FINISHED"
    assert [s["subtask_status"] for s in fetch_subtasks(db, child)] == ["COMPLETED"]


@pytest.mark.parametrize("frozen_after", ["ended", "status"])
def test_a_run_ended_while_a_close_was_half_done_writes_the_subtasks_final_row(frozen_after):
    # What the signal worker finds when the main thread is frozen inside RunCore.close().
    run = RunCore(
        run_id="00000000-0000-0000-0000-000000000001",
        task_name="DAILY_half_closed",
        task_stage="DAILY",
        total_subtasks=None,
        context={},
        max_pending=100,
    )
    sub = run.enter(SubtaskCore, "loading", None)
    run.snapshot()  # its RUNNING row is out
    sub.ended = 1.0
    if frozen_after == "status":
        sub.status = "COMPLETED"
    run.end("CANCELLED")
    assert sub not in run.open
    assert sub.status == ("COMPLETED" if frozen_after == "status" else "FAILED")
    rows = run.snapshot().subtask_rows
    assert [(r["subtask_index"], r["subtask_status"]) for r in rows] == [(1, sub.status)]


STARVED_WORKER = """
import signal, sys, time
import tracker
import tracker._runtime.lifecycle as lifecycle

recorded = lifecycle._record_signal

def starved(signum):
    lifecycle._step("starved on purpose", time.monotonic())
    time.sleep(5)
    return recorded(signum)

lifecycle._record_signal = starved  # before the first run installs the hooks
lifecycle.SPOOL_MARGIN = 0.5
with tracker.run("DAILY_starved_worker") as run:
    print("RUN", run.run_id, flush=True)
    run.flush(10)
    signal.raise_signal(signal.SIGTERM)
    time.sleep(30)
"""


def test_a_final_state_the_worker_could_not_record_in_time_is_said_on_stderr(env, db):
    # The handler's wait is bounded (a pipeline must never hang because it is tracked): when
    # the worker cannot record in time, the process still ends by its signal, and says why.
    result = subprocess.run(
        [sys.executable, "-c", STARVED_WORKER],
        env={**env, "PIPETRACK_EXIT_TIMEOUT": "0.5"},
        capture_output=True,
        text=True,
        timeout=LIFE_BOUND,
        check=False,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    run_id = result.stdout.split()[1]
    assert "the final state was neither written nor spooled within 1.0 s" in result.stderr
    assert "(the signal worker was starved on purpose" in result.stderr
    # Every thread's stack follows: the worker's shows where it waited.
    assert "in starved" in result.stderr, result.stderr
    row = fetch_run(db, run_id)  # not ended: the reaper's to mark lost
    assert (row["execution_status"], row["execution_end"]) == ("STARTED", None)


SPOOLED_AT_THE_END = """
import os, signal, sys, time
import tracker

synced = os.fsync

def told(fd):
    os.write(2, b"FSYNC\\n")  # said before the sync: the process may die right after
    synced(fd)

os.fsync = told
with tracker.run("DAILY_spooled_at_the_end") as run:
    print("RUN", run.run_id, flush=True)
    if sys.argv[1] == "signal":
        signal.raise_signal(signal.SIGTERM)
        time.sleep(30)
"""


def spooled_status(spool: Path, run_id: str) -> str:
    """The status in ``run_id``'s last snapshot in the spool files."""
    statuses = [
        record["run"]["execution_status"]
        for path in spool_files(spool)
        for line in path.read_text("utf-8").splitlines()[1:]  # after the header
        if (record := json.loads(line))["run"]["run_id"] == run_id
    ]
    assert statuses, f"run {run_id} is not in the spool"
    return str(statuses[-1])


@pytest.mark.parametrize(
    ("how", "status", "durable"),
    [("signal", "CANCELLED", False), ("exit", "FINISHED", True)],
)
def test_a_final_state_spooled_on_a_signal_is_not_synced_to_disk(tmp_path, how, status, durable):
    # A database that never answers: the final state is spooled once the exit timeout is out.
    # On a signal the handler's wait is bounded, and an fsync on a disk busy with others' writes
    # can outlast it (the stress test lost final states so): the kernel keeps the file once the
    # process is gone, which is all a stopped process needs. A normal exit still syncs it.
    with silent_port() as port:
        env = child_env(
            f"host=127.0.0.1 port={port} connect_timeout=20",
            tmp_path / "data",
            PIPETRACK_EXIT_TIMEOUT="0.5",
        )
        result = subprocess.run(
            [sys.executable, "-c", SPOOLED_AT_THE_END, how],
            env=env,
            capture_output=True,
            text=True,
            timeout=LIFE_BOUND,
            check=False,
        )
    assert result.returncode == (-signal.SIGTERM if how == "signal" else 0), result.stderr
    assert "neither written nor spooled" not in result.stderr
    run_id = result.stdout.split()[1]
    assert spooled_status(tmp_path / "data" / "spool", run_id) == status
    assert ("FSYNC" in result.stderr.splitlines()) is durable, result.stderr
