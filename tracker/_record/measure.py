"""The writer's resource figures: samples of the process (or of a wrapped command's tree) turned
into each run's totals, its subtasks' totals and its rows of ``pipeline_run_sample``.

1. When a run starts (on the caller's thread, before its first line of work) it gets a
   baseline: the sampler's figures then. The first run of a process makes the sampler, whose
   creation is the baseline; a wrapped command's run counts from its tree sampler's creation at
   the spawn. Its totals are the sampler's figures minus the baseline.
2. A subtask's figures are the difference of two samples taken on the caller's thread as it
   enters and as it ends the subtask (``Run.subtask``, ``Subtask.close``; outside the run's
   lock), so the work of a step is its own however busy the writer is. A sample of one process
   costs about 0.1 to 0.5 ms (a few ms when it holds sockets); a boundary reuses the previous
   boundary's sample while it is younger than 5 ms or than 50 times what a sample costs, so
   boundaries in a tight loop spend at most about 2 % of it sampling, and steps longer than
   that are measured at both ends. A step that ends while its start's sample is still reused
   is ended by the next sample taken (by the writer as soon as one may be, or at once when a
   flush waits), not shown as having done nothing, and a step begun after it on the same
   reused sample begins at that sample too (each byte counted once): short steps' figures are
   approximate. A
   subtask that ends with its run (or without a boundary sample) is measured by the writer's
   next sample; one whose start was never sampled keeps NULL figures: what it did is in the
   run's totals, not measured apart.
3. The writer takes one sample in a cycle when a run needs figures: its first snapshot (its
   very first sample is taken as its thread starts, before it loads its database driver), a
   subtask boundary that went unmeasured, a heartbeat, its cadence keeping a row now
   (``SampleSchedule``: every 10 s for an hour, then every 60 s), or its end (kept as the last
   row). One sample
   serves every run of the process: the figures are the process's. It is put on each such run
   under its lock, before the cycle's snapshots: totals, memory, CPU, the largest memory each
   open subtask has seen, and a row when the cadence keeps one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from tracker._model.columns import SAMPLE_NAMES
from tracker._model.snapshot import utc
from tracker._model.state import RunCore
from tracker._model.subtask import SubtaskCore
from tracker._model.usage import Usage
from tracker._record.step_figures import (
    RunFigures,
    end_step,
    measure_steps,
    track_open,
    usage_of,
)

if TYPE_CHECKING:
    from tracker._sampling import ResourceSample, SampleCadence, SharedSampler

logger = logging.getLogger("tracker")

ZERO = Usage(0.0, 0, 0, 0, 0)
# CPU time moves in clock ticks (10 ms), and samples may be microseconds apart (a subtask
# boundary, then the writer's): a CPU percentage is only taken over a second or more, or it
# would be noise (or, over 10 µs, 100,000 %, past the status row's NUMERIC(7, 2)).
MIN_RATE_SECONDS = 1.0
STATUS_RATE_SECONDS = 2.0  # the status row's figure: over the last 2 s or more,
FIRST_RATE_SECONDS = 0.05  # and before the first 2 s, over what there is, if 50 ms or more
CPU_PERCENT_MAX = 99_999.99
# How long a run's start (or a subtask boundary) off the main thread waits for a sample another
# thread is taking; past it the writer's next sample stands in. (The main thread waits for it
# whole: see SharedSampler.sample.)
BASELINE_WAIT = 0.1
# A subtask boundary reuses the previous boundary's sample when it is younger than this, or
# than 50 times what a sample costs: boundaries in a tight loop spend at most about 2 % of it
# sampling. (A sample of one process takes about 0.1 ms; 3 ms where the process holds sockets
# on a host whose socket table the kernel walks whole for each dump.)
BOUNDARY_GAP = 0.005
BOUNDARY_SHARE = 0.02
# The writer's own samples wait at most this long for another thread's: a thread frozen by a
# signal handler while sampling must not stop the final states from being written.
TAKE_WAIT = 1.0


class Measure:
    """The resource figures of one writer's runs; see the module docstring.

    ``skip_fds`` names this process's descriptors that are not the runs' (the writer's own
    database connection); ``conninfo`` the configured database, once known, whose connections
    count as database connections. ``clock``/``wall`` drive the cadence and the sampler (tests
    inject them).
    """

    def __init__(
        self,
        *,
        skip_fds: Callable[[], Collection[int]],
        conninfo: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cadence: SampleCadence | None = None,
    ) -> None:
        self._skip_fds = skip_fds
        self._conninfo = conninfo
        self._clock = clock
        self._wall = wall
        self._cadence = cadence
        self._source: SharedSampler | None = None
        self._own = True  # the source samples this process: made here, told the database
        self._database_known = False
        self._runs: dict[str, RunFigures] = {}
        self._lock = threading.Lock()

    # -- the caller's thread ----------------------------------------------------------------
    def use(self, source: SharedSampler) -> None:
        """Sample ``source`` (a wrapped command's tree) instead of this process."""
        self._source = source
        self._own = False

    def start(self, run: RunCore) -> None:
        """Give ``run`` its cadence and baseline (before its work begins)."""
        from tracker._sampling import ResourceSampler, SampleSchedule, SharedSampler

        base: Usage | None = ZERO
        with self._lock:  # two runs starting at once make one sampler
            source = self._source
            if source is None:  # a new sampler counts from now
                sampler = ResourceSampler(
                    skip_fds=self._skip_fds, clock=self._clock, wall=self._wall
                )
                self._source = source = SharedSampler(sampler)
                made = True
            else:
                made = False
        if not made and source.attached:  # (a tree sampler still to come counts from its start)
            sample = source.recent(gap=BOUNDARY_GAP, share=BOUNDARY_SHARE, timeout=BASELINE_WAIT)
            base = None if sample is None else usage_of(sample)
        schedule = SampleSchedule(self._cadence, clock=self._clock)
        self._runs[run.run_id] = RunFigures(schedule=schedule, base=base)

    def boundary_sample(self) -> ResourceSample | None:
        """A sample for a subtask entered or ended now, on the caller's thread, before it takes
        the run's lock (about 0.1 ms for one process; see BOUNDARY_GAP)."""
        source = self._source
        if source is None:
            return None
        return source.recent(gap=BOUNDARY_GAP, share=BOUNDARY_SHARE, timeout=BASELINE_WAIT)

    def boundary(
        self, run: RunCore, sample: ResourceSample | None, ended: list[SubtaskCore]
    ) -> None:
        """``run`` entered a subtask, or ended those in ``ended``, just after ``sample`` was
        taken: their start or their figures (the caller holds the run's lock). Only these and
        the open ones are looked at: ended steps the writer has still to measure may be many."""
        figures = self._runs.get(run.run_id)
        if figures is None:
            return
        if sample is None:  # no sample (another thread's held the sampler): the writer's next
            figures.deferred.extend(m for m in map(figures.open.get, (e.index for e in ended)) if m)
            return
        if sample is not figures.seen:
            _put_on_run(run, figures.totals(sample), sample)
        usage = figures.totals(sample)
        held = figures.open
        for sub in ended:
            measuring = held.get(sub.index)
            if measuring is not None and measuring.subtask is sub:
                end_step(run, figures, measuring, usage, sample)
        track_open(run, figures, usage, sample)

    # -- the writer's thread ----------------------------------------------------------------
    def wanted(self, run: RunCore, *, heartbeat: bool) -> bool:
        """Does ``run`` need a sample now? (Read without its lock: a boundary missed here wakes
        the writer again.)"""
        figures = self._runs.get(run.run_id)
        if figures is None or figures.final_done:
            return False
        if figures.deferred or run.terminal or run.seq == 0 or heartbeat:
            return True  # (deferred: an end that reused its start's sample)
        held = figures.open
        for sub in list(run.open):
            if sub.index not in held:
                return True  # a start unmeasured
        return figures.schedule.due()  # (fresh_wanted's, in the cheapest order)

    def fresh_wanted(self, run: RunCore, *, heartbeat: bool) -> bool:
        """Does ``run`` need a sample taken now, not only a recent one? Its first and last, a
        heartbeat's, one its cadence keeps as a row."""
        figures = self._runs.get(run.run_id)
        if figures is None or figures.final_done:
            return False
        return run.terminal or run.seq == 0 or heartbeat or figures.schedule.due()

    def retry_at(self) -> float:
        """When (``time.monotonic()``) the writer should sample again for ends deferred until a
        sample other than their start's may be taken; infinity when none waits."""
        source = self._source
        if source is None or not any(f.deferred for f in list(self._runs.values())):
            return float("inf")
        return source.fresh_from(gap=BOUNDARY_GAP, share=BOUNDARY_SHARE)

    def pending_final(self, run: RunCore) -> bool:
        """``run`` has ended but its last sample is not applied yet."""
        figures = self._runs.get(run.run_id)
        return figures is not None and run.terminal and not figures.final_done

    def take(self, *, fresh: bool = True, learn: bool = True) -> ResourceSample | None:
        """One sample for every run that wants one now; unless ``fresh``, only when the
        boundaries' share of sampling allows one (a tight loop's ends left to the writer cost
        no more than the boundaries' own sampling), else None. ``learn``:
        may tell the sampler the database's address (which imports psycopg: not before the
        writer has loaded it)."""
        source = self._source
        if source is None:
            return None
        if learn and self._own and not self._database_known:
            self._learn_database(source)
        if not fresh and time.monotonic() < source.fresh_from(
            gap=BOUNDARY_GAP, share=BOUNDARY_SHARE
        ):
            return None  # not yet (retry_at wakes the writer when it may)
        # Taken, not kept as a boundary's: one from the middle of a step must never be reused
        # as the end of it.
        return source.sample(timeout=TAKE_WAIT)

    def _learn_database(self, source: SharedSampler) -> None:
        conninfo = self._conninfo()
        if conninfo is None:
            return  # not resolved yet: the next cycle
        from tracker._sampling import DatabaseEndpoints

        self._database_known = True
        try:
            source.set_database(DatabaseEndpoints.from_conninfo(conninfo))
        except Exception:  # the well-known ports still find it
            logger.debug("cannot tell the sampler the database's address", exc_info=True)

    def apply(self, run: RunCore, sample: ResourceSample | None) -> None:
        """Put ``sample`` on ``run`` and its subtasks (the caller holds the run's lock); None:
        no figures this time."""
        figures = self._runs.get(run.run_id)
        if figures is None:
            return
        ending = run.terminal
        if ending:
            figures.final_done = True
        if sample is None:
            return
        if sample is figures.seen and not ending:
            # A boundary's sample, reused (a tight loop of subtasks): already on the run, and
            # no deferred end can be measured with it; only starts not measured yet are.
            track_open(run, figures, figures.totals(sample), sample)
            return
        usage = figures.totals(sample)
        _put_on_run(run, usage, sample)
        cpu = usage.cpu_seconds or 0.0
        run.cpu_percent = _rate(figures, sample.sampled_at, cpu, run.cpu_percent, ending=ending)
        measure_steps(run, figures, usage, sample, every=ending)
        if figures.schedule.due(final=ending) and (
            figures.last_row is None or sample.sampled_at > figures.last_row[0]
        ):
            run.samples.append(_row(run, figures, usage, sample))
            figures.schedule.kept()
        run.mark()

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)


def _put_on_run(run: RunCore, usage: Usage, sample: ResourceSample) -> None:
    """The run's totals and what its process (tree) holds now."""
    run.usage = usage
    if sample.rss_bytes > 0:  # 0: only zombies left, whose memory is gone
        run.memory_mb = sample.memory_mb
    run.peak_memory_mb = max(run.peak_memory_mb or 0, sample.peak_memory_mb)
    run.open_fds = sample.open_fds
    run.db_connections = sample.db_connections
    run.other_connections = sample.other_connections


def _rate(
    figures: RunFigures, at: float, cpu: float, previous: float | None, *, ending: bool
) -> float | None:
    """The status row's CPU figure: CPU seconds per second x100 over the last
    ``STATUS_RATE_SECONDS`` or more (at the run's end, over what is left if a second or more);
    until then the previous figure stands (None at first)."""
    if figures.rate_from is None:
        figures.rate_from = (at, cpu)
        return previous
    since, cpu_then = figures.rate_from
    if at - since < (MIN_RATE_SECONDS if ending else STATUS_RATE_SECONDS):
        if previous is None:  # a first, rougher figure, until the first whole window
            return _per_second(cpu - cpu_then, at - since, over=FIRST_RATE_SECONDS)
        return previous
    figures.rate_from = (at, cpu)
    return _per_second(cpu - cpu_then, at - since)


def _per_second(cpu: float, seconds: float, *, over: float = MIN_RATE_SECONDS) -> float | None:
    """CPU seconds per second x100; None over less than ``over`` seconds."""
    if not seconds >= over:  # (NaN too)
        return None
    percent = round(100.0 * max(cpu, 0.0) / seconds, 2)
    return min(percent, CPU_PERCENT_MAX) if math.isfinite(percent) else None


def _row(
    run: RunCore, figures: RunFigures, usage: Usage, sample: ResourceSample
) -> tuple[Any, ...]:
    """The ``pipeline_run_sample`` row of ``sample`` for ``run``, in SAMPLE_COLUMNS order."""
    cpu = usage.cpu_seconds or 0.0
    cpu_percent = None  # the first row has no interval to stand for
    if figures.last_row is not None:  # since the previous row: what a thinned row stands for
        before, cpu_before = figures.last_row
        cpu_percent = _per_second(cpu - cpu_before, sample.sampled_at - before)
    figures.last_row = (sample.sampled_at, cpu)
    values = {
        "run_id": run.run_id,
        "sampled_at": utc(sample.sampled_at),
        "subtask_index": run.open[-1].index if run.open else None,
        "processes": sample.processes,
        "rss_bytes": sample.rss_bytes,
        "cpu_percent": cpu_percent,
        "cpu_seconds": usage.cpu_seconds,
        "disk_read_bytes": usage.disk_read_bytes,
        "disk_write_bytes": usage.disk_write_bytes,
        "tcp_received_bytes": usage.tcp_received_bytes,
        "tcp_sent_bytes": usage.tcp_sent_bytes,
        "db_connections": sample.db_connections,
        "other_connections": sample.other_connections,
        "open_fds": sample.open_fds,
    }
    return tuple(values[name] for name in SAMPLE_NAMES)
