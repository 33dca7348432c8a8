"""The writer thread: the only place the tracker talks to PostgreSQL or touches the spool.

Shaped like OpenTelemetry's BatchProcessor: a named daemon thread started on first use; a
condition to wake it early; a lock around export; ``force_flush``
returning whether it finished in time; an idempotent ``shutdown(timeout)`` joining against a
deadline; ``logger.exception`` so the thread never dies. Its locks are reentrant so that the
signal handler can tell whether the main thread it interrupted holds one, and lend it to the
signal worker (see ``tracker._runtime.handoff`` and ``signal_locks``).

Each cycle (every flush interval, or at once when a transition wakes it) snapshots every run
that changed (latest state wins: one snapshot per run per cycle), plus a heartbeat snapshot of
every live run when the heartbeat is due, and hands the batches to ``tracker._record.delivery``,
which writes them or spools them. A cycle in which a run needs resource figures (its start, a
subtask boundary, a heartbeat, its sample cadence, its end) first takes one sample, which
``tracker._record.measure`` puts on each such run: the sample rows travel in the snapshots, so
they cost no extra connection or round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from tracker._model.snapshot import TERMINAL, Snapshot
from tracker._model.state import RunCore
from tracker._model.subtask import SubtaskCore
from tracker._record.delivery import Delivery
from tracker._record.measure import Measure
from tracker._record.preload import load_writer_modules
from tracker._settings import TrackerSettings
from tracker._signals import signals_blocked

if TYPE_CHECKING:
    from tracker._sampling import ResourceSample, SampleCadence, SharedSampler

logger = logging.getLogger("tracker")

# Snapshots per statement: one statement per table whatever the count, yet a batch the
# database refuses is retried one by one, so keep that retry (rare) affordable.
BATCH_SIZE = 250
# The last batches of a cycle shrink down to this: the cycle ends waiting for the database to
# apply its last batch alone, and a small one is applied soon (1,000 runs: 250, 250, 250, 125,
# 62, 32, 31 rather than four of 250).
LAST_BATCH = 32


def batch_bounds(count: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each batch of a cycle of ``count`` snapshots."""
    start = 0
    while start < count:
        remaining = count - start
        if remaining > 2 * BATCH_SIZE:
            size = BATCH_SIZE
        elif remaining > LAST_BATCH:
            size = max(LAST_BATCH, remaining // 2)
        else:
            size = remaining
        yield start, start + size
        start += size


class Writer:
    """Writes the runs of one Tracker; see the module docstring."""

    def __init__(
        self,
        settings: TrackerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cadence: SampleCadence | None = None,
    ) -> None:
        """``clock``/``wall`` drive the heartbeat and the resource samples (tests inject them
        to live through hours in seconds); ``cadence`` is when samples are kept as rows."""
        self._settings = settings
        self._clock = clock
        self._wall = wall
        self._runs: dict[str, RunCore] = {}
        self._runs_lock = threading.RLock()
        # Taken as ``with self._cond_lock:``, never ``with self._cond:``: Condition.__enter__ is
        # Python code, so a signal handler that raises (KeyboardInterrupt, the script's
        # sys.exit) can run after it acquired the lock and before the block begins, leaving the
        # lock held for ever and the writer stopped (the exit then waits out its timeout and
        # spools). The RLock's own __enter__ leaves no such gap.
        self._cond_lock = threading.RLock()
        self._cond = threading.Condition(self._cond_lock)
        self._wake = False
        self._shutdown = False
        self._requested = 0
        self._done = 0
        self._thread: threading.Thread | None = None
        self.delivery = Delivery(settings, self._exported)
        self._measure = Measure(
            skip_fds=self.delivery.own_fds,
            conninfo=self.delivery.conninfo,
            clock=clock,
            wall=wall,
            cadence=cadence,
        )
        self._next_heartbeat = clock() + settings.heartbeat_interval
        self._git_cache: dict[str | None, str | None] = {}
        self._active_at = clock()  # when a run last changed (more than a heartbeat)

    # -- called from the user's threads -----------------------------------------------------
    def register(self, run: RunCore) -> None:
        with self._runs_lock:
            new = run.run_id not in self._runs
        # An ended run needs no baseline: the signal worker registers the run it cancelled,
        # and must not import or sample where the frozen main thread may hold the locks.
        if new and not run.terminal:
            # Before the run is seen by the writer's thread, and before its work begins: its
            # resource baseline (a sample on this thread, about 0.1 ms; the first run also
            # makes the sampler).
            try:
                self._measure.start(run)
            except Exception:
                logger.debug("cannot start measuring run %s", run.run_id, exc_info=True)
        with self._runs_lock:
            self._runs[run.run_id] = run
        self._ensure_thread()
        self.wake()

    def boundary_sample(self) -> ResourceSample | None:
        """A resource sample for a subtask boundary, taken on the caller's thread outside the
        run's lock (see ``tracker._record.measure``); hand it to ``at_boundary``."""
        try:
            return self._measure.boundary_sample()
        except Exception:
            logger.debug("cannot sample resources at a subtask boundary", exc_info=True)
            return None

    def at_boundary(
        self, run: RunCore, sample: ResourceSample | None, ended: list[SubtaskCore] | None = None
    ) -> None:
        """``run`` entered a subtask, or ended those in ``ended``, just after ``sample`` (the
        caller holds its lock)."""
        try:
            self._measure.boundary(run, sample, ended or [])
        except Exception:
            logger.debug("cannot measure a subtask boundary", exc_info=True)

    def sample_from(self, source: SharedSampler) -> None:
        """Take resource figures from ``source`` (a wrapped command's process tree) instead of
        this process; before the first run is registered."""
        self._measure.use(source)

    def wake(self) -> None:
        with self._cond_lock:
            self._wake = True
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        with self._cond_lock:
            if self._thread is not None or self._shutdown:
                return
            self._thread = threading.Thread(target=self._loop, name="pipetrack-writer", daemon=True)
            with signals_blocked():
                self._thread.start()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Write (or spool) every change made before this call; False if not done in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond_lock:
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
        with self._cond_lock:
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
                self._spool_all()
                return False
        elif thread is None:
            # Never started (or started from a forked parent): do the last cycle here.
            if self._pending_runs():
                self._cycle(final=True)
            self.delivery.close()
        return True

    def signal_locks(self, runs: list[RunCore]) -> list[object]:
        """The locks writing ``runs`` and this writer's own may take, in the order they nest
        (condition, export, a run, the runs dict), for the signal handler. Read lock-free:
        ``_runs`` changes only by single dict operations, each atomic."""
        mine = list(self._runs.values())
        locks = [r._lock for r in (*runs, *mine)]
        return [self._cond_lock, self.delivery.lock, *locks, self._runs_lock]

    def spool_unwritten(self, say: Callable[[str], None] | None = None) -> None:
        """Spool what is not written yet, from the calling thread, leaving the writer going
        (a signal's flush that ran out of time: the process is about to end, so the kernel
        keeping the file is enough: no ``fsync``). ``say`` is told each step."""
        self._spool_all(durable=False, say=say)

    def _spool_all(self, *, durable: bool = True, say: Callable[[str], None] | None = None) -> None:
        """At exit, when the thread is stuck (e.g. connecting): spool the final states here."""
        if say is not None:
            say("taking the final states")
        final = [run.snapshot() for run in self._pending_runs()]
        self.delivery.spool_all(final, durable=durable, say=say)

    @property
    def dropped(self) -> int:
        """Snapshots and subtask rows dropped (spool full, or the pending rows bound)."""
        with self._runs_lock:
            rows = sum(run.dropped_rows for run in self._runs.values())
        return rows + self.delivery.dropped

    @property
    def written(self) -> int:
        return self.delivery.written

    @property
    def spooled(self) -> int:
        return self.delivery.spooled

    @property
    def rejected(self) -> int:
        return self.delivery.rejected

    @property
    def busy(self) -> bool:
        """Runs still to write (read lock-free: a run leaves once its final state is out)."""
        return bool(self._runs)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        # The runs' first subtasks start now: measure them before the slow part (psycopg).
        try:
            self._measure_runs(self._live_runs(), heartbeat=False, learn=False)
        except Exception:
            logger.exception("pipetrack writer cannot sample resources; continuing")
        try:
            load_writer_modules()
        except Exception:
            logger.exception("pipetrack writer cannot load its modules; continuing")
        interval = self._settings.flush_interval
        next_tick = time.monotonic() + interval
        while True:
            with self._cond_lock:
                while not self._wake and not self._shutdown:
                    # (Also when a subtask's end waits for a sample the boundary could not
                    # take without costing the caller more than its share.)
                    remaining = min(next_tick, self._measure.retry_at()) - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._wake = False
                stopping = self._shutdown
                wanted = self._requested
                flushing = self._done < wanted
            try:
                self._cycle(final=stopping, flushing=flushing)
            except Exception:
                logger.exception("pipetrack writer cycle failed; continuing")
            with self._cond_lock:
                self._done = max(self._done, wanted)
                self._cond.notify_all()
            if stopping:
                break
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + interval
        self.delivery.close()

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

    def _cycle(self, *, final: bool = False, flushing: bool | None = True) -> None:
        """One pass; ``flushing``: someone waits for it (a flush, the exit), so a step's end
        waiting for a new sample gets one now."""
        now = self._clock()
        heartbeat = now >= self._next_heartbeat
        if heartbeat:
            self._next_heartbeat = now + self._settings.heartbeat_interval
        runs = self._live_runs()
        self._measure_runs(runs, heartbeat=heartbeat, fresh=bool(flushing) or final)
        due: list[RunCore] = []
        for run in runs:
            first = run.seq == 0
            ending = run.final_seq == 0 and run.status in TERMINAL
            changed = run._moved or run._dirty or ending or first
            if changed:
                self._active_at = now
            elif not heartbeat:
                continue
            if first:
                self._fill_git(run)
            due.append(run)
        if due:
            self.delivery.deliver(self._batches(due))
        elif self.delivery.retry_due:
            # Nothing new, but what was spooled should reach the database once it is back.
            self.delivery.deliver(iter(()))
        idle_close = self._settings.idle_close
        if idle_close and now - self._active_at >= idle_close:
            # Nothing but heartbeats for a while: no server connection held meanwhile.
            self.delivery.close_connection()
        self._forget_done(runs, final=final, flushing=flushing)

    def _forget_done(self, runs: list[RunCore], *, final: bool, flushing: bool | None) -> None:
        """A run is done with once its final snapshot is out (in the database or the spool),
        with its last resource sample on it."""
        measure = self._measure
        again = False
        with self._runs_lock:
            for run in runs:
                # final_seq is set by the final snapshot only.
                out = run.final_seq and run.exported_seq >= run.final_seq
                if out and measure.pending_final(run):
                    again = True  # it ended after this cycle's sample: once more
                elif out and not (run._dirty or run._moved):
                    self._runs.pop(run.run_id, None)
                    measure.forget(run.run_id)
        if again:
            if final and flushing is not None:
                # The last cycle: once more, for its last sample (once: flushing=None).
                self._cycle(final=True, flushing=None)
            elif not final:
                self.wake()

    def _fill_git(self, run: RunCore) -> None:
        from tracker._record.git import git_commit

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

    def _live_runs(self) -> list[RunCore]:
        with self._runs_lock:
            return list(self._runs.values())

    def _measure_runs(
        self, runs: list[RunCore], *, heartbeat: bool, fresh: bool = False, learn: bool = True
    ) -> None:
        """One resource sample, put on every run that needs figures now (outside any run's
        lock while it is taken: a tree of 50 processes takes milliseconds)."""
        measure = self._measure
        wanting = [run for run in runs if measure.wanted(run, heartbeat=heartbeat)]
        if not wanting:
            return
        fresh = fresh or any(measure.fresh_wanted(run, heartbeat=heartbeat) for run in wanting)
        sample = measure.take(fresh=fresh, learn=learn)
        for run in wanting:
            with run._lock:
                measure.apply(run, sample)

    # -- export -----------------------------------------------------------------------------
    def _batches(self, runs: list[RunCore]) -> Iterator[list[Snapshot]]:
        """The runs' snapshots, a batch at a time: each is taken just before it is sent, so
        that building one overlaps the database writing the one before."""
        for start, end in batch_bounds(len(runs)):
            now = self._wall()  # one time for the batch: its snapshots are taken together
            yield [run.snapshot(now) for run in runs[start:end]]

    def _exported(self, snapshots: list[Snapshot]) -> None:
        runs = self._runs
        with self._runs_lock:
            for snapshot in snapshots:
                run = runs.get(snapshot.run_id)
                if run is not None and run.exported_seq < snapshot.seq:
                    run.exported_seq = snapshot.seq
