"""Migrations: applied once, in order, safely from many processes at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tracker._db import migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker.errors import MigrationError

SHIPPED = [m.version for m in migrate.shipped_migrations()]


def target(dsn):
    return DatabaseTarget(conninfo=dsn, source="test")


def applied_versions(conn):
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_shipped_migrations_are_numbered_without_gaps():
    assert list(range(1, len(SHIPPED) + 1)) == SHIPPED


def test_upgrade_applies_everything_once_then_nothing(empty_db_dsn):
    with connect(target(empty_db_dsn)) as conn:
        assert [s.state for s in migrate.status(conn)] == ["pending"] * len(SHIPPED)
        assert [m.version for m in migrate.upgrade(conn)] == SHIPPED
        assert migrate.upgrade(conn) == []
        assert applied_versions(conn) == SHIPPED
        assert {s.state for s in migrate.status(conn)} == {"applied"}


def test_five_processes_upgrading_at_once_all_succeed_and_apply_each_migration_once(empty_db_dsn):
    command = [sys.executable, "-m", "tracker", "db", "upgrade", "--dsn", empty_db_dsn]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    outcomes = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in processes]
    for process in processes:
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
    assert outcomes == [(0, "")] * 5
    with connect(target(empty_db_dsn)) as conn:
        assert applied_versions(conn) == SHIPPED


def test_a_migration_changed_after_it_was_applied_is_refused(db):
    db.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    assert [s.state for s in migrate.status(db)][1] == "modified"
    with pytest.raises(MigrationError, match="0002_pipeline_subtask was changed") as caught:
        migrate.upgrade(db)
    assert caught.value.version == 2


def test_migrations_the_database_has_but_this_version_does_not_are_reported(db):
    db.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')"
    )
    assert migrate.status(db)[-1].state == "unknown"
    assert migrate.upgrade(db) == []


def test_a_failing_migration_rolls_back_and_is_not_recorded(empty_db_dsn, tmp_path, monkeypatch):
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_column;")
    monkeypatch.setattr(migrate, "sql_dir", lambda: tmp_path)
    with connect(target(empty_db_dsn)) as conn:
        with pytest.raises(MigrationError, match="0002_broken failed") as caught:
            migrate.upgrade(conn)
        assert caught.value.version == 2
        assert applied_versions(conn) == [1]
        assert conn.execute("SELECT to_regclass('pipetrack.half')").fetchone() == (None,)
        # The lock was released: a second attempt fails the same way instead of hanging.
        with pytest.raises(MigrationError):
            migrate.upgrade(conn)


def test_upgrade_refuses_a_connection_inside_a_transaction(db_target):
    with connect(db_target, autocommit=False) as conn, pytest.raises(MigrationError):
        migrate.upgrade(conn)
