"""The exporter's reaper: marks lost runs FAILED every few seconds, beside the scrapes.

Its own daemon thread and its own autocommit connection, so a slow or stuck reap never delays
a scrape. ``tracker._ops.reaper.reap_if_leader`` takes an advisory lock, so of several exporters
on one database one acts per round. Marking runs needs UPDATE on pipeline_status, which the
read-only role (pipetrack_reader) lacks: give the reaper a writer's DSN (``--reap-dsn``), else
it checks its rights once, logs one warning and stops, and the exporter serves on.

After an outage, trackers need a moment to heartbeat again (they replay what they spooled), so
their runs look silent although they live. The reaper therefore reaps nothing for ``settle``
seconds (default: the stale threshold) after its own connection comes back from a failure, nor
while the database server itself has been up for less than that (a restarted server).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from tracker._db.dsn import DatabaseTarget

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("exporter")

DEFAULT_REAP_EVERY = 30.0
DEFAULT_STALE_AFTER = 60.0  # four 15 s heartbeats, as tracker._ops.reaper
# A reap touches a few rows; anything slower than this is a database in trouble.
_STATEMENT_TIMEOUT_MS = 30_000


class Reaper:
    """Runs ``reap_if_leader`` every ``every`` seconds until ``shutdown``."""

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        every: float = DEFAULT_REAP_EVERY,
        stale_after: float = DEFAULT_STALE_AFTER,
        settle: float | None = None,
    ) -> None:
        self._target = target
        self._every = every
        self._stale_after = timedelta(seconds=stale_after)
        self._settle = stale_after if settle is None else settle
        self._failed = False
        self._hold_until = -float("inf")  # time.monotonic() before which nothing is reaped
        self.last_round = "none"
        """What the last round did: reaped, not leader, settling, failed or disabled."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._reaped = 0
        self._rounds = 0
        self._last_error: str | None = None
        self.disabled: str | None = None
        """Why the reaper stopped for good (no rights to mark runs), else None."""
        self._thread = threading.Thread(target=self._loop, name="pipetrack-exporter-reaper")
        self._thread.daemon = True

    @property
    def reaped(self) -> int:
        """Runs this reaper marked FAILED since it started."""
        with self._lock:
            return self._reaped

    @property
    def rounds(self) -> int:
        """Rounds finished (acted, skipped for another leader, or failed)."""
        with self._lock:
            return self._rounds

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Start the next round now rather than at the end of the interval."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reap_now()
            except Exception:
                logger.exception("reaper round failed")  # never let the thread die
            with self._lock:
                self._rounds += 1
            if self.disabled is not None:
                return
            self._wake.wait(self._every)
            self._wake.clear()
        self._close()

    def reap_now(self) -> int | None:
        """One round: runs reaped, or None when another reaper led or the round failed."""
        import psycopg

        if self.disabled is not None:
            self.last_round = "disabled"
            return None
        try:
            reaped = self._round()
        except psycopg.Error as exc:
            message = self._target.redact(" ".join(str(exc).split()) or type(exc).__name__)
            self._failure(message)
            self._close()
            return None
        except Exception as exc:  # DatabaseUnavailable: already redacted
            self._failure(str(exc))
            return None
        self._last_error = None
        if reaped is not None:
            with self._lock:
                self._reaped += reaped
        return reaped

    def _round(self) -> int | None:
        conn = self._connection()
        if conn is None:
            self.last_round = "disabled"
            return None
        if self._failed:
            # Back after a failure: give trackers time to heartbeat before judging them.
            self._failed = False
            self._hold_until = time.monotonic() + self._settle
        if time.monotonic() < self._hold_until or self._server_is_young(conn):
            self.last_round = "settling"
            return None
        reaped = _reap(conn, self._stale_after)
        self.last_round = "not leader" if reaped is None else "reaped"
        return reaped

    def _failure(self, message: str) -> None:
        if message != self._last_error:
            logger.warning("reaper: %s", message)
        self._last_error = message
        self._failed = True
        self.last_round = "failed"

    def _server_is_young(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Whether the server started less than ``settle`` ago (trackers still reconnecting)."""
        if self._settle <= 0:
            return False
        row = conn.execute(
            "SELECT now() - pg_postmaster_start_time() < %s", (timedelta(seconds=self._settle),)
        ).fetchone()
        return bool(row and row[0])

    def _connection(self) -> psycopg.Connection[tuple[object, ...]] | None:
        from tracker._db.connect import connect

        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = connect(self._target, options=f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}")
        row = conn.execute("SELECT has_table_privilege('pipeline_status', 'UPDATE')").fetchone()
        if not row or not row[0]:
            conn.close()
            self.disabled = (
                f"the role of {self._target.redacted} cannot UPDATE pipeline_status; "
                "lost runs are not reaped (give the exporter --reap-dsn with a writer role)"
            )
            logger.warning("reaper disabled: %s", self.disabled)
            return None
        self._conn = conn
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop the thread (idempotent); False if it did not end within ``timeout``."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._close()
        return True


def _reap(conn: psycopg.Connection[tuple[object, ...]], stale_after: timedelta) -> int | None:
    from tracker._ops.reaper import reap_if_leader

    reaped = reap_if_leader(conn, stale_after=stale_after)
    return None if reaped is None else len(reaped)
