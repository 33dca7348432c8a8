"""Schema migrations: the numbered files in ``sql/``, applied in order under an advisory lock.

1. In one transaction holding the migration lock, create the ``pipetrack`` schema and the
   ``schema_migrations`` table if missing.
2. Refuse if an applied migration's file has changed since (its checksum differs).
3. Apply each pending file in a transaction of its own that takes the lock first, looks again
   whether another upgrade applied it meanwhile, and records it.

The lock is each transaction's own (``pg_advisory_xact_lock``) and nothing is prepared, so no
state outlives a transaction: an upgrade through a transaction pooler (PgBouncer's
``pool_mode = transaction``), whose transactions may each run on another server connection
that other clients share, is as safe as one over a direct connection.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tracker._db.connect import SCHEMA
from tracker.errors import MigrationError

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tracker")

# An arbitrary constant shared by every pipetrack process ("pipetrk" in ASCII).
ADVISORY_LOCK_KEY = 0x70697065747263
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        import hashlib  # loads OpenSSL's libcrypto (MBs of RSS): only when checking files

        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    state: str  # "applied", "pending", "modified" (file changed since applied), "unknown"
    applied_at: datetime | None


def sql_dir() -> Path:
    """Where the migration files are: inside the installed wheel, or the source tree's sql/."""
    packaged = Path(str(resources.files("tracker") / "_sql"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def shipped_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path.read_text("utf-8")))
    if not found:
        raise MigrationError(f"no migration files found in {directory}")
    return found


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, tuple[str, datetime]]:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.schema_migrations",)).fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = conn.execute(
        f"SELECT version, checksum, applied_at FROM {SCHEMA}.schema_migrations"
    ).fetchall()
    return {int(str(v)): (str(c), a) for v, c, a in rows if isinstance(a, datetime)}


def status(conn: psycopg.Connection[tuple[object, ...]]) -> list[MigrationState]:
    """Every shipped migration (and any the database has that this version does not ship)."""
    applied = _applied(conn)
    states = []
    shipped = shipped_migrations()
    for migration in shipped:
        record = applied.get(migration.version)
        if record is None:
            states.append(MigrationState(migration.version, migration.name, "pending", None))
        else:
            state = "applied" if record[0] == migration.checksum else "modified"
            states.append(MigrationState(migration.version, migration.name, state, record[1]))
    known = {m.version for m in shipped}
    for version in sorted(set(applied) - known):
        states.append(MigrationState(version, "?", "unknown", applied[version][1]))
    return states


def upgrade(conn: psycopg.Connection[tuple[object, ...]]) -> list[Migration]:
    """Apply pending migrations; return those this call applied. ``conn`` must be autocommit."""
    if not conn.autocommit:
        raise MigrationError("upgrade needs an autocommit connection (it manages transactions)")
    # A statement psycopg prepares stays on the server connection: behind a pooler another
    # client's clashes with it, and the DEALLOCATE ALL psycopg sends after DDL drops theirs.
    threshold, conn.prepare_threshold = conn.prepare_threshold, None
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
                        version INTEGER PRIMARY KEY,
                        name TEXT NOT NULL,
                        checksum TEXT NOT NULL,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
            )
        applied = _applied(conn)
        done: list[Migration] = []
        for migration in shipped_migrations():
            record = applied.get(migration.version)
            if record is not None:
                _require_unchanged(migration, record[0])
            elif _apply(conn, migration):
                done.append(migration)
        return done
    finally:
        conn.prepare_threshold = threshold


def _require_unchanged(migration: Migration, checksum: str) -> None:
    if checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.label} was changed after it was applied "
            "(checksum differs); restore the file or write a new migration",
            version=migration.version,
        )


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> bool:
    """Apply ``migration`` unless another upgrade has meanwhile; whether this call did."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            # Read under the lock: an upgrade that held it before us may have applied this one.
            row = conn.execute(
                f"SELECT checksum FROM {SCHEMA}.schema_migrations WHERE version = %s",
                (migration.version,),
            ).fetchone()
            if row is not None:
                _require_unchanged(migration, str(row[0]))
                return False
            logger.debug("applying migration %s", migration.label)
            conn.execute(f"SET LOCAL search_path = {SCHEMA}")
            # No parameters: psycopg sends the file as one simple query, many statements allowed.
            conn.execute(migration.sql.encode())
            conn.execute(
                f"INSERT INTO {SCHEMA}.schema_migrations (version, name, checksum)"
                " VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(
            f"migration {migration.label} failed: {' '.join(str(exc).split())}",
            version=migration.version,
        ) from exc
    return True
