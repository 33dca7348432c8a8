"""The exporter's reaper: marks lost runs FAILED on its own thread and connection, one exporter
at a time, never delaying a scrape, and steps aside with one warning when it may not write."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import urllib.request
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from exporter._app import REAP_EVERY_ENV, settings
from exporter._reaper import Reaper
from tests.prom_helpers import wait_for
from tests.secrets import DSN_PASSWORD
from tests.test_exporter_roles import ROLES_SQL
from tests.test_exporter_support import free_port, insert_run, registered
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker._ops.reaper import REAPER_LOCK_KEY
from tracker.errors import ConfigurationError


def lost_run(db) -> uuid.UUID:
    """A run on another host, silent for ten minutes: the reaper cannot check its pid."""
    now = db.execute("SELECT now()").fetchone()[0]
    return insert_run(
        db,
        hostname="elsewhere.invalid",
        execution_start=now - timedelta(hours=1),
        last_update=now - timedelta(minutes=10),
    )


def status_of(db, run_id) -> str:
    return db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone()[0]


@pytest.fixture
def reaper_for():
    started: list[Reaper] = []

    def make(target, **kwargs) -> Reaper:
        # settle 0: the test server may have started seconds ago (see the settling tests)
        reaper = Reaper(target, **{"every": 0.2, "stale_after": 60.0, "settle": 0.0, **kwargs})
        started.append(reaper)
        reaper.start()
        return reaper

    yield make
    for reaper in started:
        assert reaper.shutdown(timeout=10)


def test_the_reaper_marks_a_lost_run_failed_and_the_exporter_counts_it(db, db_target, reaper_for):
    run = lost_run(db)
    fresh = insert_run(db, task_name="DAILY_02_alive", hostname="elsewhere.invalid")
    reaper = reaper_for(db_target)
    wait_for(lambda: reaper.reaped == 1, timeout=30, what="the lost run reaped")
    assert status_of(db, run) == "FAILED"
    assert status_of(db, fresh) == "RUNNING"  # its heartbeat is fresh (now)
    with registered(db_target, reaper=reaper) as (registry, _):
        assert registry.get_sample_value("pipetrack_reaped_runs_total") == 1


def test_without_a_reaper_the_counter_is_served_as_zero(db_target):
    with registered(db_target) as (registry, _):
        assert registry.get_sample_value("pipetrack_reaped_runs_total") == 0


def test_only_the_holder_of_the_lock_reaps(db, db_target, reaper_for):
    run = lost_run(db)
    with connect(db_target) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (REAPER_LOCK_KEY,))
        reaper = reaper_for(db_target)
        wait_for(lambda: reaper.rounds >= 2, timeout=30, what="two reaper rounds")
        assert reaper.reaped == 0
        assert status_of(db, run) == "RUNNING"
        other.execute("SELECT pg_advisory_unlock(%s)", (REAPER_LOCK_KEY,))
    wait_for(lambda: reaper.reaped == 1, timeout=30, what="the lost run reaped")


def test_a_reap_stuck_on_a_locked_row_does_not_delay_a_scrape(db, db_target, reaper_for):
    run = lost_run(db)
    with connect(db_target, autocommit=False) as blocker:
        blocker.execute("SELECT 1 FROM pipeline_status WHERE run_id = %s FOR UPDATE", (run,))
        reaper = reaper_for(db_target)
        # The reaper's UPDATE now waits for the row; scrapes go on meanwhile.
        wait_for(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE pipeline_status%%'"
                ).fetchone()[0]
                == 1
            ),
            timeout=30,
            what="the reaper waiting on the row lock",
        )
        with registered(db_target, reaper=reaper) as (registry, _):
            assert registry.get_sample_value("pipetrack_last_scrape_error") == 0
            assert (
                registry.get_sample_value(
                    "pipetrack_task_running_runs",
                    {"task": "DAILY_01_BDC_Locations", "task_stage": "DAILY"},
                )
                == 1
            )
            assert registry.get_sample_value("pipetrack_reaped_runs_total") == 0
        blocker.rollback()
    wait_for(lambda: reaper.reaped == 1, timeout=30, what="the lost run reaped")


@pytest.fixture
def reader_target(db, db_dsn):
    """A login that is only a member of pipetrack_reader."""
    name = f"pipetrack_rd_{uuid.uuid4().hex[:10]}"
    db.execute(ROLES_SQL.read_text("utf-8").encode())
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pipetrack_reader").format(
            sql.Identifier(name), sql.Literal(DSN_PASSWORD)
        )
    )
    dsn = make_conninfo(db_dsn, user=name, password=DSN_PASSWORD)
    yield DatabaseTarget(conninfo=dsn, source="test", secrets=(DSN_PASSWORD,))
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_read_only_role_disables_the_reaper_with_one_warning(
    db, reader_target, reaper_for, caplog
):
    run = lost_run(db)
    caplog.set_level(logging.WARNING, logger="exporter")
    reaper = reaper_for(reader_target)
    wait_for(lambda: reaper.disabled is not None, timeout=30, what="the reaper to step aside")
    wait_for(lambda: reaper.rounds >= 1, timeout=30, what="the round to end")
    assert "cannot UPDATE pipeline_status" in reaper.disabled
    warnings = [r for r in caplog.records if "reaper disabled" in r.getMessage()]
    assert len(warnings) == 1
    assert DSN_PASSWORD not in caplog.text
    assert status_of(db, run) == "RUNNING"
    # The reader still reads, and its pipeline_active_runs says the run is lost.
    with psycopg.connect(reader_target.conninfo, autocommit=True) as conn:
        conn.execute("SET search_path = pipetrack")
        assert conn.execute("SELECT lost, stalled FROM pipeline_active_runs").fetchall() == [
            (True, False)
        ]


def test_a_writer_dsn_lets_a_read_only_exporter_reap(db, db_dsn, reader_target, reaper_for):
    run = lost_run(db)
    name = f"pipetrack_wr_{uuid.uuid4().hex[:10]}"
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pipetrack_writer").format(
            sql.Identifier(name), sql.Literal(DSN_PASSWORD)
        )
    )
    try:
        writer = DatabaseTarget(
            conninfo=make_conninfo(db_dsn, user=name, password=DSN_PASSWORD),
            source="test",
            secrets=(DSN_PASSWORD,),
        )
        reaper = reaper_for(writer)
        wait_for(lambda: reaper.reaped == 1, timeout=30, what="the lost run reaped")
        with registered(reader_target, reaper=reaper) as (registry, _):
            assert registry.get_sample_value("pipetrack_reaped_runs_total") == 1
        assert status_of(db, run) == "FAILED"
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_an_unreachable_database_only_skips_rounds(reaper_for, caplog):
    caplog.set_level(logging.WARNING, logger="exporter")
    gone = DatabaseTarget(conninfo=f"host=127.0.0.1 port={free_port()} user=x", source="test")
    reaper = reaper_for(gone, every=0.05)
    wait_for(lambda: reaper.rounds >= 3, timeout=30, what="three failed rounds")
    assert reaper.disabled is None
    assert len([r for r in caplog.records if r.getMessage().startswith("reaper:")]) == 1


def test_reaper_settings_come_from_flags_then_environment(monkeypatch):
    monkeypatch.delenv(REAP_EVERY_ENV, raising=False)
    chosen = settings()
    assert (chosen.reap_every, chosen.stale_after, chosen.stall_after) == (15, 60, 1800)
    monkeypatch.setenv(REAP_EVERY_ENV, "0")
    assert settings().reap_every == 0
    assert settings(reap_every="5").reap_every == 5
    assert settings(stale_after="2m", stall_after="1h").stale_after == 120
    assert settings(stall_after="1h").stall_after == 3600
    with pytest.raises(ConfigurationError, match="stall after"):
        settings(stall_after="0")
    with pytest.raises(ConfigurationError, match="not a duration"):
        settings(stale_after="soonish")


def test_the_exporter_command_reaps_and_serves_the_count(db, db_dsn):
    lost_run(db)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracker",
            "exporter",
            "--dsn",
            db_dsn,
            "--listen",
            f"127.0.0.1:{port}",
            "--reap-every",
            "0.2",
            # also the settling time after start: short, since the test server is young
            "--stale-after",
            "10s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def reaped() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return "pipetrack_reaped_runs_total 1.0" in r.read().decode()
        except OSError:
            return False

    try:
        wait_for(reaped, timeout=60, what="the exporter to count the reaped run")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_after_an_outage_the_reaper_lets_trackers_catch_up_before_reaping(db, db_dsn, reaper_for):
    from tests.test_exporter_support import proxy_to, via_proxy

    run = lost_run(db)
    proxy = proxy_to(db_dsn)
    try:
        reaper = reaper_for(via_proxy(db_dsn, proxy), every=0.1, settle=1.0)
        wait_for(lambda: reaper.last_round == "failed", timeout=30, what="a failed round")
        proxy.start()
        # Back: the first rounds hold off (a live tracker would be replaying its spool now) ...
        wait_for(lambda: reaper.last_round == "settling", timeout=30, what="a settling round")
        assert status_of(db, run) == "RUNNING"
        # ... then the run, still silent, is reaped.
        wait_for(lambda: reaper.reaped == 1, timeout=30, what="the lost run reaped")
    finally:
        proxy.stop()


def test_a_freshly_started_database_server_is_given_time_before_reaping(db, db_target, reaper_for):
    run = lost_run(db)
    # The test server has been up for less than a year: that counts as just started here.
    reaper = reaper_for(db_target, settle=365 * 86400.0)
    wait_for(lambda: reaper.rounds >= 2, timeout=30, what="two reaper rounds")
    assert reaper.last_round == "settling"
    assert reaper.reaped == 0
    assert status_of(db, run) == "RUNNING"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


def test_between_rounds_a_run_of_this_host_whose_process_died_is_reaped_after_two_heartbeats(
    db, db_target, reaper_for
):
    import os
    import socket

    # Full rounds an hour apart: only the local pass can act in this test.
    reaper = reaper_for(db_target, every=3600.0, local_every=0.1)
    wait_for(lambda: reaper.rounds >= 1, timeout=30, what="the first round")
    now = db.execute("SELECT now()").fetchone()[0]
    here = socket.gethostname()

    def silent_run(task: str, silence: timedelta, **columns) -> uuid.UUID:
        row = {"hostname": here, "execution_start": now - timedelta(hours=1), **columns}
        return insert_run(db, task_name=task, last_update=now - silence, **row)

    died = silent_run("DAILY_40_died", timedelta(seconds=40), process_id=dead_pid())
    # Alive: this test's process, started before its run did.
    alive = silent_run(
        "DAILY_41_alive", timedelta(seconds=40), process_id=os.getpid(), execution_start=now
    )
    # Its heartbeat is late by less than two beats: not judged yet, whatever its pid.
    recent = silent_run("DAILY_42_recent", timedelta(seconds=10), process_id=dead_pid())
    # Another host's pid cannot be checked: it waits for --stale-after, as before.
    remote = silent_run(
        "DAILY_43_remote", timedelta(seconds=40), hostname="elsewhere.invalid", process_id=1
    )
    wait_for(lambda: status_of(db, died) == "FAILED", timeout=30, what="the dead run reaped")
    # The pass counts what it reaped once its transaction is in: a moment after the row shows.
    wait_for(lambda: reaper.reaped == 1, timeout=30, what="the reaping counted")
    assert reaper.rounds == 1
    reason = db.execute("SELECT error_message FROM pipeline_status WHERE run_id = %s", (died,))
    assert f"on {here} is gone" in reason.fetchone()[0]
    for run in (alive, recent, remote):
        assert status_of(db, run) == "RUNNING"


def test_the_local_pass_waits_while_the_database_server_is_young(db, db_target):
    import socket

    now = db.execute("SELECT now()").fetchone()[0]
    run = insert_run(
        db,
        hostname=socket.gethostname(),
        process_id=dead_pid(),
        execution_start=now - timedelta(hours=1),
        last_update=now - timedelta(seconds=40),
    )
    # Not started: each pass runs here, synchronously. The server is young for a year-long settle.
    settling = Reaper(db_target, settle=365 * 86400.0)
    settled = Reaper(db_target, settle=0.0)
    try:
        assert settling.reap_local_now() is None
        assert settling.last_round == "settling"
        assert status_of(db, run) == "RUNNING"
        assert settled.reap_local_now() == 1
        assert status_of(db, run) == "FAILED"
    finally:
        assert settling.shutdown()
        assert settled.shutdown()
