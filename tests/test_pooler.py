"""The writer behind Debian's PgBouncer in transaction mode, and its idle connections.

Through the pooler every transaction may land on another server connection: the writer keeps
nothing in the session (no startup options, settings per transaction, schema-qualified
statements), and its prepared statements are off (``PIPETRACK_PREPARE=off``) or turned off by
the writer itself the first time the pooler loses one. Server connections stay bounded by the
pool, not by the number of tracked processes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest

from tests.tracker_support import SCRIPTS, child_env, make_tracker, spool_files, wait_for

STEADY = SCRIPTS / "ops_steady_run.py"
# SHOW POOLS columns that count server connections (PgBouncer 1.18).
SERVER_STATES = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")


def _runs(dsn: str, prefix: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            task: (status, overall, done)
            for task, status, overall, done in conn.execute(
                "SELECT p.task_name, p.execution_status, p.overall_percent_complete,"
                " (SELECT count(*) FROM pipetrack.pipeline_subtask AS s"
                "  WHERE s.run_id = p.run_id AND s.subtask_status = 'COMPLETED'"
                "  AND s.items_complete = 10)"
                " FROM pipetrack.pipeline_status AS p WHERE p.task_name LIKE %s",
                (prefix + "%",),
            ).fetchall()
        }


def _pooled_servers(pool: dict[str, Any] | None) -> int:
    """The server connections PgBouncer holds for a pool (SHOW POOLS), whatever their state."""
    if pool is None:
        return 0
    return sum(int(pool[state]) for state in SERVER_STATES)


def _server_connections(dsn: str, database: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_tracked_run_is_written_exactly_through_the_pooler(pgbouncer, pg15_db, tmp_path):
    bouncer = pgbouncer()
    t = make_tracker(bouncer.dsn(pg15_db.name), tmp_path / "spool", prepare=False)
    try:
        with t.run("DAILY_pooled", total_subtasks=2) as run:
            for name in ("first", "second"):
                with run.subtask(name, items_total=10) as st:
                    for _ in range(10):
                        st.advance()
                        assert t.flush(10)
        assert t.flush(30)
    finally:
        t.shutdown(10)
    assert _runs(pg15_db.dsn, "DAILY_pooled") == {"DAILY_pooled": ("FINISHED", 100, 2)}
    assert t.writer.spooled == t.writer.rejected == 0
    assert not spool_files(tmp_path / "spool")


def test_prepared_statements_the_pooler_loses_are_turned_off_not_dropped(
    pgbouncer, pg15_db, tmp_path, caplog
):
    # One server connection for two writers: each finds the other's prepared statements (or
    # misses its own), as PgBouncer 1.18 in transaction mode makes them.
    bouncer = pgbouncer(default_pool_size=1)
    caplog.set_level(logging.WARNING, logger="tracker")
    trackers = [
        make_tracker(bouncer.dsn(pg15_db.name), tmp_path / f"spool{i}", prepare=True)
        for i in range(2)
    ]
    try:
        runs = [t.run(f"DAILY_shared_{i}", total_subtasks=1) for i, t in enumerate(trackers)]
        subtasks = [run.subtask("work", items_total=10) for run in runs]
        for _ in range(10):
            for t, st in zip(trackers, subtasks, strict=True):
                st.advance()
                assert t.flush(10)
        for st, run in zip(subtasks, runs, strict=True):
            st.close()
            run.finish()
        for t in trackers:
            assert t.flush(30)
    finally:
        for t in trackers:
            t.shutdown(10)
    assert _runs(pg15_db.dsn, "DAILY_shared_") == {
        "DAILY_shared_0": ("FINISHED", 100, 1),
        "DAILY_shared_1": ("FINISHED", 100, 1),
    }
    assert all(t.writer.rejected == t.writer.spooled == 0 for t in trackers)
    assert "writing without them from now on" in caplog.text


def test_a_pgbouncer_restart_mid_run_loses_no_status(pgbouncer, pg15_db, tmp_path):
    bouncer = pgbouncer()
    env = child_env(
        bouncer.dsn(pg15_db.name, connect_timeout="2"),
        tmp_path / "data",
        PIPETRACK_PREPARE="off",
        PIPETRACK_EXIT_TIMEOUT="10",
    )
    children = [
        subprocess.Popen(
            [sys.executable, str(STEADY), f"DAILY_restart_{i}", "3", "0.1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        bouncer.restart()
        for child in children:
            assert child.wait(timeout=120) == 0, child.stderr.read() if child.stderr else ""
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=60)
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
    # What the restart made the writers spool reaches the database once it answers again
    # (the next writer to connect replays it; here, a replay of the folder).
    subprocess.run(
        [sys.executable, "-m", "tracker", "spool", "replay"],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    expected = {f"DAILY_restart_{i}": ("FINISHED", 100, 3) for i in range(4)}
    wait_for(lambda: _runs(pg15_db.dsn, "DAILY_restart_") == expected, what="rows exact")
    assert not spool_files(tmp_path / "data" / "spool")


@pytest.mark.fault
def test_300_processes_through_a_pool_of_10_write_every_row_on_bounded_connections(
    pgbouncer, pg15_db, tmp_path
):
    bouncer = pgbouncer(default_pool_size=10)
    env = child_env(bouncer.dsn(pg15_db.name), tmp_path / "data", PIPETRACK_PREPARE="off")
    prefix = f"DAILY_fleet_{uuid.uuid4().hex[:6]}_"
    count = int(os.environ.get("PIPETRACK_POOLER_PROCESSES", "300"))
    children: list[subprocess.Popen[bytes]] = []
    most_servers = most_pooled = 0

    def look() -> None:
        nonlocal most_servers, most_pooled
        most_servers = max(most_servers, _server_connections(pg15_db.dsn, pg15_db.name))
        most_pooled = max(most_pooled, _pooled_servers(bouncer.pool(pg15_db.name)))

    try:
        # Started over the first ~15 s, each living ~6 s or more: hundreds at once.
        for index in range(count):
            children.append(
                subprocess.Popen(
                    [sys.executable, str(STEADY), f"{prefix}{index:03d}", "3", "0.2"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
            if index % 20 == 0:
                look()
        deadline = time.monotonic() + 600
        while any(child.poll() is None for child in children):
            assert time.monotonic() < deadline, "tracked processes still running after 10 min"
            look()
            time.sleep(0.5)
        failed = [child.stderr.read() for child in children if child.returncode != 0]
        assert not failed, failed[:3]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=60)
            if child.stderr is not None:
                child.stderr.close()
    rows = _runs(pg15_db.dsn, prefix)
    assert len(rows) == count
    assert set(rows.values()) == {("FINISHED", 100, 3)}
    assert most_pooled <= 10  # the pool, whatever the number of scripts
    # The server's own count: the pool, and a connection the pooler closed (and replaced)
    # while its backend is still exiting (11 once, on a busy machine): never one per script.
    assert most_servers <= 2 * 10
    assert not spool_files(tmp_path / "data" / "spool")


def test_a_silent_script_holds_no_connection_and_still_writes_its_end(db_dsn, db, tmp_path):
    name = f"pipetrack-idle-{uuid.uuid4().hex[:8]}"
    env = {**child_env(db_dsn, tmp_path / "data"), "PGAPPNAME": name}
    env.update(PIPETRACK_IDLE_CLOSE="1", PIPETRACK_HEARTBEAT_INTERVAL="3600")
    code = (
        "import sys, time, tracker\n"
        "with tracker.run('DAILY_silent', total_subtasks=1) as run:\n"
        "    with run.subtask('wait') as st:\n"
        "        print('started', flush=True)\n"
        "        sys.stdin.readline()\n"
        "        st.update(message='woke up')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def held() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        return int(row[0])

    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == "started\n"
        wait_for(lambda: held() == 1, what="the writer's connection")
        wait_for(lambda: held() == 0, what="the idle connection closed")
        for _ in range(10):  # silent: nothing opens one again
            assert held() == 0
            time.sleep(0.2)
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.wait(timeout=60) == 0, child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=60)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    row = db.execute(
        "SELECT execution_status, subtask_progress_message FROM pipeline_status"
        " WHERE task_name = 'DAILY_silent'"
    ).fetchone()
    assert row == ("FINISHED", "woke up")


def test_heartbeats_of_an_idle_writer_reconnect_and_leave_again(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool", heartbeat_interval=0.5, idle_close=0.2)
    try:
        run = t.run("DAILY_heartbeats")
        assert t.flush(10)
        first = db.execute(
            "SELECT last_update FROM pipeline_status WHERE run_id = %s", (run.run_id,)
        ).fetchone()[0]

        def beat_landed() -> bool:
            row = db.execute(
                "SELECT last_update FROM pipeline_status WHERE run_id = %s", (run.run_id,)
            ).fetchone()
            return bool(row[0] > first)

        wait_for(beat_landed, what="a heartbeat after the connection went idle")
        wait_for(lambda: not t.writer.delivery.connected, what="the connection let go again")
        run.finish()
        assert t.flush(10)
    finally:
        t.shutdown(5)
