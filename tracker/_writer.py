"""The writer thread: the only place the tracker talks to PostgreSQL or touches the spool.

Shaped like OpenTelemetry's BatchProcessor: a named daemon thread started on first use; a
condition to wake it early; a lock around export; ``force_flush``
returning whether it finished in time; an idempotent ``shutdown(timeout)`` joining against a
deadline; ``logger.exception`` so the thread never dies. Its locks are reentrant so that the
signal handler can tell whether the main thread it interrupted holds one, and lend it to the
signal worker (see ``tracker._handoff`` and ``signal_locks``).

Each cycle (every flush interval, or at once when a transition wakes it):

1. snapshot every run that changed (latest state wins: one snapshot per run per cycle), plus a
   heartbeat snapshot of every live run when the heartbeat is due (resources sampled first);
2. if the database is in back-off after a failure, append the snapshots to the spool;
3. otherwise connect if needed; on each (re)connect first replay the spool, oldest first;
4. write each snapshot; on ``Unavailable`` spool it and the rest and back off; on ``Rejected``
   log and drop it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tracker._model import TERMINAL, RunCore, Snapshot
from tracker._settings import Settings
from tracker._signals import signals_blocked

if TYPE_CHECKING:
    from tracker._sampling import ResourceSampler
    from tracker._spool import Spool
    from tracker._store import Pending, Store

logger = logging.getLogger("tracker")

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 2.0  # a database back from an outage is written to within 2 s
# Snapshots per transaction: one statement per table whatever the count, yet a batch the
# database refuses is retried one by one, so keep that retry (rare) affordable.
BATCH_SIZE = 250
# Batches in flight at once: the next is built while the database writes the one before.
PIPELINE_DEPTH = 2


class Writer:
    """Writes the runs of one Tracker; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runs: dict[str, RunCore] = {}
        self._runs_lock = threading.RLock()
        self._cond_lock = threading.RLock()
        self._cond = threading.Condition(self._cond_lock)
        self._wake = False
        self._shutdown = False
        self._requested = 0
        self._done = 0
        self._export_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._spool: Spool | None = None
        self._sampler: ResourceSampler | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self._replay_due = True
        # Batches taken but not yet written or spooled. Each snapshot carries subtask rows that
        # no later snapshot repeats, so a stuck export at exit must spool these too (see
        # _emergency_spool). A batch leaves once written: a cycle's thousands of snapshots do
        # not all live to its end, where the garbage collector would have to walk them.
        self._in_flight: list[list[Snapshot]] = []
        self._spool_pending = False
        self._next_heartbeat = time.monotonic() + settings.heartbeat_interval
        self._git_cache: dict[str | None, str | None] = {}
        self.rejected = 0
        self.written = 0
        self.spooled = 0

    # -- called from the user's threads -----------------------------------------------------
    def register(self, run: RunCore) -> None:
        with self._runs_lock:
            self._runs[run.run_id] = run
        self._ensure_thread()
        self.wake()

    def wake(self) -> None:
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is not None or self._shutdown:
                return
            self._thread = threading.Thread(target=self._loop, name="pipetrack-writer", daemon=True)
            with signals_blocked():
                self._thread.start()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Write (or spool) every change made before this call; False if not done in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                return not self._pending_runs()
            self._requested += 1
            wanted = self._requested
            self._wake = True
            self._cond.notify_all()
            while self._done < wanted:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._cond.wait(remaining if remaining is None else min(remaining, 0.5))
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Write the final states, stop the thread; spool what is left if time runs out.

        Idempotent. Returns True if everything was written or spooled in time.
        """
        timeout = self._settings.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            self._shutdown = True
            self._wake = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                logger.warning(
                    "the database did not take the final status within %.1f s; spooling it",
                    timeout,
                )
                self._emergency_spool()
                return False
        elif thread is None:
            # Never started (or started from a forked parent): do the last cycle here.
            if self._pending_runs():
                self._cycle(final=True)
            if self._store is not None:
                self._store.close()
        return True

    def signal_locks(self, runs: list[RunCore]) -> list[object]:
        """The locks writing ``runs`` and this writer's own may take, in the order they nest
        (condition, export, a run, the runs dict), for the signal handler. Read lock-free:
        ``_runs`` changes only by single dict operations, each atomic."""
        mine = list(self._runs.values())
        locks = [r._lock for r in (*runs, *mine)]
        return [self._cond_lock, self._export_lock, *locks, self._runs_lock]

    def spool_unwritten(self) -> None:
        """Spool what is not written yet, from the calling thread, leaving the writer going
        (a signal's flush that ran out of time: the process is about to end)."""
        self._emergency_spool()

    @property
    def dropped(self) -> int:
        """Snapshots and subtask rows dropped (spool full, or the pending rows bound)."""
        with self._runs_lock:
            rows = sum(run.dropped_rows for run in self._runs.values())
        return rows + (self._spool.dropped if self._spool is not None else 0)

    @property
    def ticked(self) -> int:
        """Snapshots sent as progress ticks: a few columns of rows written before."""
        return self._store.ticked if self._store is not None else 0

    @property
    def busy(self) -> bool:
        """Runs still to write (read lock-free: a run leaves once its final state is out)."""
        return bool(self._runs)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        interval = self._settings.flush_interval
        next_tick = time.monotonic() + interval
        while True:
            with self._cond:
                while not self._wake and not self._shutdown:
                    remaining = next_tick - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._wake = False
                stopping = self._shutdown
                wanted = self._requested
            try:
                self._cycle(final=stopping)
            except Exception:
                logger.exception("pipetrack writer cycle failed; continuing")
            with self._cond:
                self._done = max(self._done, wanted)
                self._cond.notify_all()
            if stopping:
                break
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + interval
        if self._store is not None:
            self._store.close()
        if self._spool is not None:
            self._spool.rotate()

    def _pending_runs(self) -> list[RunCore]:
        with self._runs_lock:
            return [
                r
                for r in self._runs.values()
                if r._dirty
                or r._moved
                or (r.terminal and r.exported_seq < r.final_seq)
                or (r.terminal and r.final_seq == 0)
            ]

    def _cycle(self, *, final: bool = False) -> None:
        now = time.monotonic()
        heartbeat = now >= self._next_heartbeat
        if heartbeat:
            self._next_heartbeat = now + self._settings.heartbeat_interval
        with self._runs_lock:
            runs = list(self._runs.values())
        due: list[RunCore] = []
        # The figures are the process's, whichever run they go to: one sample per cycle.
        sample: tuple[int | None, int | None, float | None] | None = None
        for run in runs:
            first = run.seq == 0
            ending = run.final_seq == 0 and run.status in TERMINAL
            if not (run._moved or run._dirty or heartbeat or ending or first):
                continue
            if first:
                self._fill_git(run)
            if first or ending or (heartbeat and not run.terminal):
                if sample is None:
                    sample = self._sample()
                memory, peak, cpu = sample
                with run._lock:
                    if memory is not None:
                        run.memory_mb, run.peak_memory_mb, run.cpu_percent = memory, peak, cpu
                    run._dirty = True
            due.append(run)
        if due:
            try:
                self._export(self._batches(due))
            finally:
                self._in_flight = []
        elif self._spool_pending and time.monotonic() >= self._retry_at:
            # Nothing new, but what was spooled should reach the database once it is back.
            self._export(iter(()))
        # A run is done with once its final snapshot is out (in the database or the spool).
        with self._runs_lock:
            for run in runs:
                # final_seq is set by the final snapshot only.
                out = run.final_seq and run.exported_seq >= run.final_seq
                if out and not (run._dirty or run._moved):
                    self._runs.pop(run.run_id, None)

    def _fill_git(self, run: RunCore) -> None:
        from tracker._context import git_commit

        path = run.context.get("script_path")
        if path not in self._git_cache:
            try:
                self._git_cache[path] = git_commit(path)
            except Exception:
                logger.debug("cannot read the git commit of %s", path, exc_info=True)
                self._git_cache[path] = None
        with run._lock:
            if run.context.get("git_commit") is None:
                run.set_identity(git_commit=self._git_cache[path])

    def _sample(self) -> tuple[int | None, int | None, float | None]:
        if self._sampler is None:
            from tracker._sampling import ResourceSampler

            self._sampler = ResourceSampler()
        sample = self._sampler.sample()
        if sample is None:
            return None, None, None
        return sample.memory_mb, sample.peak_memory_mb, sample.cpu_percent

    # -- export -----------------------------------------------------------------------------
    def _stores(self) -> tuple[Store, Spool]:
        if self._store is None or self._spool is None:
            from tracker._spool import Spool
            from tracker._store import Store

            self._store = Store(self._settings.dsn)
            self._spool = Spool(
                self._settings.resolved_spool_dir(), max_bytes=self._settings.spool_max_bytes
            )
        return self._store, self._spool

    def _batches(self, runs: list[RunCore]) -> Iterator[list[Snapshot]]:
        """The runs' snapshots, a batch at a time: each is taken just before it is sent, so
        that building one overlaps the database writing the one before."""
        for start in range(0, len(runs), BATCH_SIZE):
            now = time.time()  # one time for the batch: its snapshots are taken together
            batch = [run.snapshot(now) for run in runs[start : start + BATCH_SIZE]]
            self._in_flight.append(batch)
            yield batch

    def _landed(self, batch: list[Snapshot]) -> None:
        """``batch`` is written (or dropped): no longer in flight. Replaced, not changed in
        place, for ``_emergency_spool`` on another thread."""
        self._in_flight = [b for b in self._in_flight if b is not batch]

    def _export(self, batches: Iterator[list[Snapshot]]) -> None:
        from tracker._store import Unavailable

        with self._export_lock:
            store, spool = self._stores()
            key = store.resolve()
            if time.monotonic() < self._retry_at:
                self._to_spool(key, [s for batch in batches for s in batch])
                return
            try:
                store.connect()
                if self._replay_due:
                    self._replay(store, spool, key)
            except Unavailable as exc:
                self._went_down(str(exc))
                self._to_spool(key, [s for batch in batches for s in batch])
                return
            # Up to PIPELINE_DEPTH batches are in the database's hands at once.
            sent: list[tuple[list[Snapshot], Pending]] = []
            refused: list[tuple[list[Snapshot], Exception]] = []
            in_hand: list[Snapshot] = []  # taken from ``batches``, not yet in ``sent``
            try:
                for batch in batches:
                    in_hand = batch
                    sent.append((batch, store.send(batch)))
                    in_hand = []
                    while len(sent) >= PIPELINE_DEPTH:
                        self._settle(store, sent, refused)
                while sent:
                    self._settle(store, sent, refused)
                for batch, reason in refused:
                    self._write_whole(store, batch, reason)
            except Unavailable as exc:
                self._went_down(str(exc))
                unsent = [s for batch in batches for s in batch]
                held = [s for batch, _ in sent for s in batch]
                held += [s for batch, _ in refused for s in batch]
                self._to_spool(key, held + in_hand + unsent)
                return
            self._backoff = BACKOFF_FIRST

    def _replay(self, store: Store, spool: Spool, key: str) -> None:
        """Replay the spool before this process's own statuses. Raises Unavailable only: any
        other failure is logged and the own statuses are written all the same, because old
        data must never stop new data (the spool sets bad files aside by itself; this guards
        against what it cannot foresee, e.g. a folder that cannot be listed)."""
        from tracker._store import Unavailable

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

    def _settle(
        self,
        store: Store,
        sent: list[tuple[list[Snapshot], Pending]],
        refused: list[tuple[list[Snapshot], Exception]],
    ) -> None:
        """Wait for the oldest batch sent. Raises Unavailable, leaving it in ``sent``."""
        from tracker._store import Rejected

        batch, pending = sent[0]
        try:
            store.settle(pending)
        except Rejected as exc:
            logger.debug("batch of %d refused (%s); writing it whole", len(batch), exc)
            refused.append((batch, exc))
        else:
            self.written += len(batch)
            self._exported(batch)
            self._landed(batch)
        sent.pop(0)

    def _write_whole(self, store: Store, batch: list[Snapshot], reason: Exception) -> None:
        """A refused batch again, every snapshot with all its columns (a batch may leave out
        what a row already holds, and that row may be gone or changed): in one transaction,
        else one by one, so that only a snapshot the database refuses is lost."""
        from tracker._store import Missed, Rejected

        if isinstance(reason, Missed):
            store.forget_ticks(reason)
        try:
            store.write_many(batch)
        except Rejected:
            # Rare: some row breaks a constraint. Alone, the others get in.
            while batch:
                self._write_alone(store, batch[0])
                batch.pop(0)
        else:
            self.written += len(batch)
            self._exported(batch)
        self._landed(batch)

    def _write_alone(self, store: Store, snapshot: Snapshot) -> None:
        from tracker._store import Rejected

        try:
            store.write(snapshot)
        except Rejected as exc:
            self._rejected(snapshot, str(exc))
            return
        self.written += 1
        self._exported([snapshot])

    def _rejected(self, snapshot: Snapshot, reason: str) -> None:
        self.rejected += 1
        self._exported([snapshot])
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
        self._exported(snapshots)

    def _exported(self, snapshots: list[Snapshot]) -> None:
        runs = self._runs
        with self._runs_lock:
            for snapshot in snapshots:
                run = runs.get(snapshot.run_id)
                if run is not None and run.exported_seq < snapshot.seq:
                    run.exported_seq = snapshot.seq

    def _emergency_spool(self) -> None:
        """At exit, when the thread is stuck (e.g. connecting): spool the final states here."""
        store, spool = self._stores()
        key = store.resolve()
        # What the stuck thread holds first (older seqs), then the final states; replay is
        # idempotent, so a snapshot the thread also manages to write does no harm.
        held = [snapshot for batch in self._in_flight for snapshot in batch]
        snapshots = [*held, *(run.snapshot() for run in self._pending_runs())]
        if snapshots:
            spool.append(key, snapshots)
            self.spooled += len(snapshots)
            self._exported(snapshots)
        # Release the file's lock now, so that it can be replayed even before this process ends.
        spool.rotate()
