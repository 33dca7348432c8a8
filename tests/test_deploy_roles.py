"""The deployment docs/deploy.md describes, on a server where nobody is superuser (as on a managed
PostgreSQL): an owner with CREATEROLE migrates and grants the roles, scripts write as a
``pipetrack_writer`` login, the exporter reads the standby as a ``pipetrack_reader`` login and
reaps on the primary as the writer."""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from exporter._reaper import Reaper
from tests.debian_pg import APP_ROLE
from tests.secrets import register_password
from tests.test_exporter_replica import finish_a_run, lost_run, target
from tests.test_exporter_support import registered
from tracker._db.migrate import sql_dir

LOGIN_PREFIX = "pipetrack_dep_"


@pytest.fixture
def owner_with_createrole(pg15_empty_db) -> Iterator[str]:
    """The app role, owner of the test's database, allowed to create roles: no superuser."""
    cluster = pg15_empty_db.primary.cluster
    with cluster.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(APP_ROLE)))
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        assert superuser.fetchone() == (False,)
    try:
        yield pg15_empty_db.app_dsn
    finally:
        with cluster.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(APP_ROLE)))
            # The logins own nothing and hold memberships only: they go at once.
            logins = conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (LOGIN_PREFIX,)
            ).fetchall()
            for (name,) in logins:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(str(name))))


def login(owner_conn, member_of: str, dsn_of) -> str:
    name = f"{LOGIN_PREFIX}{uuid.uuid4().hex[:10]}"
    password = f"dep-{secrets.token_hex(10)}"
    register_password(password)
    owner_conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            sql.Identifier(name), sql.Literal(password), sql.Identifier(member_of)
        )
    )
    return str(dsn_of(name, password))


def test_an_owner_without_superuser_sets_up_writer_reader_and_reaper_logins(
    pg15_empty_db, owner_with_createrole, replication, tmp_path
):
    upgraded = subprocess.run(
        [sys.executable, "-m", "tracker", "db", "upgrade", "--dsn", owner_with_createrole],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (upgraded.returncode, upgraded.stderr) == (0, "")
    name = pg15_empty_db.name
    primary = pg15_empty_db.primary.cluster
    with psycopg.connect(owner_with_createrole, autocommit=True) as owner:
        owner.execute((sql_dir() / "roles.sql").read_bytes())
        writer = login(owner, "pipetrack_writer", lambda u, p: primary.tcp_dsn(name, u, p))
        reader = login(
            owner, "pipetrack_reader", lambda u, p: replication.standby.tcp_dsn(name, u, p)
        )

    finish_a_run(writer, "DAILY_01_written_by_a_writer", tmp_path / "spool")
    lost_run(pg15_empty_db.dsn)
    # A settling time shorter than the server's age: the reaper asks the server when it started
    # (pg_postmaster_start_time(), as the writer login), and goes on.
    stale = timedelta(minutes=1).total_seconds()
    reaper = Reaper(target(writer), settle=0.001, stale_after=stale)
    try:
        assert reaper.reap_now() == 1
    finally:
        assert reaper.shutdown()
    replication.wait_caught_up()
    with registered(target(reader)) as (registry, _):
        value = registry.get_sample_value
        assert value("pipetrack_last_scrape_error") == 0
        assert value("pipetrack_database_in_recovery") == 1
        assert value("pipetrack_database_replica_lag_seconds") is not None
        finished = {"status": "FINISHED", "task": "DAILY_01_written_by_a_writer"}
        assert value("pipetrack_task_last_run_status", {**finished, "task_stage": "DAILY"}) == 1
        failed = {"status": "FAILED", "task": "DAILY_03_lost", "task_stage": "DAILY"}
        assert value("pipetrack_task_last_run_status", failed) == 1
