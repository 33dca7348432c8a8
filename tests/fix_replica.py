"""pytest plugin: a hot standby of the session's PostgreSQL 15 primary (tests/fix_pg15.py), made by
``pg_basebackup -R`` and streaming from it, with WAL replay that a test may pause to make lag.

``replica_db`` is a test's own database on the primary, already on the standby; whatever the
test did to replay, it is resumed at the end (before the database is dropped, so the standby
replays the drop too).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import debian_pg
from tests.debian_pg import Cluster, Primary, Replication
from tests.fix_pg15 import REQUIRE_REPLICA_VAR, Pg15Database


@dataclass(frozen=True)
class ReplicaDatabase:
    """A test's database on the primary and its standby."""

    database: Pg15Database
    replication: Replication

    @property
    def primary_dsn(self) -> str:
        return self.database.dsn

    @property
    def standby_dsn(self) -> str:
        return self.replication.standby.dsn(self.database.name)


@pytest.fixture(scope="session")
def pg15_standby(pg15_primary: Primary) -> Iterator[Cluster]:
    if not (debian_pg.BIN / "pg_basebackup").exists():
        debian_pg.require(
            f"pg_basebackup ({debian_pg.BIN})",
            env_vars=(REQUIRE_REPLICA_VAR,),
            install="postgresql-15",
        )
    standby = debian_pg.start_standby(pg15_primary.cluster)
    try:
        yield standby
    finally:
        standby.remove()


@pytest.fixture
def replication(pg15_primary: Primary, pg15_standby: Cluster) -> Iterator[Replication]:
    pair = Replication(pg15_primary.cluster, pg15_standby)
    try:
        yield pair
    finally:
        pair.resume_replay()


@pytest.fixture
def replica_db(pg15_db: Pg15Database, replication: Replication) -> ReplicaDatabase:
    replication.wait_caught_up()
    return ReplicaDatabase(pg15_db, replication)
