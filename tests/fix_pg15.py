"""pytest plugin: Debian's PostgreSQL 15 as a primary of the session's own (tests/debian_pg.py),
for the tests of what lies past one machine: a hot standby (tests/fix_replica.py) and a PgBouncer
(tests/fix_pgbouncer.py) in front of it.

The schema is migrated once, by the application role, into a template; each test gets a copy
owned by that role. Without the binaries the tests skip, unless PIPETRACK_REQUIRE_REPLICA=1 or
PIPETRACK_REQUIRE_PGBOUNCER=1 (CI sets both) makes that a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import debian_pg
from tests.debian_pg import Primary
from tracker._db import migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget

REQUIRE_REPLICA_VAR = "PIPETRACK_REQUIRE_REPLICA"
REQUIRE_PGBOUNCER_VAR = "PIPETRACK_REQUIRE_PGBOUNCER"


@dataclass(frozen=True)
class Pg15Database:
    """A database of one test on the session's PostgreSQL 15 primary, owned by the app role."""

    name: str
    primary: Primary

    @property
    def dsn(self) -> str:
        """The superuser over the private socket (for checks the app role may not make)."""
        return self.primary.cluster.dsn(self.name)

    @property
    def app_dsn(self) -> str:
        """The application role over TCP with its password."""
        return self.primary.app_dsn(self.name)


@pytest.fixture(scope="session")
def pg15_primary() -> Iterator[Primary]:
    if not (debian_pg.BIN / "postgres").exists():
        debian_pg.require(
            f"Debian's PostgreSQL 15 ({debian_pg.BIN})",
            env_vars=(REQUIRE_REPLICA_VAR, REQUIRE_PGBOUNCER_VAR),
            install="postgresql-15",
        )
    primary = debian_pg.start_primary(debian_pg.server_user())
    try:
        yield primary
    finally:
        primary.cluster.remove()


@pytest.fixture(scope="session")
def pg15_template(pg15_primary: Primary) -> Iterator[str]:
    name = f"pipetrack_tpl15_{uuid.uuid4().hex[:8]}"
    pg15_primary.create_database(name)
    target = DatabaseTarget(conninfo=pg15_primary.app_dsn(name), source="test")
    with connect(target) as conn:
        migrate.upgrade(conn)
    yield name
    pg15_primary.drop_database(name)


@pytest.fixture
def pg15_db(pg15_primary: Primary, pg15_template: str) -> Iterator[Pg15Database]:
    """A copy of the migrated template for this test."""
    database = Pg15Database(f"pipetrack_t15_{uuid.uuid4().hex[:12]}", pg15_primary)
    pg15_primary.create_database(database.name, template=pg15_template)
    yield database
    pg15_primary.drop_database(database.name)


@pytest.fixture
def pg15_empty_db(pg15_primary: Primary) -> Iterator[Pg15Database]:
    """A database without the schema (for migration tests), owned by the app role."""
    database = Pg15Database(f"pipetrack_e15_{uuid.uuid4().hex[:12]}", pg15_primary)
    pg15_primary.create_database(database.name)
    yield database
    pg15_primary.drop_database(database.name)
