"""A database that is down, slow or stalled: the scrape answers at once that it is down, never
hangs or raises, and the exporter reconnects by itself when the database is back."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.secrets import DSN_PASSWORD
from tests.test_exporter_support import free_port, insert_run, proxy_to, registered, via_proxy
from tracker._db.dsn import DatabaseTarget

RUNS = "pipetrack_task_running_runs"
LABELS = {"task": "DAILY_01_BDC_Locations", "task_stage": "DAILY"}

pytestmark = pytest.mark.timeout(120)


def self_metrics(registry):
    return (
        registry.get_sample_value("pipetrack_database_up"),
        registry.get_sample_value("pipetrack_last_scrape_error"),
    )


def test_a_closed_port_answers_down_without_task_series(caplog):
    dsn = make_conninfo(
        host="127.0.0.1", port=str(free_port()), dbname="x", user="u", password=DSN_PASSWORD
    )
    target = DatabaseTarget(conninfo=dsn, source="test", secrets=(DSN_PASSWORD,))
    with caplog.at_level(logging.WARNING, logger="exporter"), registered(target) as (registry, _):
        assert self_metrics(registry) == (0, 1)
        assert registry.get_sample_value(RUNS, LABELS) is None
        assert registry.get_sample_value("pipetrack_scrape_duration_seconds") >= 0
    assert "Connection refused" in caplog.text or "connection failed" in caplog.text
    assert DSN_PASSWORD not in caplog.text


def test_the_exporter_reconnects_when_the_database_returns(db, admin_dsn, db_dsn):
    insert_run(db)
    proxy = proxy_to(admin_dsn)
    proxy.start()
    try:
        with registered(via_proxy(db_dsn, proxy)) as (registry, _):
            assert self_metrics(registry) == (1, 0)
            assert registry.get_sample_value(RUNS, LABELS) == 1

            proxy.stop()  # the database goes away, with the exporter's connection
            assert self_metrics(registry) == (0, 1)
            assert registry.get_sample_value(RUNS, LABELS) is None

            proxy.start()  # back on the same address
            assert self_metrics(registry) == (1, 0)
            assert registry.get_sample_value(RUNS, LABELS) == 1
            # One connection before the outage, one after: reused between scrapes.
            assert proxy.accepted == 2
    finally:
        proxy.stop()


def test_a_stalled_connection_is_dropped_after_the_time_limit(db, admin_dsn, db_dsn):
    insert_run(db)
    proxy = proxy_to(admin_dsn)
    proxy.start()
    try:
        with registered(via_proxy(db_dsn, proxy), statement_timeout=0.5) as (registry, _):
            assert self_metrics(registry) == (1, 0)
            proxy.stall()  # the network swallows everything from now on
            assert self_metrics(registry) == (0, 1)
            proxy.stop()
            proxy.start()
            assert self_metrics(registry) == (1, 0)
    finally:
        proxy.stop()


def test_a_statement_over_the_timeout_is_an_error_but_not_down(db, db_target):
    insert_run(db)
    with (
        registered(db_target, statement_timeout=0.5) as (registry, _),
        psycopg.connect(db_target.conninfo) as locker,
    ):
        # Another session holds the outcomes table: the scrape's read waits, then is cancelled.
        locker.execute("LOCK TABLE pipetrack.pipeline_task_outcomes IN ACCESS EXCLUSIVE MODE")
        assert self_metrics(registry) == (1, 1)
        assert registry.get_sample_value(RUNS, LABELS) is None
        locker.rollback()
        assert self_metrics(registry) == (1, 0)
        assert registry.get_sample_value(RUNS, LABELS) == 1


def test_a_database_without_the_schema_is_an_error_but_not_down(empty_db_dsn):
    target = DatabaseTarget(conninfo=empty_db_dsn, source="test")
    with registered(target) as (registry, _):
        assert self_metrics(registry) == (1, 1)


def test_rows_of_an_unexpected_shape_are_an_error_not_a_crash(db, db_target, caplog):
    run = insert_run(db)
    db.execute(
        "UPDATE pipeline_status SET execution_status = 'FINISHED', execution_end = now()"
        " WHERE run_id = %s",
        (run,),
    )
    # A schema this version does not know: durations that are not numbers.
    db.execute(
        "ALTER TABLE pipeline_task_last_outcome ALTER COLUMN recent_durations DROP DEFAULT,"
        " ALTER COLUMN recent_durations TYPE text[] USING recent_durations::text[]"
    )
    with caplog.at_level(logging.ERROR, logger="exporter"), registered(db_target) as (registry, _):
        assert self_metrics(registry) == (1, 1)
        assert registry.get_sample_value("pipetrack_task_running_runs", LABELS) is None
    assert "building metrics" in caplog.text


def test_the_first_scrape_after_the_session_was_killed_says_up(db, db_target, admin_dsn):
    """An administrator (or a pooler, or a restart) ended the exporter's session between two
    scrapes: the next scrape reconnects and reads, instead of reporting the database down."""
    insert_run(db)
    with registered(db_target) as (registry, _), psycopg.connect(admin_dsn) as admin:
        assert self_metrics(registry) == (1, 0)
        (pid,) = admin.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'pipetrack-exporter' AND datname = %s",
            (db.info.dbname,),
        ).fetchone()
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()[0]
        assert self_metrics(registry) == (1, 0)
        assert registry.get_sample_value(RUNS, LABELS) == 1


def test_the_first_scrape_after_a_database_restart_says_up(db, admin_dsn, db_dsn):
    insert_run(db)
    proxy = proxy_to(admin_dsn)
    proxy.start()
    try:
        with registered(via_proxy(db_dsn, proxy)) as (registry, _):
            assert self_metrics(registry) == (1, 0)
            proxy.stop()  # the server goes away with every session...
            proxy.start()  # ...and is back before the next scrape
            assert self_metrics(registry) == (1, 0)
            assert registry.get_sample_value(RUNS, LABELS) == 1
            assert proxy.accepted == 2  # one reconnect, no more
            proxy.stop()  # and while it is really down, a scrape says so (after one try)
            assert self_metrics(registry) == (0, 1)
    finally:
        proxy.stop()
