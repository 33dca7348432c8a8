"""Fault and load tests with real processes and a real PostgreSQL (marker `fault`: minutes long).

Each test prints what it measured (run pytest with -s to see it); the assertions are the
guarantees, not timings, except where the issue states a bound (the spool drains within 5 s of
the database's return; a lost run is reaped within two thresholds).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.tracker_support import replay_spool, spool_files
from tracker._db import embedded, migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker._ops.reaper import reap_once

pytestmark = pytest.mark.fault

SCRIPTS = Path(__file__).parent / "scripts"
STEADY_RUN = SCRIPTS / "ops_steady_run.py"


def wait_for(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class StoppableDatabase:
    """An embedded server of this test's own, which the test may stop and start again."""

    pgdata: Path
    dsn: str

    def stop(self) -> None:
        assert embedded.stop(self.pgdata)

    def start(self) -> None:
        embedded.ensure_running(self.pgdata)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return connect(DatabaseTarget(conninfo=self.dsn, source="test"))


@pytest.fixture
def stoppable_db() -> Iterator[StoppableDatabase]:
    folder = Path(tempfile.mkdtemp(prefix="pipetrack-fault-pg-"))
    pgdata = folder / "postgres"
    try:
        dsn = embedded.ensure_running(pgdata)
        database = StoppableDatabase(pgdata, dsn)
        with database.connect() as conn:
            migrate.upgrade(conn)
        yield database
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(folder, ignore_errors=True)


def child_env(dsn: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PIPETRACK_DSN": dsn,
        "PIPETRACK_DATA_DIR": str(data_dir),
        "PIPETRACK_STRICT": "0",  # production behaviour: tracking problems never raise
        "PIPETRACK_HEARTBEAT_INTERVAL": "1",
        **extra,
    }


def start_steady(
    task: str, subtasks: int, step: float, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(STEADY_RUN), task, str(subtasks), str(step)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def await_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def test_a_60_second_database_outage_in_the_middle_of_20_runs_loses_nothing(stoppable_db, tmp_path):
    runs, subtasks, step = 20, 8, 1.0  # about 80 s of work each
    env = child_env(stoppable_db.dsn, tmp_path)
    started = time.monotonic()
    children = [start_steady(f"DAILY_{i:02d}_outage", subtasks, step, env) for i in range(runs)]
    for child in children:
        await_ready(child)
    time.sleep(8)  # let every run write real progress before the outage
    stoppable_db.stop()
    outage_began = time.monotonic()
    time.sleep(60)
    stoppable_db.start()
    recovered = time.monotonic()
    spooled_during_outage = len(spool_files(tmp_path / "spool"))
    wait_for(lambda: not spool_files(tmp_path / "spool"), timeout=30, what="the spool to drain")
    drained_after = time.monotonic() - recovered
    outcomes = [finish(child, timeout=120) for child in children]
    wall = time.monotonic() - started

    assert [code for code, _ in outcomes] == [0] * runs, [err for _, err in outcomes]
    with stoppable_db.connect() as conn:
        rows = conn.execute(
            "SELECT execution_status, overall_percent_complete, current_subtask,"
            " (SELECT count(*) FROM pipeline_subtask st WHERE st.run_id = s.run_id"
            "  AND st.subtask_status = 'COMPLETED' AND st.items_complete = 10)"
            " FROM pipeline_status s ORDER BY task_name"
        ).fetchall()
    assert len(rows) == runs
    assert all(row == ("FINISHED", 100, subtasks, subtasks) for row in rows), rows
    assert not spool_files(tmp_path / "spool")
    print(
        f"\noutage {recovered - outage_began:.0f} s; {spooled_during_outage} spool files at "
        f"recovery; drained {drained_after:.1f} s after recovery; {runs}/{runs} runs exact; "
        f"wall {wall:.0f} s for {subtasks * 10 * step:.0f} s of work"
    )
    assert drained_after <= 5.0


def test_kill_9_is_reaped_within_two_thresholds_and_the_row_says_why(db_dsn, db, tmp_path):
    heartbeat, threshold = 1.0, timedelta(seconds=3)
    env = child_env(db_dsn, tmp_path, PIPETRACK_HEARTBEAT_INTERVAL=str(heartbeat))
    child = start_steady("DAILY_01_killed", 5, 1.0, env)
    await_ready(child)
    wait_for(
        lambda: db.execute("SELECT count(*) FROM pipeline_status").fetchone() == (1,),
        timeout=10,
        what="the run's row",
    )
    child.kill()
    killed = time.monotonic()
    child.communicate(timeout=10)
    reaped = wait_for(
        lambda: reap_once(db, stale_after=threshold), timeout=30, interval=0.25, what="reaping"
    )
    took = time.monotonic() - killed
    status, reason = db.execute(
        "SELECT execution_status, error_message FROM pipeline_status"
    ).fetchone()
    print(f"\nkill -9 reaped {took:.1f} s later (threshold {threshold.total_seconds():.0f} s)")
    assert len(reaped) == 1
    assert status == "FAILED"
    assert reason.startswith("lost: no heartbeat for")
    assert f"process {child.pid} on {os.uname().nodename} is gone" in reason
    assert took <= 2 * threshold.total_seconds()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_cancel_the_run_every_time(db_dsn, db, tmp_path, signum):
    times, batch = 50, 10
    env = child_env(db_dsn, tmp_path)
    codes = []
    for first in range(0, times, batch):
        children = [start_steady(f"DAILY_sig_{first + i:02d}", 3, 0.5, env) for i in range(batch)]
        for child in children:
            await_ready(child)
            child.send_signal(signum)
        codes.extend(finish(child, timeout=60)[0] for child in children)
    # The process ends as it would have without pipetrack: killed by the signal it got.
    assert codes == [-signum] * times
    # A run whose last write missed the exit deadline (a busy machine) is in the spool, not lost.
    replay_spool(tmp_path, env)
    rows = db.execute(
        "SELECT execution_status, count(*), count(execution_end) FROM pipeline_status"
        " GROUP BY execution_status"
    ).fetchall()
    assert rows == [("CANCELLED", times, times)]


def test_200_processes_with_10k_updates_each_leave_200_exact_rows(db_dsn, db, tmp_path):
    processes, updates = 200, 10_000
    code = (
        "import tracker\n"
        "import sys\n"
        "with tracker.run(sys.argv[1], total_subtasks=1) as run:\n"
        f"    with run.subtask('load', items_total={updates}) as st:\n"
        f"        for _ in range({updates}):\n"
        "            st.advance()\n"
    )
    env = child_env(db_dsn, tmp_path)
    before = db.execute(
        "SELECT xact_commit, tup_inserted + tup_updated FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"DAILY_load_{i:03d}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    failures = [err for child in children if (err := finish(child, timeout=300))[0] != 0]
    wall = time.monotonic() - started
    assert failures == []
    # Whatever a process could not write (the server refused a connection under the crowd) is
    # in the spool; the next pipetrack process replays it, as this one does.
    spooled = replay_spool(tmp_path, env)
    db.execute("SELECT pg_stat_force_next_flush()") if db.info.server_version >= 150000 else None
    after = db.execute(
        "SELECT xact_commit, tup_inserted + tup_updated FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()
    rows = db.execute(
        "SELECT count(*) FILTER (WHERE execution_status = 'FINISHED'"
        " AND overall_percent_complete = 100),"
        " (SELECT count(*) FROM pipeline_subtask WHERE items_complete = %s"
        "  AND subtask_status = 'COMPLETED') FROM pipeline_status",
        (updates,),
    ).fetchone()
    assert rows == (processes, processes)
    print(
        f"\n{processes} processes x {updates} updates: {wall:.1f} s wall, {spooled} spooled;"
        f" database took "
        f"{after[0] - before[0]} transactions, {after[1] - before[1]} row writes "
        f"({(after[1] - before[1]) / wall:.0f} rows/s) for {processes * updates} progress calls"
    )


def test_a_full_disk_for_the_spool_never_fails_the_pipeline_and_the_loss_is_warned(tmp_path):
    # The database is unreachable (nothing listens on that port), so every snapshot goes to the
    # spool, whose writes fail once the file reaches 2 KiB: a full disk, as the process sees it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = child_env(
        f"host=127.0.0.1 port={closed_port} dbname=x", tmp_path, PIPETRACK_EXIT_TIMEOUT="2"
    )

    def disk_full() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, str(STEADY_RUN), "DAILY_full_disk", "3", "0.02"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=disk_full,  # noqa: PLW1509 - a resource limit for this child only
    )
    code, stderr = finish(child, timeout=60)
    print(f"\nfull-disk run finished in {time.monotonic() - started:.1f} s; stderr:\n{stderr}")
    assert code == 0
    assert "Traceback" not in stderr  # the writer thread survives a failing disk
    assert "spool" in stderr.lower()
    assert "cannot write to the spool" in stderr
    assert "lost" in stderr
