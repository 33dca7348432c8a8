"""pytest plugin: a real PostgreSQL for the suite, and a fresh database for each test.

The server is ``PIPETRACK_TEST_DSN`` (or ``--test-dsn``; a role that may create databases) when
given, otherwise an embedded server started once per session in a temporary folder. The schema is
migrated once into a template database; each test gets a copy of it, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tracker._db import embedded, migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget

TEST_DSN_VAR = "PIPETRACK_TEST_DSN"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-dsn",
        default=None,
        help=f"PostgreSQL server for the tests (default: ${TEST_DSN_VAR}, else embedded)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that asks for a database is a `db` test, so `-m db` reruns exactly those.
    for item in items:
        if set(getattr(item, "fixturenames", ())) & {"admin_dsn", "db_dsn", "db", "db_target"}:
            item.add_marker(pytest.mark.db)


def dsn_for(base: str, dbname: str) -> str:
    return make_conninfo(base, dbname=dbname)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        conn.execute(query)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def admin_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN with the right to create databases, on the server the suite uses."""
    given = request.config.getoption("--test-dsn") or os.environ.get(TEST_DSN_VAR)
    if given:
        yield given
        return
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemp folders, and
    # would delete this live server's data directory under it.
    folder = Path(tempfile.mkdtemp(prefix="pipetrack-test-pg-"))
    pgdata = folder / "postgres"
    try:
        yield embedded.ensure_running(pgdata)
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    """A database holding the migrated schema, copied for each test."""
    name = f"pipetrack_tpl_{os.getpid()}"
    drop_database(admin_dsn, name)
    create_database(admin_dsn, name)
    with connect(DatabaseTarget(conninfo=dsn_for(admin_dsn, name), source="test")) as conn:
        migrate.upgrade(conn)
    yield name
    drop_database(admin_dsn, name)


@pytest.fixture
def empty_db_dsn(admin_dsn: str) -> Iterator[str]:
    """A brand-new database without the schema (for migration tests)."""
    name = f"pipetrack_e_{uuid.uuid4().hex[:12]}"
    create_database(admin_dsn, name)
    yield dsn_for(admin_dsn, name)
    drop_database(admin_dsn, name)


@pytest.fixture
def db_dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A database of this test's own, with the schema applied."""
    name = f"pipetrack_t_{uuid.uuid4().hex[:12]}"
    create_database(admin_dsn, name, template=template_db)
    yield dsn_for(admin_dsn, name)
    drop_database(admin_dsn, name)


@pytest.fixture
def db_target(db_dsn: str) -> DatabaseTarget:
    return DatabaseTarget(conninfo=db_dsn, source="test")


@pytest.fixture
def db(db_target: DatabaseTarget) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to this test's database, search_path set to pipetrack."""
    with connect(db_target) as conn:
        yield conn


def libpq_params(dsn: str) -> dict[str, str]:
    """The DSN's parameters, for tests that express it another way (PG*, MONITOR_DB_*)."""
    return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
