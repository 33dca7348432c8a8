"""Migrations through Debian's PgBouncer in transaction mode: every transaction may run on another
server connection, and a server connection serves other clients in between. The upgrade keeps no
state in the session (its lock is each transaction's own, nothing is prepared), so concurrent
upgrades through the pooler apply each migration once and leave nothing behind on the servers.
"""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tests.test_migrate import SHIPPED, applied_versions
from tracker._db import migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget

# pipetrack's connections put their search_path in the startup packet's `options`, which
# PgBouncer 1.18 refuses ("unsupported startup parameter: options") unless told to ignore it.
POOLER_SETTINGS = {"ignore_startup_parameters": "options"}


def advisory_locks(database) -> list[tuple[object, ...]]:
    with database.primary.cluster.connect(database.name) as conn:
        return conn.execute(
            "SELECT pid, objid, mode FROM pg_locks WHERE locktype = 'advisory'"
        ).fetchall()


def upgrade_processes(dsn: str, count: int) -> list[tuple[int, str, str]]:
    command = [sys.executable, "-m", "tracker", "db", "upgrade", "--dsn", dsn]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    return [(p.wait(timeout=120), *p.communicate(timeout=60)) for p in processes]


def test_concurrent_upgrades_through_a_small_pool_apply_each_migration_once(
    pg15_empty_db, pgbouncer
):
    bouncer = pgbouncer(default_pool_size=2, **POOLER_SETTINGS)
    outcomes = upgrade_processes(bouncer.dsn(pg15_empty_db.name), 6)
    assert [(code, err) for code, _out, err in outcomes] == [(0, "")] * 6
    latest = f"schema is at version {SHIPPED[-1]}"
    assert all(latest in out for _code, out, _err in outcomes)
    with connect(DatabaseTarget(conninfo=pg15_empty_db.dsn, source="test")) as conn:
        assert applied_versions(conn) == SHIPPED
    assert advisory_locks(pg15_empty_db) == []
    pool = bouncer.pool(pg15_empty_db.name)
    assert pool is not None
    assert (pool["cl_active"], pool["cl_waiting"], pool["sv_active"]) == (0, 0, 0)


def test_an_upgrade_shares_one_server_connection_with_a_client_that_prepares(
    pg15_empty_db, pgbouncer
):
    # One server connection for two clients: the upgrade's transactions and the other client's
    # statements take turns on it, so whatever the upgrade left in the session (a lock, a
    # prepared statement, a DEALLOCATE ALL) the other client would meet, and the reverse.
    bouncer = pgbouncer(default_pool_size=1, **POOLER_SETTINGS)
    dsn = bouncer.dsn(pg15_empty_db.name)
    target = DatabaseTarget(conninfo=dsn, source="test")
    with (
        psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as other,
        connect(target) as conn,
    ):
        assert other.execute("SELECT %s::int", (1,)).fetchone() == (1,)  # prepared as _pg3_0
        assert [m.version for m in migrate.upgrade(conn)] == SHIPPED
        assert other.execute("SELECT %s::int", (2,)).fetchone() == (2,)
        assert migrate.upgrade(conn) == []
        assert {s.state for s in migrate.status(conn)} == {"applied"}
        prepared = other.execute(
            "SELECT statement FROM pg_prepared_statements"
            " WHERE statement NOT LIKE '%%pg_prepared_statements%%'"
        ).fetchall()
        assert prepared == [("SELECT $1::int",)]
    assert advisory_locks(pg15_empty_db) == []
