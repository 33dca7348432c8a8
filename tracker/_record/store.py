"""The writer's side of PostgreSQL: one psycopg connection, pipelined batches, error triage.

Every write is an upsert guarded by ``seq`` (``tracker._record.statements``), so a replayed or
late snapshot never regresses a row. A cycle's batches go out in psycopg's pipeline mode, one
after the other without waiting: the writer takes the next batch's snapshots while the server
applies the one before, and the cycle waits once, at its end (the pipeline's sync). The
statements of one sync form one implicit transaction, which begins by setting its own
statement timeout and plan mode (``SET LOCAL``, as ``set_config(…, true)``): nothing of the
session is relied on, so a transaction-pooling proxy may hand each cycle another server
connection. Errors are sorted into two kinds:

* ``Unavailable`` — the database cannot take the write now (down, schema missing or older, no
  rights): the snapshots go to the spool and are replayed later;
* ``Rejected`` — the database refuses this data for good (a value breaks a check or a
  constraint): the writer retries the batches one at a time, then the snapshots one by one,
  so that only what the database refuses is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from tracker._model.snapshot import Snapshot
from tracker._record.statements import SCHEMA, Known, batch_statements

if TYPE_CHECKING:
    import psycopg

    from tracker._db.dsn import DatabaseTarget

logger = logging.getLogger("tracker")

# Bounds a statement, and (tcp_user_timeout) unacknowledged data on a half-open TCP connection,
# which would otherwise block the writer until the kernel gives up (about 15 minutes). Past
# it, the batch goes to the spool.
STATEMENT_TIMEOUT = 30.0
# Set at the start of every transaction. The writer runs the same two statements over and over,
# a few hundred rows at a time, always by index: a custom plan would be re-planned at every batch
# (about 1 ms each) and, with stale statistics on a table that grew, may hash the whole table.
_TRANSACTION_SETTINGS = (
    "SELECT set_config('statement_timeout', %s, true),"
    " set_config('plan_cache_mode', 'force_generic_plan', true)"
)

# SQLSTATEs that say "not now" rather than "not this data": connection (08), resources (53),
# operator intervention (57), system (58), rollbacks (40), lock not available (55), read-only
# transaction, login (28), no such database (3D000) or schema (3F000), table, column or
# function (a schema older than this tracker), and missing privileges.
_NOT_NOW_CLASSES = ("08", "53", "57", "58", "40", "55", "28")
_NOT_NOW_STATES = frozenset({"25006", "3D000", "3F000", "42P01", "42703", "42883", "42501"})


class Unavailable(Exception):
    """The database cannot take the write now; spool it."""


class Rejected(Exception):
    """The database refuses this data for good; nothing of the transaction was written."""


class Send(Protocol):
    def __call__(self, snapshots: Sequence[Snapshot]) -> None: ...


def target_key(target: DatabaseTarget) -> str:
    """A stable name for the database a target reaches, so a spool is replayed only into it."""
    from psycopg.conninfo import conninfo_to_dict

    from tracker._db import embedded
    from tracker._db.dsn import connect_params, default_user

    if target.embedded:
        return f"embedded:{embedded.pgdata_dir()}"
    import os

    params = {k: str(v) for k, v in conninfo_to_dict(connect_params(target)).items() if v}
    user = params.get("user") or default_user()
    parts = {
        "host": params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", ""),
        "port": params.get("port") or os.environ.get("PGPORT", "5432"),
        "dbname": params.get("dbname") or os.environ.get("PGDATABASE") or user,
        "user": user,
    }
    return "postgresql " + " ".join(f"{k}={v}" for k, v in parts.items())


class Store:
    """One connection to the target database, opened and re-opened on demand.

    ``prepare``: use prepared statements (psycopg prepares the upserts at their first run).
    Off for a proxy that cannot carry them (PgBouncer before 1.21 in transaction mode).
    """

    def __init__(self, dsn: str | None, *, prepare: bool = True) -> None:
        self._dsn = dsn
        self._prepare = prepare
        self._target: DatabaseTarget | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._known = Known()
        self._schema_warned = False
        self.key: str | None = None

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    @property
    def socket_fd(self) -> int | None:
        """The connection's socket, which the resource sampler leaves out of the process's
        connections (read from other threads too: a closing connection just says None)."""
        conn = self._conn
        try:
            return None if conn is None or conn.closed else int(conn.pgconn.socket)
        except Exception:
            return None

    @property
    def conninfo(self) -> str | None:
        """The resolved target's connection string (None before ``resolve``, or unusable): the
        sampler counts the connections to it as database connections."""
        return None if self._target is None else self._target.conninfo

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
        import psycopg

        from tracker._db.connect import connect
        from tracker._db.ready import ready_target, upgrade_if_behind
        from tracker.errors import TrackerError

        try:
            target = ready_target(self._dsn) if self._target.embedded else self._target
            conn = connect(target, search_path=False, tcp_user_timeout=STATEMENT_TIMEOUT)
        except TrackerError as exc:
            raise Unavailable(str(exc)) from None
        except psycopg.Error as exc:  # (bringing the embedded schema up to date)
            raise Unavailable(f"{type(exc).__name__}: {_one_line(str(exc))}") from None
        try:
            # Only the upserts are prepared (at their first run), and only when asked: these
            # checks and the settings statement never are (prepare=False).
            conn.prepare_threshold = 0 if self._prepare else None
            if target.embedded:
                # A newcomer's first script just works: the embedded server is ours to migrate
                # (checked at every connection: it may have been made anew meanwhile).
                upgrade_if_behind(target, conn)
            elif not _schema_present(conn):
                if not self._schema_warned:
                    self._schema_warned = True
                    logger.warning(
                        "the pipetrack tables are missing in %s: run `pipetrack db upgrade`; "
                        "spooling statuses until then",
                        target.redacted,
                    )
                raise Unavailable("schema missing")
        except Unavailable:
            conn.close()
            raise
        except (TrackerError, psycopg.Error) as exc:
            conn.close()
            raise Unavailable(f"{type(exc).__name__}: {_one_line(str(exc))}") from None
        self._conn = conn
        logger.debug("writer connected to %s", target.redacted)

    def write(self, snapshot: Snapshot) -> None:
        """Upsert one snapshot. Raises Unavailable or Rejected."""
        self.write_many([snapshot])

    def write_many(self, snapshots: Sequence[Snapshot]) -> None:
        """Upsert snapshots in one transaction. Raises Unavailable, or Rejected for the lot."""
        if snapshots:
            with self.pipelined() as send:
                send(snapshots)

    @contextmanager
    def pipelined(self) -> Iterator[Send]:
        """Send batches (``send(snapshots)``) without waiting for the server; on leaving, wait
        for them all, in one transaction. Raises Unavailable, or Rejected for the lot (a batch
        the database refused: nothing of the transaction was written).

        ``send`` never raises: a failure is kept and reported on leaving, so the caller's loop
        always hands over every batch it took. A connection kept from an earlier transaction
        may have died meanwhile (a server restart, an idle timeout, a pooler): then the batches
        go once more, on a new connection, before the database is called unavailable.
        """
        kept = self.connected
        self.connect()
        sent: list[Sequence[Snapshot]] = []
        transaction = self._begin()

        def send(snapshots: Sequence[Snapshot]) -> None:
            sent.append(snapshots)
            transaction.send(snapshots)

        try:
            yield send
        except BaseException:
            transaction.abandon()
            raise
        error = transaction.finish()
        if error is not None and self._prepare and _lost_prepared_statement(error):
            # A transaction-pooling proxy (PgBouncer before 1.21) hands each transaction any
            # server connection: a statement prepared on one is missing on the next.
            logger.warning(
                "prepared statements do not last between this writer's transactions (a "
                "transaction-pooling proxy?): writing without them from now on; set "
                "PIPETRACK_PREPARE=off to say so"
            )
            self._prepare = False
            kept = True  # go again, on a new connection
        elif error is not None and kept and self._lost_connection(error):
            logger.debug("the writer's connection was found dead (%s); reconnecting", error)
        else:
            kept = False
        if kept:
            self.close()
            self.connect()
            transaction = self._begin()
            for snapshots in sent:
                transaction.send(snapshots)
            error = transaction.finish()
        if error is not None:
            raise self._triaged(error)
        self._stored(sent, transaction.missed)

    def _stored(self, sent: list[Sequence[Snapshot]], missed: set[str]) -> None:
        """The transaction of ``sent`` is in. Rows its state updates missed (gone, or changed
        by someone else: the reaper) are written again whole, now. Raises Unavailable or
        Rejected."""
        everything = [s for snapshots in sent for s in snapshots]
        self._known.stored(everything)
        if not missed:
            return
        logger.debug("%d run(s) not as this writer left them; writing them whole", len(missed))
        for run_id in missed:
            self._known.forget(run_id)
        again = [s for s in everything if s.run_id in missed]
        transaction = self._begin()
        transaction.send(again)
        error = transaction.finish()
        if error is not None:
            raise self._triaged(error)
        self._known.stored(again)

    def _begin(self) -> _Transaction:
        if self._conn is None:
            raise Unavailable("not connected")
        return _Transaction(self._conn, self._known)

    def _lost_connection(self, error: Exception) -> bool:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return True
        state = getattr(error, "sqlstate", None)
        return state is not None and state.startswith(("08", "57P"))

    def _triaged(self, exc: Exception) -> Unavailable | Rejected:
        conn = self._conn
        message = _one_line(str(exc))
        state = getattr(exc, "sqlstate", None)
        if conn is None or conn.closed or conn.broken or (state is None and _is_link(exc)):
            self.close()
            return Unavailable(message)
        if state is not None and (state.startswith(_NOT_NOW_CLASSES) or state in _NOT_NOW_STATES):
            # The connection may be fine, but what it stands on (schema, rights) is not:
            # reconnecting re-checks it.
            self.close()
            return Unavailable(message)
        return Rejected(message)

    def close(self) -> None:
        """Let the connection go; the next write opens another."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the writer's connection failed", exc_info=True)


def _lost_prepared_statement(error: Exception) -> bool:
    """The server has no prepared statement of that name, or one by that name already."""
    return getattr(error, "sqlstate", None) in ("26000", "42P05")


def _is_link(exc: Exception) -> bool:
    """An error of the connection itself (no SQLSTATE: the server never answered)."""
    import psycopg

    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _schema_present(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        f"SELECT to_regclass('{SCHEMA}.pipeline_status') IS NOT NULL"
        f" AND to_regclass('{SCHEMA}.pipeline_subtask') IS NOT NULL",
        prepare=False,
    ).fetchone()
    return bool(row and row[0])


class _Transaction:
    """One pipelined transaction: statements go out as they come; ``finish`` waits for them
    (psycopg's pipeline sync) and says what failed first, if anything did."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], known: Known) -> None:
        self.error: Exception | None = None
        self._conn = conn
        self._known = known
        self._pipeline = conn.pipeline()
        self._pipeline.__enter__()
        self._cursor = conn.cursor()
        # Cursors of the state updates, whose rows (read once the pipeline is synced) name the
        # rows they missed.
        self._checked: list[psycopg.Cursor[tuple[object, ...]]] = []
        self.missed: set[str] = set()
        self._execute(_TRANSACTION_SETTINGS, [f"{int(STATEMENT_TIMEOUT * 1000)}ms"], prepare=False)

    def send(self, snapshots: Sequence[Snapshot]) -> None:
        if self.error is None:
            try:
                statements = batch_statements(snapshots, self._known)
            except (TypeError, ValueError) as exc:  # rows no writer makes (a foreign spool)
                self.error = exc
                return
            for sql, params, checked in statements:
                cursor = self._conn.cursor() if checked else self._cursor
                if checked:
                    self._checked.append(cursor)
                self._execute(sql, params, prepare=None, cursor=cursor)

    def _execute(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        prepare: bool | None,
        cursor: psycopg.Cursor[tuple[object, ...]] | None = None,
    ) -> None:
        import psycopg

        if self.error is not None:
            return  # the server skips the rest until the sync anyway
        try:
            (cursor or self._cursor).execute(sql, params, prepare=prepare)
        except (psycopg.Error, TypeError, ValueError) as exc:
            self.error = exc

    def finish(self) -> Exception | None:
        import psycopg

        try:
            self._pipeline.__exit__(None, None, None)
            if self.error is None:
                for cursor in self._checked:
                    self.missed.update(str(row[0]) for row in cursor.fetchall())
        except psycopg.Error as exc:
            self.error = self.error or exc
        self._close_cursor()
        return self.error

    def abandon(self) -> None:
        """The caller failed midway: end the pipeline (what went out is committed or not, as
        the database decides; replays are idempotent)."""
        try:
            self._pipeline.__exit__(None, None, None)
        except Exception:
            logger.debug("ending an abandoned pipeline failed", exc_info=True)
        self._close_cursor()

    def _close_cursor(self) -> None:
        for cursor in (self._cursor, *self._checked):
            try:
                cursor.close()
            except Exception:
                logger.debug("closing the writer's cursor failed", exc_info=True)
