"""The monitor's connections: a small pool of read-only sessions, as the exporter reads.

Each request borrows a connection for its few statements. Sessions are read-only at the server
(``default_transaction_read_only``), each transaction one REPEATABLE READ snapshot, each
statement bounded by ``statement_timeout``; connect and TCP timeouts are the exporter's
(exporter/_database.py). A database that is down at start is no reason not to serve: pages
answer 503 saying so until it is back, and a connection found broken is replaced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from exporter._database import exporter_target
from tracker._db.connect import session_options
from tracker._db.dsn import DatabaseTarget, connect_params

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("monitor")

DEFAULT_STATEMENT_TIMEOUT = 5.0
POOL_SIZE = 4  # a browser opens up to six connections; pages need one each, briefly


class Unavailable(Exception):
    """The database could not be read; the message is safe to show (passwords masked)."""


class MonitorDatabase:
    """Borrowed read-only connections to ``target``; ``close()`` ends them all."""

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        pool_size: int = POOL_SIZE,
    ) -> None:
        from psycopg.conninfo import conninfo_to_dict
        from psycopg_pool import ConnectionPool

        tuned = exporter_target(
            target, statement_timeout=statement_timeout, application_name="pipetrack-monitor"
        )
        self._target = tuned
        settings = (
            f"-c statement_timeout={max(1, round(statement_timeout * 1000))}"
            " -c default_transaction_read_only=on"
            " -c default_transaction_isolation=repeatable\\ read"
        )
        theirs = conninfo_to_dict(tuned.conninfo).get("options") if tuned.conninfo else None
        options = session_options(str(theirs) if theirs else None, settings)
        conninfo = connect_params(tuned)
        self._wait = float(str(conninfo_to_dict(conninfo).get("connect_timeout") or 3)) + 1.0
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            kwargs={"autocommit": True, "options": options},
            min_size=1,
            max_size=pool_size,
            open=False,
            check=ConnectionPool.check_connection,
            timeout=self._wait,
            name="pipetrack-monitor",
        )
        self._opened = False
        self._lock = threading.Lock()

    @property
    def redacted(self) -> str:
        return self._target.redacted

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one read-only transaction; Unavailable if there is none."""
        import psycopg
        from psycopg_pool import PoolTimeout

        with self._lock:
            if not self._opened:  # at the first page asked for: an exporter nobody browses
                self._pool.open(wait=False)  # holds no connection for the monitor
                self._opened = True
        try:
            with self._pool.connection(timeout=self._wait) as conn, conn.transaction():
                yield conn
        except PoolTimeout:
            raise Unavailable(f"cannot connect to {self.redacted}") from None
        except psycopg.errors.QueryCanceled:  # the statement timeout
            raise Unavailable("the database took too long to answer") from None
        except psycopg.OperationalError as exc:
            reason = self._target.redact(" ".join(str(exc).split()) or type(exc).__name__)
            raise Unavailable(f"reading {self.redacted} failed: {reason}") from None

    def close(self) -> None:
        with self._lock:
            self._opened = True  # a page asked for after closing finds the pool closed
            self._pool.close()
