"""The exporter's reaper: marks lost runs FAILED every few seconds, beside the scrapes.

Its own daemon thread and its own autocommit connection, so a slow or stuck reap never delays
a scrape. ``tracker._ops.reaper.reap_if_leader`` takes an advisory lock, so of several exporters
on one database one acts per round. Marking runs needs UPDATE on pipeline_status, which the
read-only role (pipetrack_reader) lacks: give the reaper a writer's DSN (``--reap-dsn``), else
it checks its rights once, logs one warning and stops, and the exporter serves on. Nor can a
hot standby be written: an exporter that reads a replica reaps through ``--reap-dsn`` (the
primary); without it, its reaper takes no lock on the standby and waits, with one warning,
until that database is promoted.

Between rounds, every ``local_every`` seconds (5), it also looks at the runs of its own host that
have missed two heartbeats (``local_after``, 30 s): a run whose pid is gone there (or belongs to
a process started after the run) died, and is marked FAILED then rather than after
``stale_after``. That brings a ``kill -9`` on the exporter's host to a person within two minutes
(prometheus/alertmanager.yml has the sums). Two heartbeats of silence, not none: a tracker in
another pid namespace that shares the host name (a container on the host network) keeps
heartbeating, so it is never taken for dead. The local pass takes no lock: it touches this
host's runs only, and every mark is a compare-and-set.

After an outage, trackers need a moment to heartbeat again (they replay what they spooled), so
their runs look silent although they live. The reaper therefore reaps nothing for ``settle``
seconds (default: the stale threshold) after its own connection comes back from a failure, nor
while the database server itself has been up for less than that (a restarted server).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from tracker._db.dsn import DatabaseTarget

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("exporter")

DEFAULT_REAP_EVERY = 15.0
DEFAULT_STALE_AFTER = 60.0  # four 15 s heartbeats, as tracker._ops.reaper
DEFAULT_LOCAL_AFTER = 30.0  # two 15 s heartbeats: a run of this host whose pid is gone is lost
DEFAULT_LOCAL_EVERY = 5.0
# A reap touches a few rows; anything slower than this is a database in trouble.
_STATEMENT_TIMEOUT_MS = 30_000


class Reaper:
    """Runs ``reap_if_leader`` every ``every`` seconds, and the local pass every
    ``local_every`` seconds, until ``shutdown``."""

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        every: float = DEFAULT_REAP_EVERY,
        stale_after: float = DEFAULT_STALE_AFTER,
        settle: float | None = None,
        local_after: float = DEFAULT_LOCAL_AFTER,
        local_every: float = DEFAULT_LOCAL_EVERY,
    ) -> None:
        self._target = target
        self._every = every
        self._stale_after = timedelta(seconds=stale_after)
        # Never later than the verdict of a full round; 0 turns the local pass off.
        local = min(local_after, stale_after)
        self._local_after = timedelta(seconds=local) if local > 0 else None
        self._local_every = local_every
        self._due = True  # the next pass is a full round
        self._settle = stale_after if settle is None else settle
        self._failed = False
        self._hold_until = -float("inf")  # time.monotonic() before which nothing is reaped
        self.last_round = "none"
        """What the last round did: reaped, not leader, settling, standby, failed or disabled."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._reaped = 0
        self._rounds = 0
        self._last_error: str | None = None
        self._on_standby = False
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
        self._due = True
        self._wake.set()

    def _loop(self) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            full = self._due or time.monotonic() >= next_round
            try:
                if full:
                    self._due = False
                    next_round = time.monotonic() + self._every
                    self.reap_now()
                else:
                    self.reap_local_now()
            except Exception:
                logger.exception("reaper round failed")  # never let the thread die
            if full:
                with self._lock:
                    self._rounds += 1
            if self.disabled is not None:
                return
            wait = max(0.0, next_round - time.monotonic())
            if self._local_after is not None and self._local_every > 0:
                wait = min(wait, self._local_every)
            self._wake.wait(wait)
            self._wake.clear()
        self._close()

    def reap_now(self) -> int | None:
        """One round: runs reaped, or None when another reaper led or the round failed."""
        return self._guarded(self._round)

    def reap_local_now(self) -> int | None:
        """The local pass alone (runs of this host, pid gone); None when it did not look."""
        return self._guarded(self._local_round)

    def _guarded(self, step: Callable[[], int | None]) -> int | None:
        import psycopg

        if self.disabled is not None:
            self.last_round = "disabled"
            return None
        try:
            reaped = step()
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
        conn = self._settled_connection()
        if conn is None:
            return None
        reaped = _reap(conn, self._stale_after)
        self.last_round = "not leader" if reaped is None else "reaped"
        # The leader's round judged every run by stale_after; this host's also by its pids.
        local = self._reap_local(conn)
        return local if reaped is None else reaped + (local or 0)

    def _local_round(self) -> int | None:
        conn = self._settled_connection()
        return None if conn is None else self._reap_local(conn)

    def _reap_local(self, conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
        from tracker._ops.reaper import reap_once

        if self._local_after is None:
            return None
        return len(reap_once(conn, stale_after=self._local_after, only_here=True))

    def _settled_connection(self) -> psycopg.Connection[tuple[object, ...]] | None:
        """The reaper's connection, or None (last_round says why) when it may not judge now."""
        conn = self._connection()
        if conn is None:
            self.last_round = "disabled"
            return None
        if self._is_standby(conn):
            self.last_round = "standby"
            return None
        if self._failed:
            # Back after a failure: give trackers time to heartbeat before judging them.
            self._failed = False
            self._hold_until = time.monotonic() + self._settle
        if time.monotonic() < self._hold_until or self._server_is_young(conn):
            self.last_round = "settling"
            return None
        return conn

    def _is_standby(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Whether ``conn`` reaches a hot standby, where no run can be marked (said once)."""
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        standby = bool(row and row[0])
        if standby and not self._on_standby:
            logger.warning(
                "reaper: %s is a standby (read-only), so lost runs are not reaped here; "
                "give the exporter --reap-dsn with the primary",
                self._target.redacted,
            )
        self._on_standby = standby
        return standby

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
