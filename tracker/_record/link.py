"""The writer's connection: pipetrack's small wire client, or psycopg where only libpq will do.

psycopg loads libpq and OpenSSL, about 20 MB of RSS in every tracked process, so the writer
talks to PostgreSQL through ``tracker._db.wire`` and opens a psycopg connection only for a
setting that client cannot honour (a service file, several hosts, GSSAPI, ...). Both links
offer the same calls, and say what went wrong in the same two ways:

* ``LinkDown``: there is no connection (unreachable, refused login, lost, timed out);
* ``LinkRefused``: the server refused a statement; ``sqlstate`` says why.

``send`` starts a batch (one transaction) and ``settle`` waits for its outcome. Over the wire
client several batches can be in flight at once; psycopg's link runs each batch in ``send``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    import psycopg

    from tracker._db.dsn import DatabaseTarget
    from tracker._db.wire import WireConnection

logger = logging.getLogger("tracker")

Statements = Sequence[tuple[str, Sequence[Any]]]


class Answer(NamedTuple):
    """What a batch's statements gave back: how many rows each changed or returned, in order,
    and the rows they returned."""

    counts: list[int]
    rows: list[tuple[Any, ...]]


# Bounds a batch's round trip: a half-open TCP connection would otherwise block the writer
# until the kernel's keepalive gives up (hours). Past it, the batch goes to the spool.
STATEMENT_TIMEOUT = 30.0
# The writer runs two prepared statements over and over, a few hundred rows at a time: always
# by index. A custom plan would be re-planned at every batch (about 1 ms each) and, with stale
# statistics on a table that grew, may hash the whole table for every batch.
WRITER_OPTIONS = "-c plan_cache_mode=force_generic_plan"


class LinkDown(Exception):
    """No connection to the database (any more)."""


class LinkRefused(Exception):
    """The server refused a statement of the batch; nothing of the batch was written."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Link(Protocol):
    """What the writer's Store needs of a connection."""

    def placeholder(self, position: int) -> str: ...
    def send(self, statements: Statements) -> object: ...
    def settle(self, handle: object) -> Answer:
        """Wait for a batch ``send`` started."""
        ...

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...


def open_link(target: DatabaseTarget) -> Link:
    """A connection to ``target`` with pipetrack's schema first on the search path.

    Raises LinkDown (with the password redacted) when the database cannot be reached.
    """
    from tracker._db.connect import session_options
    from tracker._db.conninfo import parse_conninfo
    from tracker._db.dsn import connect_params
    from tracker._db.wire import WireConnection, WireUnavailable, WireUnsupported

    params = parse_conninfo(connect_params(target))
    params["options"] = session_options(params.get("options"), WRITER_OPTIONS)
    try:
        return WireLink(WireConnection.open(params), target.redact)
    except WireUnsupported as exc:
        logger.debug("connecting with psycopg: %s", exc.reason)
    except WireUnavailable as exc:
        reason = target.redact(" ".join(str(exc).split()))
        raise LinkDown(f"cannot connect to {target.redacted}: {reason}") from None
    return PsycopgLink.open(target)


class WireLink:
    """A link over ``tracker._db.wire`` (``$n`` placeholders, batches pipelined)."""

    def __init__(self, conn: WireConnection, redact: Callable[[str], str]) -> None:
        self._conn = conn
        self._redact = redact

    def placeholder(self, position: int) -> str:
        return f"${position}"

    def send(self, statements: Statements) -> object:
        from tracker._db.wire import WireUnavailable

        try:
            return self._conn.send(statements, timeout=STATEMENT_TIMEOUT)
        except WireUnavailable as exc:
            raise LinkDown(self._redact(str(exc))) from None
        except (ValueError, TypeError) as exc:
            # A value the protocol cannot carry (the model cleans text, so: a bug upstream).
            raise LinkRefused(f"cannot send the batch: {exc}", "22000") from None

    def settle(self, handle: object) -> Answer:
        from tracker._db.wire import Sent, ServerError, WireUnavailable

        if not isinstance(handle, Sent):
            raise TypeError(f"not a batch this link sent: {handle!r}")
        rows: list[tuple[str | None, ...]] = []
        counts: list[int] = []
        try:
            self._conn.receive(handle, timeout=STATEMENT_TIMEOUT, rows=rows, counts=counts)
        except ServerError as exc:
            raise LinkRefused(_one_line(self._redact(_described(exc))), exc.sqlstate) from None
        except WireUnavailable as exc:
            raise LinkDown(self._redact(_one_line(str(exc)))) from None
        return Answer(counts, list(rows))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        from tracker._db.wire import ServerError, WireUnavailable

        try:
            return list(self._conn.query(sql, timeout=STATEMENT_TIMEOUT))
        except ServerError as exc:
            raise LinkRefused(_one_line(self._redact(_described(exc))), exc.sqlstate) from None
        except WireUnavailable as exc:
            raise LinkDown(self._redact(_one_line(str(exc)))) from None

    def close(self) -> None:
        self._conn.close()

    @property
    def closed(self) -> bool:
        return self._conn.closed


class PsycopgLink:
    """A link over psycopg (``%s`` placeholders); ``send`` runs the batch to its end."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self._conn = conn

    @classmethod
    def open(cls, target: DatabaseTarget) -> PsycopgLink:
        from tracker._db.connect import connect
        from tracker.errors import DatabaseUnavailable

        try:
            return cls(connect(target, options=WRITER_OPTIONS))
        except DatabaseUnavailable as exc:
            raise LinkDown(str(exc)) from None

    def placeholder(self, position: int) -> str:
        return "%s"

    def send(self, statements: Statements) -> object:
        import psycopg

        answer = Answer([], [])
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                for sql, params in statements:
                    cur.execute(sql, params)
                    answer.counts.append(cur.rowcount)
                    if cur.description is not None:
                        answer.rows.extend(cur.fetchall())
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self._conn.broken or self._conn.closed or exc.sqlstate is None:
                raise LinkDown(_one_line(str(exc))) from None
            return LinkRefused(_one_line(str(exc)), exc.sqlstate)
        except psycopg.Error as exc:
            if self._conn.broken or self._conn.closed:
                raise LinkDown(_one_line(str(exc))) from None
            return LinkRefused(_one_line(str(exc)), exc.sqlstate or "XX000")
        return answer

    def settle(self, handle: object) -> Answer:
        if isinstance(handle, LinkRefused):
            raise handle
        if not isinstance(handle, Answer):
            raise TypeError(f"not a batch this link sent: {handle!r}")
        return handle

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            return list(self._conn.execute(sql).fetchall())
        except psycopg.Error as exc:
            if self._conn.broken or self._conn.closed or exc.sqlstate is None:
                raise LinkDown(_one_line(str(exc))) from None
            raise LinkRefused(_one_line(str(exc)), exc.sqlstate) from None

    def close(self) -> None:
        self._conn.close()

    @property
    def closed(self) -> bool:
        return self._conn.closed or self._conn.broken


def _described(exc: Any) -> str:
    detail = f" DETAIL: {exc.detail}" if getattr(exc, "detail", None) else ""
    return f"{exc.message}{detail}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
