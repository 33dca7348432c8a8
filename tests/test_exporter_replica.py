"""The exporter reading a hot standby (Debian's PostgreSQL 15, streaming from the primary,
tests/fix_replica.py): runs written on the primary show on the standby's scrape once replayed,
the scrape says how far behind the standby is, and the reaper writes through the primary."""

from __future__ import annotations

import logging
import re
import subprocess
import urllib.request
from datetime import timedelta

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from exporter import _metrics as m
from exporter._reaper import Reaper
from tests.prom_helpers import require_program, running_exporter, wait_for
from tests.test_exporter_support import insert_run, parse, registered
from tests.tracker_support import make_tracker
from tracker._db.dsn import DatabaseTarget

SELF = {
    sample
    for spec in m.SELF_METRICS
    for sample in (spec.name, f"{spec.name}_total", f"{spec.name}_created")
}


def scrape_text(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        return str(response.read().decode("utf-8"))


def target(dsn: str) -> DatabaseTarget:
    return DatabaseTarget(conninfo=dsn, source="test")


def finish_a_run(dsn: str, task: str, spool) -> None:
    """One run of ``task`` through the real tracker, two subtasks, FINISHED and written."""
    instance = make_tracker(dsn, spool)
    try:
        with instance.run(task, total_subtasks=2) as run:
            for step in ("extract", "load"):
                with run.subtask(step, items_total=3) as subtask:
                    for _ in range(3):
                        subtask.advance()
        assert instance.flush(30)
    finally:
        assert instance.shutdown(10)


def task_samples(registry) -> dict:
    """Every sample of a scrape but the exporter's own self-metrics."""
    return {key: value for key, value in parse(registry).items() if key[0] not in SELF}


def tasks_in(samples: dict) -> set[str]:
    return {dict(labels)["task"] for _name, labels in samples if "task" in dict(labels)}


def lag(registry) -> float | None:
    return registry.get_sample_value("pipetrack_database_replica_lag_seconds")


def replayed_commit_age(replication) -> float:
    ((age,),) = replication.standby.query(
        "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
    )
    return float(age)


def test_a_standby_scrape_lags_while_replay_is_paused_then_matches_the_primary(
    replica_db, tmp_path
):
    replication = replica_db.replication
    finish_a_run(replica_db.database.app_dsn, "DAILY_01_first", tmp_path / "spool")
    replication.wait_caught_up()
    with (
        registered(target(replica_db.standby_dsn)) as (standby, _),
        registered(target(replica_db.primary_dsn)) as (primary, _),
    ):
        assert standby.get_sample_value("pipetrack_database_in_recovery") == 1
        assert primary.get_sample_value("pipetrack_database_in_recovery") == 0
        assert lag(primary) is None  # a primary has no replica lag to serve
        # A quiet primary: the last commit the standby replayed grows old, yet it has replayed
        # all it received, so it is not behind (polled: the primary writes some WAL of its own).
        wait_for(
            lambda: replayed_commit_age(replication) >= 2.0,
            timeout=60,
            what="the last replayed commit to be 2 s old",
        )
        wait_for(lambda: lag(standby) == 0, timeout=60, what="no lag on the standby")
        assert tasks_in(task_samples(standby)) == {"DAILY_01_first"}

        with replication.replay_paused():
            finish_a_run(replica_db.database.app_dsn, "DAILY_02_second", tmp_path / "spool")
            replication.wait_received()  # received, not replayed: the standby is behind
            behind = task_samples(standby)
            assert tasks_in(behind) == {"DAILY_01_first"}
            assert tasks_in(task_samples(primary)) == {"DAILY_01_first", "DAILY_02_second"}
            first = lag(standby)
            assert first is not None
            assert first >= 0
            # Nothing replays: the last replayed commit only gets older.
            wait_for(
                lambda: (lag(standby) or 0) >= first + 1.0,
                timeout=60,
                what="the standby's lag to grow by a second",
            )
            assert standby.get_sample_value("pipetrack_last_scrape_error") == 0

        replication.wait_caught_up()
        caught_up = task_samples(standby)
        assert caught_up == task_samples(primary)
        assert tasks_in(caught_up) == {"DAILY_01_first", "DAILY_02_second"}
        wait_for(lambda: lag(standby) == 0, timeout=60, what="no lag on the standby")
        key = (
            "pipetrack_task_last_run_status",
            (("status", "FINISHED"), ("task", "DAILY_02_second"), ("task_stage", "DAILY")),
        )
        assert caught_up[key] == 1


def test_promtool_finds_nothing_to_lint_in_a_standby_exporters_output(replica_db, tmp_path):
    promtool = require_program("promtool")
    finish_a_run(replica_db.database.app_dsn, "DAILY_01_first", tmp_path / "spool")
    replica_db.replication.wait_caught_up()
    with replica_db.replication.replay_paused():
        finish_a_run(replica_db.database.app_dsn, "DAILY_02_second", tmp_path / "spool")
        replica_db.replication.wait_received()
        with running_exporter(replica_db.standby_dsn, tmp_path / "exporter.log") as address:
            text = scrape_text(address)
    assert re.search(r"(?m)^pipetrack_database_in_recovery 1\.0$", text)
    assert re.search(r"(?m)^pipetrack_database_replica_lag_seconds \d+(\.\d+)?(e[-+]\d+)?$", text)
    lint = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (lint.returncode, (lint.stdout + lint.stderr).strip()) == (0, "")


def lost_run(dsn: str):
    """A run of another host whose heartbeat stopped ten minutes ago, written on the primary."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path = pipetrack")
        now = conn.execute("SELECT now()").fetchone()[0]
        return insert_run(
            conn,
            task_name="DAILY_03_lost",
            hostname="elsewhere.invalid",
            execution_start=now - timedelta(hours=1),
            last_update=now - timedelta(minutes=10),
        )


def scrape_values(address: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape_text(address))
        for sample in family.samples
    }


def test_an_exporter_on_the_standby_reaps_through_the_primary_and_serves_it_once_replayed(
    replica_db, tmp_path
):
    run = lost_run(replica_db.primary_dsn)
    failed = (
        "pipetrack_task_last_run_status",
        (("status", "FAILED"), ("task", "DAILY_03_lost"), ("task_stage", "DAILY")),
    )
    reap = ["--reap-dsn", replica_db.database.app_dsn, "--reap-every", "0.2"]
    # --stale-after is also the reaper's settling time after start: short, the server is young.
    extra = [*reap, "--stale-after", "10s"]
    with running_exporter(replica_db.standby_dsn, tmp_path / "exporter.log", *extra) as address:
        seen = wait_for(
            lambda: (v := scrape_values(address)).get(failed) == 1 and v,
            timeout=120,
            what="the standby's scrape to show the reaped run FAILED",
        )
    assert seen[("pipetrack_reaped_runs_total", ())] == 1
    assert seen[("pipetrack_database_in_recovery", ())] == 1
    with psycopg.connect(replica_db.primary_dsn) as conn:
        row = conn.execute(
            "SELECT execution_status, error_message FROM pipetrack.pipeline_status"
            " WHERE run_id = %s",
            (run,),
        ).fetchone()
    assert row[0] == "FAILED"
    assert "no heartbeat" in row[1]


def test_a_reaper_given_the_standby_leaves_it_alone_with_one_warning(replica_db, caplog):
    run = lost_run(replica_db.primary_dsn)
    replica_db.replication.wait_caught_up()
    caplog.set_level(logging.WARNING, logger="exporter")
    reaper = Reaper(target(replica_db.standby_dsn), every=0.1, settle=0.0, local_every=0.05)
    reaper.start()
    try:
        wait_for(lambda: reaper.rounds >= 3, timeout=60, what="three reaper rounds")
    finally:
        assert reaper.shutdown(timeout=10)
    assert reaper.last_round == "standby"
    assert (reaper.reaped, reaper.disabled) == (0, None)
    warnings = [r.getMessage() for r in caplog.records if "standby" in r.getMessage()]
    assert len(warnings) == 1
    assert "--reap-dsn with the primary" in warnings[0]
    # ... and no failed round: nothing tried to write on the standby.
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("reaper:")] == (
        warnings
    )
    with psycopg.connect(replica_db.primary_dsn) as conn:
        status = conn.execute(
            "SELECT execution_status FROM pipetrack.pipeline_status WHERE run_id = %s", (run,)
        ).fetchone()
    assert status == ("RUNNING",)
