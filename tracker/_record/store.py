"""The writer's side of PostgreSQL: one connection, batched idempotent upserts, error triage.

Every write is an upsert guarded by ``seq`` (see ``tracker._record.batch``), so a replayed or late
snapshot never regresses a row. ``task_name`` and ``execution_start`` are never updated (a
trigger forbids it). The connection is a ``tracker._record.link`` link: the small wire client, or
psycopg where only libpq will do. Errors are sorted into two kinds:

* ``Unavailable`` — the database cannot take the write now (down, schema missing or older, no
  rights): the snapshot goes to the spool and is replayed later;
* ``Rejected`` — the database refuses this data for good (a value breaks a check or a
  constraint): logged and dropped, because spooling it would block every later replay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tracker._model.state import Snapshot
from tracker._record.batch import COLUMN_TYPES_SQL, Progress, column_types
from tracker._record.encoder import STATEMENTS, BatchEncoder

if TYPE_CHECKING:
    from tracker._db.dsn import DatabaseTarget
    from tracker._record.link import Link, LinkRefused

logger = logging.getLogger("tracker")

# SQLSTATEs that say "not now" rather than "not this data": connection (08), resources (53),
# operator intervention (57), system (58), rollbacks (40), lock not available (55), read-only
# transaction, login (28), no such database (3D000) or schema (3F000), table, column or
# function (a schema older than this tracker), and missing privileges.
_NOT_NOW_CLASSES = ("08", "53", "57", "58", "40", "55", "28")
_NOT_NOW_STATES = frozenset({"25006", "3D000", "3F000", "42P01", "42703", "42883", "42501"})


class Unavailable(Exception):
    """The database cannot take the write now; spool it."""


class Rejected(Exception):
    """The database refuses this snapshot for good; drop it."""


class Missed(Rejected):
    """A progress update found some rows not as the writer left them: write the batch whole.

    The rest of the batch is in the database (the retry's ``seq`` guard skips it). ``checks``
    name the rows missed: ``Store.forget_ticks`` runs them once nothing else is in flight.
    """

    def __init__(self, message: str, checks: list[tuple[str, list[str]]]) -> None:
        super().__init__(message)
        self.checks = checks


def target_key(target: DatabaseTarget) -> str:
    """A stable name for the database a target reaches, so a spool is replayed only into it."""
    from tracker._db import embedded
    from tracker._db.conninfo import parse_conninfo
    from tracker._db.dsn import connect_params, default_user

    if target.embedded:
        return f"embedded:{embedded.pgdata_dir()}"
    params = {k: str(v) for k, v in parse_conninfo(connect_params(target)).items() if v}
    user = params.get("user") or default_user()
    parts = {
        "host": params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST", ""),
        "port": params.get("port") or os.environ.get("PGPORT", "5432"),
        "dbname": params.get("dbname") or os.environ.get("PGDATABASE") or user,
        "user": user,
    }
    return "postgresql " + " ".join(f"{k}={v}" for k, v in parts.items())


class Pending:
    """A batch sent to the database whose outcome is still to be read, and the row counts its
    progress updates must show: (statement's position, rows, the query naming the rows missed,
    its parameters)."""

    __slots__ = ("checks", "handle", "snapshots")

    def __init__(
        self,
        handle: object,
        snapshots: Sequence[Snapshot],
        checks: list[tuple[int, int, str, list[str]]] | None = None,
    ) -> None:
        self.handle = handle
        self.snapshots = snapshots
        self.checks = checks or []


class Store:
    """One connection to the target database, opened and re-opened on demand."""

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._target: DatabaseTarget | None = None
        self._link: Link | None = None
        # STATEMENTS' text for this connection, and for an update the query naming what it
        # missed.
        self._statements: list[tuple[str, str | None]] = []
        self._schema_warned = False
        self._encoder: BatchEncoder | None = None
        self._ticked = 0
        self.key: str | None = None

    @property
    def ticked(self) -> int:
        """Snapshots sent as progress ticks (``tracker._record.encoder``), over every connection."""
        return self._ticked + (self._encoder.ticked if self._encoder is not None else 0)

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

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
        from tracker._db.connect import ready_target
        from tracker._record.link import LinkDown, LinkRefused, open_link
        from tracker.errors import TrackerError

        try:
            target = ready_target(self._dsn) if self._target.embedded else self._target
            link = open_link(target)
        except (TrackerError, LinkDown) as exc:
            raise Unavailable(str(exc)) from None
        try:
            if target.embedded:
                # A newcomer's first script just works: the embedded server is ours to migrate.
                _migrate_if_behind(link, target)
            elif not _schema_present(link):
                if not self._schema_warned:
                    self._schema_warned = True
                    logger.warning(
                        "the pipetrack tables are missing in %s: run `pipetrack db upgrade`; "
                        "spooling statuses until then",
                        target.redacted,
                    )
                raise Unavailable("schema missing")
            types = column_types(link.query(COLUMN_TYPES_SQL))
            if self._encoder is not None:
                self._ticked += self._encoder.ticked
            self._encoder = BatchEncoder(types)
            self._statements = [
                (
                    statement.statement(types[statement.name], link.placeholder),
                    statement.missed_statement(types[statement.name], link.placeholder)
                    if isinstance(statement, Progress)
                    else None,
                )
                for statement in STATEMENTS
            ]
        except Unavailable:
            link.close()
            raise
        except (TrackerError, LinkDown, LinkRefused, KeyError) as exc:
            link.close()
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        self._link = link
        logger.debug("writer connected to %s (%s)", target.redacted, type(link).__name__)

    def write(self, snapshot: Snapshot) -> None:
        """Upsert one snapshot. Raises Unavailable or Rejected."""
        self.write_many([snapshot])

    def write_many(self, snapshots: Sequence[Snapshot]) -> None:
        """Upsert snapshots in one transaction. Raises Unavailable, or Rejected for the lot.

        After Rejected nothing of the batch is written: write the snapshots one by one to
        find the one the database refuses.
        """
        if snapshots:
            self.settle(self.send(snapshots, full=True))

    def send(self, snapshots: Sequence[Snapshot], *, full: bool = False) -> Pending:
        """Start writing ``snapshots`` in one transaction; ``settle`` tells how it ended.

        Several batches may be sent before the first is settled; settle them in order.
        ``full`` sends every column even of rows known to hold the unchanging ones.
        Raises Unavailable when the batch cannot even be sent.
        """
        from tracker._record.link import LinkDown, LinkRefused

        self.connect()
        link, encoder = self._link, self._encoder
        if link is None or encoder is None:
            raise Unavailable("not connected")
        encoded = encoder.encode(snapshots, full=full)
        statements: list[tuple[str, list[str]]] = []
        checks: list[tuple[int, int, str, list[str]]] = []
        for statement, (sql, missed_sql), params, rows in zip(
            STATEMENTS, self._statements, encoded.parameters(), encoded.rows(), strict=True
        ):
            if params is None:
                continue
            if isinstance(statement, Progress) and missed_sql is not None and rows is not None:
                missed = statement.missed_parameters(params)
                checks.append((len(statements), rows, missed_sql, missed))
            statements.append((sql, params))
        try:
            return Pending(link.send(statements), snapshots, checks)
        except LinkDown as exc:
            self.close()
            raise Unavailable(str(exc)) from None
        except LinkRefused as exc:
            return Pending(exc, snapshots)

    def settle(self, pending: Pending) -> None:
        """Wait for a batch ``send`` started. Raises Unavailable, or Rejected for the lot."""
        from tracker._record.link import LinkDown, LinkRefused

        if isinstance(pending.handle, LinkRefused):
            raise self._triaged(pending.handle)
        link = self._link
        if link is None:
            raise Unavailable("the connection was lost")
        try:
            answer = link.settle(pending.handle)
        except LinkDown as exc:
            self.close()
            raise Unavailable(str(exc)) from None
        except LinkRefused as exc:
            raise self._triaged(exc) from None
        short = [
            (sql, params)
            for position, rows, sql, params in pending.checks
            if answer.counts[position] != rows
        ]
        if short:
            raise Missed("a progress update found rows not as this writer left them", short)
        if self._encoder is not None:
            self._encoder.stored(pending.snapshots)

    def forget_ticks(self, missed: Missed) -> None:
        """Find the rows a progress update missed (nothing else may be in flight): their runs
        are written whole from now on. Raises Unavailable."""
        from tracker._record.link import LinkDown, LinkRefused

        self.connect()
        link = self._link
        if link is None or self._encoder is None:
            raise Unavailable("not connected")
        run_ids: set[str] = set()
        try:
            for sql, params in missed.checks:
                run_ids.update(str(row[0]) for row in link.settle(link.send([(sql, params)])).rows)
        except LinkDown as exc:
            self.close()
            raise Unavailable(str(exc)) from None
        except LinkRefused as exc:
            raise self._triaged(exc) from None
        logger.debug("progress updates missed the rows of %d run(s)", len(run_ids))
        self._encoder.missed(sorted(run_ids))

    def _triaged(self, refused: LinkRefused) -> Unavailable | Rejected:
        state = refused.sqlstate
        if state.startswith(_NOT_NOW_CLASSES) or state in _NOT_NOW_STATES:
            # The connection may be fine, but what it stands on (schema, rights) is not:
            # reconnecting re-checks it.
            self.close()
            return Unavailable(str(refused))
        return Rejected(str(refused))

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.close()
            except Exception:
                logger.debug("closing the writer's connection failed", exc_info=True)


def _truth(value: object) -> bool:
    """A boolean column's value from either link (psycopg: bool; wire: 't' or 'f')."""
    return value is True or value == "t"


def _schema_present(link: Link) -> bool:
    rows = link.query(
        "SELECT to_regclass('pipetrack.pipeline_status') IS NOT NULL"
        " AND to_regclass('pipetrack.pipeline_subtask') IS NOT NULL"
    )
    return bool(rows) and _truth(rows[0][0])


def _migrate_if_behind(link: Link, target: DatabaseTarget) -> None:
    """Bring the embedded database's schema up to this version's, with psycopg, if behind.

    Most processes find it current, and never load psycopg for it.
    """
    from tracker._db import migrate
    from tracker._db.connect import connect

    rows = link.query("SELECT to_regclass('pipetrack.schema_migrations') IS NOT NULL")
    applied = 0
    if rows and _truth(rows[0][0]):
        applied = int(link.query("SELECT coalesce(max(version), 0) FROM schema_migrations")[0][0])
    if applied >= max(m.version for m in migrate.shipped_migrations()):
        return
    with connect(target) as conn:
        migrate.upgrade(conn)
