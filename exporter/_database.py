"""The exporter's one long-lived database connection: opened lazily, reopened after an outage.

A read is bounded three ways, so a scrape always gets an answer before Prometheus gives up:
1. connecting: ``connect_timeout`` (3 s unless the DSN or PGCONNECT_TIMEOUT says otherwise);
2. each statement: ``SET LOCAL statement_timeout`` (the server cancels it);
3. a server that never answers at all (a stalled network or pooler): a watchdog shuts the
   socket down a grace period (1 s, or half the statement timeout if shorter) after the
   statement timeout, which fails the read at once.
A read may ask for a shorter statement timeout than the configured one (a scrape with a short
scrape timeout).

A connection kept from an earlier read may have died in between (the server restarted, an
administrator or a pooler ended the session, a network device forgot it): a read that finds it
broken reconnects and tries once more before it reports the database down, so the first scrape
after a restart says what is true now.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

from exporter._queries import ScrapeSnapshot, read_snapshot
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker.errors import DatabaseUnavailable

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("exporter")

DEFAULT_CONNECT_TIMEOUT = 3
WATCHDOG_GRACE_SECONDS = 1.0


class ReadFailed(Exception):
    """A read of the database failed; ``reachable`` says whether the server answered at all."""

    def __init__(self, message: str, *, reachable: bool) -> None:
        super().__init__(message)
        self.reachable = reachable


def exporter_target(
    target: DatabaseTarget,
    *,
    statement_timeout: float,
    application_name: str = "pipetrack-exporter",
) -> DatabaseTarget:
    """``target`` with the exporter's connect timeout, TCP timeouts and application name.

    Settings the DSN (or libpq's environment) already makes are left alone.
    """
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(target.conninfo) if target.conninfo else {}
    extra: dict[str, str] = {}
    if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
        extra["connect_timeout"] = str(DEFAULT_CONNECT_TIMEOUT)
    if "application_name" not in given and not os.environ.get("PGAPPNAME"):
        extra["application_name"] = application_name
    # Data unacknowledged this long means the peer is gone (ignored on Unix sockets).
    if "tcp_user_timeout" not in given:
        extra["tcp_user_timeout"] = str(round((statement_timeout + WATCHDOG_GRACE_SECONDS) * 1000))
    if not extra:
        return target
    return dataclasses.replace(target, conninfo=make_conninfo(target.conninfo, **extra))


class _Stale(Exception):
    """The kept connection turned out dead when a read tried it."""


class DatabaseReader:
    """Reads snapshots over one connection, reconnecting on the next read after a failure, and
    at once (one retry) when the connection kept from the last read is found dead.

    Not thread-safe: the collector serialises reads.
    """

    def __init__(self, target: DatabaseTarget, *, statement_timeout: float) -> None:
        self._target = exporter_target(target, statement_timeout=statement_timeout)
        self._redacted = target.redacted
        self._statement_timeout = statement_timeout
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def read(self, statement_timeout: float | None = None) -> ScrapeSnapshot:
        """One snapshot. Raises ReadFailed (never anything else from the database)."""
        timeout = self._statement_timeout
        if statement_timeout is not None:
            timeout = min(timeout, statement_timeout)
        kept = self._conn is not None and not self._conn.closed
        try:
            return self._read(timeout, retry_if_stale=kept)
        except _Stale as stale:
            logger.debug("the kept database connection was dead (%s); reconnecting", stale)
            return self._read(timeout, retry_if_stale=False)

    def _read(self, timeout: float, *, retry_if_stale: bool) -> ScrapeSnapshot:
        import psycopg

        limit = timeout + min(WATCHDOG_GRACE_SECONDS, timeout / 2)
        conn = self._connection()
        watchdog = _Watchdog(conn, limit)
        try:
            return read_snapshot(conn, timeout)
        except psycopg.Error as exc:
            reason = self._target.redact(" ".join(str(exc).split()) or type(exc).__name__)
            if watchdog.fired:
                reason = f"no answer within {limit:g} s"
            broken = conn.closed or conn.broken or watchdog.fired
            if broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.close()
            # A dead kept connection says nothing about the server now; a stalled one (the
            # watchdog fired) does: that is no stale session, and one wait is enough.
            if broken and retry_if_stale and not watchdog.fired:
                raise _Stale(reason) from None
            raise ReadFailed(reason, reachable=not broken) from None
        finally:
            watchdog.cancel()

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = connect(self._target)
        except DatabaseUnavailable as exc:
            # The collector names the database itself; keep only libpq's reason.
            reason = str(exc).removeprefix(f"cannot connect to {self._target.redacted}: ")
            raise ReadFailed(reason, reachable=False) from None
        # Every read is one consistent, read-only snapshot (see _queries).
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        logger.debug("exporter connected to %s", self._redacted)
        self._conn = conn
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class _Watchdog:
    """Shuts a connection's socket down if the read outlives ``seconds``.

    libpq waits on the socket without a client-side limit; shutting it down makes that wait
    end with an error in the reading thread, which then discards the connection.
    """

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], seconds: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.name = "pipetrack-exporter-watchdog"
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                fd = os.dup(self._conn.pgconn.socket)
            except Exception:  # OSError, or psycopg.OperationalError once the conn is closed
                return
            with socket.socket(fileno=fd) as sock:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    logger.debug("watchdog: socket already shut down")
        logger.warning("database read exceeded its time limit; dropping the connection")

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
