"""Each subtask's resource figures, from the samples taken at its start and at its end: the
steps a run's writer holds open, and how an end is measured (see ``tracker._record.measure``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tracker._model.state import RunCore
from tracker._model.subtask import SubtaskCore
from tracker._model.usage import Usage

if TYPE_CHECKING:
    from tracker._sampling import ResourceSample, SampleSchedule


@dataclass
class OpenStep:
    """A subtask being measured: the run's totals at its start, the memory seen since."""

    subtask: SubtaskCore
    start: Usage
    peak: int
    sampler_peak: int  # the sampler's peak at its start: a higher one at its end was its own
    started_by: ResourceSample  # the sample its start was (its end must be a later one)
    # Its start was moved to the sample that ended the step before it (see end_step): ended too
    # by then, it did nothing that sample did not give to that step.
    rebased: bool = False


@dataclass
class RunFigures:
    schedule: SampleSchedule
    base: Usage | None  # None: taken from the run's first sample
    final_done: bool = False
    last_row: tuple[float, float] | None = None  # (sampled_at, cpu_seconds) of the last row
    rate_from: tuple[float, float] | None = None  # (sampled_at, cpu_seconds)
    open: dict[int, OpenStep] = field(default_factory=dict)
    # The same, grouped by the sample each start was (by id: an OpenStep holds its sample, so the
    # id is not reused while its group lives). An end rebases the steps begun on its start's
    # sample: a walk of that group, not of every step held. A tight loop whose ends the writer
    # has not measured yet holds thousands, and walking them all at each end was quadratic:
    # 5 s and more under the run's lock, during which a signal's final state waited.
    by_start: dict[int, dict[int, OpenStep]] = field(default_factory=dict)
    # Ended subtasks whose end waits for a sample other than their start's.
    deferred: list[OpenStep] = field(default_factory=list)
    # The last sample put on the run and the run's totals it gave (boundaries reuse samples).
    seen: ResourceSample | None = None
    usage: Usage | None = None

    def hold(self, measuring: OpenStep) -> None:
        """Measure a subtask from its start."""
        index = measuring.subtask.index
        self.open[index] = measuring
        self.by_start.setdefault(id(measuring.started_by), {})[index] = measuring

    def let_go(self, measuring: OpenStep) -> None:
        """Its end is measured."""
        del self.open[measuring.subtask.index]
        self._ungroup(measuring)

    def restart(self, measuring: OpenStep, usage: Usage, sample: ResourceSample) -> None:
        """Count ``measuring`` from ``sample`` on (see ``end_step``)."""
        self._ungroup(measuring)
        measuring.start, measuring.started_by = usage, sample
        measuring.peak, measuring.sampler_peak = sample.rss_bytes, sample.peak_rss_bytes
        measuring.rebased = True
        self.by_start.setdefault(id(sample), {})[measuring.subtask.index] = measuring

    def begun_on(self, sample: ResourceSample) -> list[OpenStep]:
        """The subtasks held whose start was ``sample``."""
        return list(self.by_start.get(id(sample), {}).values())

    def _ungroup(self, measuring: OpenStep) -> None:
        key = id(measuring.started_by)
        group = self.by_start.get(key)
        if group is not None:
            group.pop(measuring.subtask.index, None)
            if not group:
                del self.by_start[key]

    def totals(self, sample: ResourceSample) -> Usage:
        """The run's totals at ``sample`` (worked out once per sample)."""
        if sample is not self.seen or self.usage is None:
            now = usage_of(sample)
            if self.base is None:
                self.base = now
            self.seen, self.usage = sample, now.since(self.base)
        return self.usage


def usage_of(sample: ResourceSample) -> Usage:
    return Usage(
        sample.cpu_seconds,
        sample.disk_read_bytes,
        sample.disk_write_bytes,
        sample.tcp_received_bytes,
        sample.tcp_sent_bytes,
    )


def measure_steps(
    run: RunCore, figures: RunFigures, usage: Usage, sample: ResourceSample, *, every: bool
) -> None:
    """The subtasks the writer has to measure: the deferred ends (``every``: each ended one,
    at the run's end), then the open ones."""
    if every:
        ended = [m for m in figures.open.values() if m.subtask.ended is not None]
        figures.deferred = []
    else:
        ended, figures.deferred = figures.deferred, []
    for measuring in ended:
        if figures.open.get(measuring.subtask.index) is measuring:
            end_step(run, figures, measuring, usage, sample)
    track_open(run, figures, usage, sample)


def end_step(
    run: RunCore,
    figures: RunFigures,
    measuring: OpenStep,
    usage: Usage,
    sample: ResourceSample,
) -> None:
    """An ended subtask's figures: ``sample`` minus its start; left to the writer's next
    sample when ``sample`` is the one its start was (a boundary reused it)."""
    if measuring.started_by is sample and not measuring.rebased:
        figures.deferred.append(measuring)
        return
    sub = measuring.subtask
    figures.let_go(measuring)
    sub.usage = usage.since(measuring.start)
    peak = max(measuring.peak, sample.rss_bytes)
    if sample.peak_rss_bytes > measuring.sampler_peak:
        peak = max(peak, sample.peak_rss_bytes)  # the kernel's peak, reached meanwhile
    sub.peak_rss_bytes = peak
    if sub.index not in run._pending:
        run.rewrite(sub)  # its row went out before this sample: again, with its figures
    stale, ended = measuring.started_by, sub.ended
    if ended is None or stale is sample:
        # (Its start is this sample already: rebased by an end before it, as were the steps
        # begun after it ended on the sample it began on.)
        return
    for later in figures.begun_on(stale):
        # A step that began after this one ended, on the same reused sample (an end deferred
        # to this sample): its start is this sample too, or it would count this step's work
        # again. What it did before this sample is counted here instead: approximate, as
        # short steps are, but each byte once.
        if later.subtask.started >= ended:
            figures.restart(later, usage, sample)


def track_open(run: RunCore, figures: RunFigures, usage: Usage, sample: ResourceSample) -> None:
    """Open subtasks: a start for the new ones, the memory seen for the others."""
    held = figures.open
    rss = sample.rss_bytes
    for sub in run.open:
        measuring = held.get(sub.index)
        if measuring is None:
            figures.hold(OpenStep(sub, usage, rss, sample.peak_rss_bytes, sample))
        elif rss > measuring.peak:
            measuring.peak = rss
