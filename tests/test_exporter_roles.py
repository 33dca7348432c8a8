"""The exporter needs only to read: it works as a member of sql/roles.sql's pipetrack_reader,
and a role without rights gets an error in the metrics, not a crash."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.secrets import DSN_PASSWORD
from tests.test_exporter_support import T0, finish_run, insert_run, registered, ts
from tracker._db.dsn import DatabaseTarget

ROLES_SQL = Path(__file__).resolve().parents[1] / "sql" / "roles.sql"
LABELS = {"task": "DAILY_01_BDC_Locations", "task_stage": "DAILY"}


@pytest.fixture
def login_role(db, db_dsn):
    """A fresh login role (no rights yet) and a DSN that connects as it."""
    name = f"pipetrack_exp_{uuid.uuid4().hex[:10]}"
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(DSN_PASSWORD)
        )
    )
    yield name, make_conninfo(db_dsn, user=name, password=DSN_PASSWORD)
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_member_of_the_reader_role_reads_every_metric(db, login_role):
    from datetime import timedelta

    run = insert_run(db, execution_status="RUNNING")
    finish_run(db, run, "FINISHED", T0 + timedelta(seconds=30))
    insert_run(db, execution_start=T0 + timedelta(hours=1))
    db.execute(ROLES_SQL.read_text("utf-8").encode())
    name, dsn = login_role
    db.execute(sql.SQL("GRANT pipetrack_reader TO {}").format(sql.Identifier(name)))
    target = DatabaseTarget(conninfo=dsn, source="test", secrets=(DSN_PASSWORD,))
    with registered(target) as (registry, _):
        assert registry.get_sample_value("pipetrack_last_scrape_error") == 0
        assert registry.get_sample_value("pipetrack_task_running_runs", LABELS) == 1
        assert (
            registry.get_sample_value("pipetrack_task_last_success_timestamp_seconds", LABELS)
            == ts(T0) + 30
        )
        assert (
            registry.get_sample_value("pipetrack_task_runs_total", {**LABELS, "status": "FINISHED"})
            == 1
        )


def test_a_role_without_rights_reports_an_error_not_a_crash(db, login_role):
    insert_run(db)
    _, dsn = login_role
    with registered(DatabaseTarget(conninfo=dsn, source="test")) as (registry, _):
        assert registry.get_sample_value("pipetrack_database_up") == 1
        assert registry.get_sample_value("pipetrack_last_scrape_error") == 1
        assert registry.get_sample_value("pipetrack_task_running_runs", LABELS) is None
