"""The writer's side of PostgreSQL: one connection, idempotent upserts, and error triage.

Every write is an upsert guarded by ``seq`` (``… WHERE pipeline_status.seq < EXCLUDED.seq``), so
a replayed or late snapshot never regresses a row. ``task_name`` and ``execution_start`` are
never updated (a trigger forbids it). Errors are sorted into two kinds:

* ``Unavailable`` — the database cannot take the write now (down, schema missing, no rights):
  the snapshot goes to the spool and is replayed later;
* ``Rejected`` — the database refuses this data for good: logged and dropped, because spooling
  it would block every later replay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tracker._batch import COLUMN_TYPES_SQL, STATUS, SUBTASK, BatchEncoder, column_types
from tracker._model import Snapshot

if TYPE_CHECKING:
    import psycopg

    from tracker._db.dsn import DatabaseTarget

logger = logging.getLogger("tracker")


class Unavailable(Exception):
    """The database cannot take the write now; spool it."""


class Rejected(Exception):
    """The database refuses this snapshot for good; drop it."""


def target_key(target: DatabaseTarget) -> str:
    """A stable name for the database a target reaches, so a spool is replayed only into it."""
    from psycopg.conninfo import conninfo_to_dict

    from tracker._db import embedded
    from tracker._db.dsn import connect_params

    if target.embedded:
        return f"embedded:{embedded.pgdata_dir()}"
    params = {k: str(v) for k, v in conninfo_to_dict(connect_params(target)).items() if v}
    user = params.get("user") or os.environ.get("PGUSER") or _os_user()
    parts = {
        "host": params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", ""),
        "port": params.get("port") or os.environ.get("PGPORT", "5432"),
        "dbname": params.get("dbname") or os.environ.get("PGDATABASE") or user,
        "user": user,
    }
    return "postgresql " + " ".join(f"{k}={v}" for k, v in parts.items())


def _os_user() -> str:
    from tracker._context import user_name

    return user_name() or ""


class Pending:
    """A batch sent to the database whose outcome is still to be read."""

    __slots__ = ("error",)

    def __init__(self, error: Rejected | None) -> None:
        self.error = error


class Store:
    """One connection to the target database, opened and re-opened on demand."""

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._target: DatabaseTarget | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._schema_warned = False
        self._encoder = BatchEncoder()
        self._statements: tuple[str, str] | None = None
        self.key: str | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def resolve(self) -> str:
        """Resolve the target (without starting anything) and return its spool key."""
        if self.key is None:
            from tracker._db.dsn import resolve_target
            from tracker.errors import ConfigurationError

            try:
                self._target = resolve_target(self._dsn)
                self.key = target_key(self._target)
            except ConfigurationError as exc:
                logger.warning("cannot use the configured database: %s; spooling", exc)
                self.key = "unusable"
        return self.key

    def connect(self) -> None:
        """Open the connection (starting and migrating the embedded server if it is the target).

        Raises Unavailable.
        """
        if self.connected:
            return
        self.close()
        self.resolve()
        if self._target is None:
            raise Unavailable("the configured database cannot be used")
        from tracker._db import migrate
        from tracker._db.connect import connect, ready_target
        from tracker.errors import TrackerError

        try:
            target = ready_target(self._dsn) if self._target.embedded else self._target
            conn = connect(target)
        except TrackerError as exc:
            raise Unavailable(str(exc)) from None
        try:
            if target.embedded:
                # A newcomer's first script just works: the embedded server is ours to migrate.
                migrate.upgrade(conn)
            elif not _schema_present(conn):
                if not self._schema_warned:
                    self._schema_warned = True
                    logger.warning(
                        "the pipetrack tables are missing in %s: run `pipetrack db upgrade`; "
                        "spooling statuses until then",
                        target.redacted,
                    )
                conn.close()
                raise Unavailable("schema missing")
        except TrackerError as exc:
            conn.close()
            raise Unavailable(str(exc)) from None
        except Unavailable:
            raise
        except Exception as exc:
            conn.close()
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        self._conn = conn
        logger.debug("writer connected to %s", target.redacted)

    def write(self, snapshot: Snapshot) -> None:
        """Upsert one snapshot. Raises Unavailable or Rejected."""
        self.write_many([snapshot])

    def send(self, snapshots: Sequence[Snapshot]) -> Pending:
        """Start writing ``snapshots`` in one transaction; ``settle`` tells how it ended.

        Raises Unavailable when it cannot even start.
        """
        try:
            self.write_many(snapshots)
        except Rejected as exc:
            return Pending(exc)
        return Pending(None)

    def settle(self, pending: Pending) -> None:
        """Wait for a batch ``send`` started. Raises Unavailable, or Rejected for the lot."""
        if pending.error is not None:
            raise pending.error

    def write_many(self, snapshots: Sequence[Snapshot]) -> None:
        """Upsert snapshots in one transaction. Raises Unavailable, or Rejected for the lot.

        After Rejected nothing of the batch is written: write the snapshots one by one to
        find the one the database refuses.
        """
        if not snapshots:
            return
        self.connect()
        conn = self._conn
        if conn is None:
            raise Unavailable("not connected")
        import psycopg

        statuses, subtasks = self._encoder.encode(snapshots)
        try:
            upsert_status, upsert_subtask = self._prepared(conn)
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(upsert_status, statuses)
                if subtasks is not None:
                    cur.execute(upsert_subtask, subtasks)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise Unavailable(" ".join(str(exc).split())) from None
        except (
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedColumn,
            psycopg.errors.InvalidSchemaName,
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.ReadOnlySqlTransaction,
        ) as exc:
            self.close()
            raise Unavailable(" ".join(str(exc).split())) from None
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                self.close()
                raise Unavailable(" ".join(str(exc).split())) from None
            raise Rejected(" ".join(str(exc).split())) from exc

    def _prepared(self, conn: psycopg.Connection[tuple[object, ...]]) -> tuple[str, str]:
        """The two upserts, built from the column types this database has."""
        if self._statements is None:
            types = column_types(conn.execute(COLUMN_TYPES_SQL).fetchall())
            self._statements = (
                STATUS.statement(types[STATUS.name], lambda _: "%s"),
                SUBTASK.statement(types[SUBTASK.name], lambda _: "%s"),
            )
        return self._statements

    def close(self) -> None:
        self._statements = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the writer's connection failed", exc_info=True)


def _schema_present(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        "SELECT to_regclass('pipetrack.pipeline_status') IS NOT NULL"
        " AND to_regclass('pipetrack.pipeline_subtask') IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])
