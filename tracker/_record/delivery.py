"""Getting snapshots into the database, or else into the spool: the writer thread's export.

1. if the database is in back-off after a failure, append the snapshots to the spool;
2. otherwise connect if needed; on each (re)connect first replay the spool, oldest first;
3. send the batches pipelined (``Store.pipelined``: each taken while the server applies the one
   before) and wait once; on ``Unavailable`` spool them all and back off; on ``Rejected``
   write each batch alone, then the snapshots of a refused batch one by one, and log and drop
   only the one the database refuses.

Every snapshot leaves by ``on_out`` once it is written, spooled or dropped, so the writer knows
which runs are done with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from tracker._model.snapshot import Snapshot
from tracker._settings import TrackerSettings

if TYPE_CHECKING:
    from tracker._record.spool import Spool
    from tracker._record.store import Store

logger = logging.getLogger("tracker")

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 2.0  # a database back from an outage is written to within 2 s
# Batches sent before waiting for the database (one transaction). Bounds what one refused row
# sends back for a retry and what an outage leaves to spool.
BATCHES_PER_SYNC = 16


class Delivery:
    """Writes batches of snapshots for one writer; see the module docstring."""

    def __init__(self, settings: TrackerSettings, on_out: Callable[[list[Snapshot]], None]) -> None:
        self._settings = settings
        self._on_out = on_out
        # Reentrant: the signal handler lends it to the signal worker (tracker._runtime.handoff).
        self.lock = threading.RLock()
        self._store: Store | None = None
        self._spool: Spool | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self._replay_due = True
        self._spool_pending = False
        # Batches taken but not yet written or spooled. Each snapshot carries subtask rows that
        # no later snapshot repeats, so a stuck export at exit must spool these too (see
        # spool_all). A batch leaves once written: a cycle's thousands of snapshots do not all
        # live to its end, where the garbage collector would have to walk them.
        self._in_flight: list[list[Snapshot]] = []
        self.rejected = 0
        self.written = 0
        self.spooled = 0

    @property
    def retry_due(self) -> bool:
        """Something was spooled and the back-off is over: time to try the database again."""
        return self._spool_pending and time.monotonic() >= self._retry_at

    @property
    def connected(self) -> bool:
        """Whether a database connection is held now."""
        return self._store is not None and self._store.connected

    @property
    def dropped(self) -> int:
        """Snapshots the spool could not keep (its size cap)."""
        return self._spool.dropped if self._spool is not None else 0

    def prepare(self) -> None:
        """Load the store and spool and name the spool's database now, on the calling thread:
        spooling from the signal worker must import nothing (tracker._runtime.lifecycle). Naming
        a configured DSN's database loads psycopg's connection-string parser."""
        store, _ = self._stores()
        store.resolve()

    def close_connection(self) -> None:
        """Let the database connection go until the next write (an idle writer)."""
        with self.lock:
            if self._store is not None and self._store.connected:
                logger.debug("closing the writer's idle connection")
                self._store.close()

    def own_fds(self) -> set[int]:
        """This writer's socket to the database (the resource sampler leaves it out)."""
        store = self._store
        fd = None if store is None else store.socket_fd
        return set() if fd is None else {fd}

    def conninfo(self) -> str | None:
        """The database the writer writes to, once resolved."""
        store = self._store
        return None if store is None else store.conninfo

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        if self._spool is not None:
            self._spool.rotate()

    def _stores(self) -> tuple[Store, Spool]:
        if self._store is None or self._spool is None:
            from tracker._record.spool import Spool
            from tracker._record.store import Store

            self._store = Store(self._settings.dsn, prepare=self._settings.prepare)
            self._spool = Spool(
                self._settings.resolved_spool_dir(), max_bytes=self._settings.spool_max_bytes
            )
        return self._store, self._spool

    def _taking(self, batches: Iterator[list[Snapshot]]) -> Iterator[list[Snapshot]]:
        """``batches``, each held in ``_in_flight`` from when it is taken until it lands."""
        for batch in batches:
            self._in_flight = [*self._in_flight, batch]
            yield batch

    def _landed(self, batch: list[Snapshot]) -> None:
        """``batch`` is written (or dropped): no longer in flight. Replaced, not changed in
        place, for ``_emergency_spool`` on another thread."""
        self._in_flight = [b for b in self._in_flight if b is not batch]

    def deliver(self, batches: Iterator[list[Snapshot]]) -> None:
        """Write ``batches`` (taken one at a time, as they are sent), or spool them."""
        with self.lock:
            try:
                self._deliver(batches)
            except Exception:
                # A bug of ours must not cost a status: what was taken goes to the spool.
                logger.exception("pipetrack could not write a batch; spooling it")
                held = [s for batch in self._in_flight for s in batch]
                self._to_spool(self._stores()[0].resolve(), held)
            finally:
                self._in_flight = []

    def _deliver(self, batches: Iterator[list[Snapshot]]) -> None:
        from tracker._record.store import Unavailable

        store, spool = self._stores()
        key = store.resolve()
        if time.monotonic() < self._retry_at:
            self._to_spool(key, [s for batch in batches for s in batch])
            return
        batches = self._taking(batches)
        try:
            store.connect()
            if self._replay_due:
                self._replay(store, spool, key)
            while self._send_some(store, batches):
                pass
        except Unavailable as exc:
            self._went_down(str(exc))
            # What was taken and not written yet (the batches in flight), then the rest.
            held = [s for batch in self._in_flight for s in batch]
            self._to_spool(key, held + [s for batch in batches for s in batch])
            self._in_flight = []
            return
        self._backoff = BACKOFF_FIRST

    def _send_some(self, store: Store, batches: Iterator[list[Snapshot]]) -> bool:
        """Send up to BATCHES_PER_SYNC batches pipelined and wait for them; True if there may
        be more. Raises Unavailable, leaving what is not written in ``_in_flight``."""
        from tracker._record.store import Rejected

        sent: list[list[Snapshot]] = []
        try:
            with store.pipelined() as send:
                for batch in batches:
                    sent.append(batch)
                    send(batch)
                    if len(sent) == BATCHES_PER_SYNC:
                        break
        except Rejected as exc:
            logger.debug("%d batch(es) refused (%s); writing each alone", len(sent), exc)
            for batch in sent:
                self._write_whole(store, batch)
        else:
            for batch in sent:
                self.written += len(batch)
                self._on_out(batch)
                self._landed(batch)
        return len(sent) == BATCHES_PER_SYNC

    def _replay(self, store: Store, spool: Spool, key: str) -> None:
        """Replay the spool before this process's own statuses. Raises Unavailable only: any
        other failure is logged and the own statuses are written all the same, because old
        data must never stop new data (the spool sets bad files aside by itself; this guards
        against what it cannot foresee, e.g. a folder that cannot be listed)."""
        from tracker._record.store import Unavailable

        try:
            result = spool.replay(key, store.write)
        except Unavailable:
            raise
        except Exception as exc:
            logger.warning(
                "pipetrack cannot replay the spool in %s (%s); writing new statuses anyway",
                spool.directory,
                exc,
            )
            logger.debug("spool replay failed", exc_info=True)
            # Tried again on the next reconnect, not on every cycle.
            self._replay_due = self._spool_pending = False
            return
        if result.unavailable is not None:
            raise Unavailable(result.unavailable)
        self._replay_due = self._spool_pending = False
        if result.replayed:
            logger.info("database reachable; replayed %d spooled snapshot(s)", result.replayed)

    def _write_whole(self, store: Store, batch: list[Snapshot]) -> None:
        """A batch alone, in one transaction, else its snapshots one by one, so that only a
        snapshot the database refuses is lost. Raises Unavailable."""
        from tracker._record.store import Rejected

        try:
            store.write_many(batch)
        except Rejected:
            # Rare: some row breaks a constraint. Alone, the others get in.
            for snapshot in batch:
                self._write_alone(store, snapshot)
        else:
            self.written += len(batch)
            self._on_out(batch)
        self._landed(batch)

    def _write_alone(self, store: Store, snapshot: Snapshot) -> None:
        from tracker._record.store import Rejected

        try:
            store.write(snapshot)
        except Rejected as exc:
            self._rejected(snapshot, str(exc))
            return
        self.written += 1
        self._on_out([snapshot])

    def _rejected(self, snapshot: Snapshot, reason: str) -> None:
        self.rejected += 1
        self._on_out([snapshot])
        logger.warning(
            "the database rejected the status of run %s (seq %d): %s; dropped",
            snapshot.run_id,
            snapshot.seq,
            reason,
        )

    def _went_down(self, reason: str) -> None:
        if self._backoff == BACKOFF_FIRST:
            logger.warning("pipetrack cannot write to the database (%s); spooling", reason)
        else:
            logger.debug("database still unavailable (%s)", reason)
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        # Whatever is spooled from now on must be replayed once it answers again.
        self._replay_due = True

    def _to_spool(self, key: str, snapshots: list[Snapshot]) -> None:
        _, spool = self._stores()
        spool.append(key, snapshots)
        self.spooled += len(snapshots)
        self._spool_pending = True
        self._on_out(snapshots)

    def spool_all(
        self,
        final: list[Snapshot],
        *,
        durable: bool = True,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """At exit, when the writer thread is stuck (e.g. connecting): spool what it holds and
        the ``final`` states from the calling thread (``Spool.append`` says what ``durable``
        and ``say`` are for)."""
        store, spool = self._stores()
        key = store.resolve()
        # What the stuck thread holds first (older seqs), then the final states; replay is
        # idempotent, so a snapshot the thread also manages to write does no harm.
        held = [snapshot for batch in self._in_flight for snapshot in batch]
        snapshots = [*held, *final]
        if snapshots:
            spool.append(key, snapshots, durable=durable, say=say)
            self.spooled += len(snapshots)
            self._on_out(snapshots)
        # Release the file's lock now, so that it can be replayed even before this process ends.
        spool.rotate()
