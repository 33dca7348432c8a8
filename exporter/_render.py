"""Turning a database snapshot into metric families: the rules docs/metrics.md states.

Pure functions of the snapshot (no I/O), so every rule is testable from rows alone. The rules
(``emit``) write each series into a sink: ``SampleSink`` builds prometheus_client families (the
reference form, ``render``), exporter/_lines.py writes exposition lines straight away (the
scrape path). One set of rules for both, so the two cannot disagree on which series exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client.samples import Sample

from exporter import _metrics as m
from exporter._exposition import escape_label_value
from exporter._queries import (
    EndedTotals,
    LastEnded,
    LatestRun,
    RunningRun,
    RunResources,
    Snapshot,
)
from exporter._schedule import Declared, missed_start, started_before_dependency
from tracker._model.terminal import printable
from tracker._ops.eta import ProgressCurve
from tracker._ops.eta_history import predicted_total

DEFAULT_STALL_AFTER = 1800.0
"""Seconds without progress (while heartbeating) before a run counts as stalled."""
DEFAULT_LOST_AFTER = 60.0
"""Seconds without a heartbeat before a run counts as lost (four 15 s heartbeats)."""

_MIB = 1024 * 1024

Family = m.Family
_QUANTILE_LABELS = tuple((q, f"{q:g}") for q in m.QUANTILES)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of ``values``, interpolating linearly between closest ranks.

    The same rule as PostgreSQL's percentile_cont and numpy's default.
    """
    return _sorted_quantile(sorted(values), q)


def _sorted_quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _ratio(value: float) -> float:
    return min(1.0, max(0.0, value))


def overall_ratio(run: RunningRun) -> float | None:
    """The run's reported overall percentage as a 0-1 ratio; None before it reports one."""
    if run.overall_percent is None:
        return None
    return _ratio(run.overall_percent / 100)


def subtask_ratio(run: RunningRun) -> float | None:
    """The reported subtask percentage, else items complete / items total (capped at 1)."""
    if run.subtask_percent is not None:
        return _ratio(run.subtask_percent / 100)
    if run.items_total and run.items_complete is not None:
        return _ratio(min(run.items_complete, run.items_total) / run.items_total)
    return None


def subtasks_completed(run: RunningRun) -> int | None:
    """Subtasks done: the current one counts once its status is COMPLETED."""
    if run.current_subtask is None:
        return None
    if run.subtask_status == "COMPLETED":
        return run.current_subtask
    return max(0, run.current_subtask - 1)


def predicted_end(
    run: RunningRun,
    recent_durations: Sequence[float] = (),
    curve: ProgressCurve | None = None,
) -> float | None:
    """Start + the predicted total (tracker._ops.eta.predict_total), elapsed measured at the
    last progress (or heartbeat).

    The run's own rate (through the task's progress curve, where its recent runs have one)
    weighs by the progress made, the median of the recent FINISHED durations by the rest.
    None with neither progress nor history. A start in the future counts as no time elapsed.
    """
    measured_at = run.last_progress if run.last_progress is not None else run.last_update
    elapsed = max(0.0, measured_at - run.start)
    ratio = overall_ratio(run)
    total = predicted_total(elapsed, ratio, recent_durations, curve)
    if total is None and ratio and elapsed == 0:
        return run.start  # progress "before" the start: no time elapsed, nothing left to predict
    return None if total is None else run.start + total


def stalled(
    run: RunningRun, at: float, *, stall_after: float, lost_after: float = DEFAULT_LOST_AFTER
) -> bool:
    """Heartbeating (within ``lost_after``) but progress, or the start, older than
    ``stall_after``. A lost run is never stalled."""
    if at - run.last_update > lost_after:
        return False
    moved = run.last_progress if run.last_progress is not None else run.start
    return at - moved > stall_after


def _stage(raw: str | None) -> str:
    return raw if raw else m.UNKNOWN_STAGE


def label_value(text: str) -> str:
    """A task name or stage as its label value: control and bidi characters (ESC, BEL, C1, RLO,
    ...) replaced by visible stand-ins (tracker/_terminal.py: ESC -> U+241B), so ``curl /metrics``
    on a terminal runs nothing. A newline stays: the exposition writes it as ``\\n``.

    Both the lines (exporter/_lines.py) and prometheus_client's samples take the labels from
    here, so the two expositions stay byte-identical.
    """
    return printable(text, keep_newlines=True)


class TaskKey:
    """A task's labels: as prometheus_client wants them, and as exposition text (escaped once)."""

    __slots__ = ("labels", "text")

    def __init__(self, task: str, stage: str) -> None:
        task, stage = label_value(task), label_value(stage)
        self.labels = {"task": task, "task_stage": stage}
        # Label names in sorted order, as both exposition formats write them.
        self.text = f'task="{escape_label_value(task)}",task_stage="{escape_label_value(stage)}"'


class Sink(Protocol):
    """Where the rules put each series of a task family, in exposition order."""

    def add(self, spec: m.MetricSpec, key: TaskKey, value: float) -> None:
        """A series labelled by the task only."""

    def add_with(self, spec: m.MetricSpec, key: TaskKey, extra: str, value: float) -> None:
        """A series with one more label (``spec.labels[-1]``) whose value is ``extra``."""


class SampleSink:
    """Collects the series as prometheus_client families (the reference form)."""

    def __init__(self) -> None:
        self.families = {spec.name: spec.empty_family() for spec in m.TASK_METRICS}
        self._out = {
            spec.name: (
                self.families[spec.name].samples.append,
                spec.name + ("_total" if spec.kind == "counter" else ""),
                spec.labels[-1],
            )
            for spec in m.TASK_METRICS
        }

    def add(self, spec: m.MetricSpec, key: TaskKey, value: float) -> None:
        append, name, _ = self._out[spec.name]
        append(Sample(name, key.labels, value))

    def add_with(self, spec: m.MetricSpec, key: TaskKey, extra: str, value: float) -> None:
        append, name, label = self._out[spec.name]
        append(Sample(name, {**key.labels, label: extra}, value))


def render(
    snapshot: Snapshot,
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    lost_after: float = DEFAULT_LOST_AFTER,
) -> list[Family]:
    """The task families for one snapshot, each a fresh object."""
    sink = SampleSink()
    emit(snapshot, sink, TaskKey, stall_after=stall_after, lost_after=lost_after)
    return [sink.families[spec.name] for spec in m.TASK_METRICS]


def emit(
    snapshot: Snapshot,
    sink: Sink,
    key_for: Callable[[str, str], TaskKey],
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    lost_after: float = DEFAULT_LOST_AFTER,
) -> None:
    """Every series of the task families for one snapshot, into ``sink``.

    Within each family the order is the exposition order. ``key_for(task, stage)`` gives the
    task's labels (the fast path hands out keys it keeps between scrapes).
    """
    stages = {run.task: _stage(run.stage) for run in snapshot.latest}
    running: dict[str, list[RunningRun]] = {}
    for run in snapshot.running:  # newest first within each task (RUNNING_SQL's order)
        running.setdefault(run.task, []).append(run)
    ended: dict[str, dict[str, LastEnded]] = {}
    for row in snapshot.last_ended:
        ended.setdefault(row.task, {})[row.status] = row
    outcomes = {(task, status): runs for task, status, runs in snapshot.outcomes}

    declared = {row.task: row for row in snapshot.declared}
    for item in snapshot.declared:
        stages.setdefault(item.task, _stage(item.stage))
    tasks = sorted(
        set(stages) | set(running) | set(ended) | {task for task, _ in outcomes},
    )
    keys = {task: key_for(task, stages.get(task, m.UNKNOWN_STAGE)) for task in tasks}
    add, add_with = sink.add, sink.add_with
    for task, key in keys.items():
        add(m.RUNNING_RUNS, key, len(running.get(task, ())))
        for status in m.FINAL_STATUSES:
            add_with(m.RUNS, key, status, outcomes.get((task, status), 0))

    for latest in snapshot.latest:
        key = keys[latest.task]
        for status in m.STATUSES:
            add_with(m.LAST_RUN_STATUS, key, status, 1.0 if latest.status == status else 0.0)
        add(m.LAST_START, key, latest.start)

    for task, runs in running.items():
        key = keys[task]
        finished = ended.get(task, {}).get("FINISHED")
        _render_current(
            sink,
            key,
            runs[0],
            finished.recent_durations if finished else (),
            snapshot.curves.get(task),
        )
        own = declared.get(task)
        threshold = own.stall_after if own and own.stall_after else stall_after
        add(m.STALL_AFTER, key, threshold)
        is_stalled = stalled(runs[0], snapshot.at, stall_after=threshold, lost_after=lost_after)
        add(m.STALLED, key, 1.0 if is_stalled else 0.0)
        memory = [run.memory_mb for run in runs if run.memory_mb is not None]
        if memory:
            add(m.MEMORY, key, float(sum(memory) * _MIB))
        cpu = [run.cpu_percent for run in runs if run.cpu_percent is not None]
        if cpu:
            add(m.CPU, key, sum(cpu) / 100)

    for task, by_status in ended.items():
        _render_ended(sink, keys[task], by_status)

    _render_usage(sink, keys, snapshot)

    latest_start = {run.task: run for run in snapshot.latest}
    successes = {task: rows["FINISHED"].end for task, rows in ended.items() if "FINISHED" in rows}
    for item in snapshot.declared:
        _render_declared(
            sink,
            keys[item.task],
            item,
            at=snapshot.at,
            declared=declared,
            latest=latest_start,
            successes=successes,
        )


def _render_current(
    sink: Sink,
    key: TaskKey,
    run: RunningRun,
    recent_durations: Sequence[float],
    curve: ProgressCurve | None,
) -> None:
    """Series about a task's current run (its newest running run)."""
    add = sink.add
    add(m.LAST_HEARTBEAT, key, run.last_update)
    optional: list[tuple[m.MetricSpec, float | None]] = [
        (m.OVERALL_PROGRESS, overall_ratio(run)),
        (m.SUBTASK_PROGRESS, subtask_ratio(run)),
        (m.CURRENT_SUBTASK, run.current_subtask),
        (m.SUBTASKS_COMPLETED, subtasks_completed(run)),
        (m.SUBTASKS, run.total_subtasks),
        (m.LAST_PROGRESS, run.last_progress),
        (m.PREDICTED_END, predicted_end(run, recent_durations, curve)),
    ]
    for spec, value in optional:
        if value is not None:
            add(spec, key, float(value))


def _render_ended(sink: Sink, key: TaskKey, by_status: dict[str, LastEnded]) -> None:
    """Series about a task's ended runs: last end, success, failure, durations."""
    add = sink.add
    if "FINISHED" in by_status:
        finished = by_status["FINISHED"]
        add(m.LAST_SUCCESS, key, finished.end)
        if finished.recent_durations:
            ordered = sorted(finished.recent_durations)
            for q, label in _QUANTILE_LABELS:
                sink.add_with(m.RECENT_DURATION, key, label, _sorted_quantile(ordered, q))
    if "FAILED" in by_status:
        add(m.LAST_FAILURE, key, by_status["FAILED"].end)
    last = max(by_status.values(), key=lambda row: row.end)
    add(m.LAST_END, key, last.end)
    add(m.LAST_DURATION, key, max(0.0, last.end - last.start))


def _render_usage(sink: Sink, keys: dict[str, TaskKey], snapshot: Snapshot) -> None:
    """The resource series: running runs' current rates, latest ended runs' totals."""
    by_task: dict[str, list[RunResources]] = {}
    for sampled in snapshot.resources:
        by_task.setdefault(sampled.task, []).append(sampled)
    for task, rows in by_task.items():
        if task in keys:
            _render_resources(sink, keys[task], rows)
    for totals in snapshot.totals:
        if totals.task in keys:
            _render_totals(sink, keys[totals.task], totals)


def _render_resources(sink: Sink, key: TaskKey, rows: Sequence[RunResources]) -> None:
    """Current rates and counts of a task's running runs (those with samples), summed."""
    rates = [
        (m.DISK_READ_RATE, [(r.span, r.disk_read) for r in rows]),
        (m.DISK_WRITE_RATE, [(r.span, r.disk_write) for r in rows]),
        (m.TCP_RECEIVE_RATE, [(r.span, r.tcp_received) for r in rows]),
        (m.TCP_SEND_RATE, [(r.span, r.tcp_sent) for r in rows]),
    ]
    for spec, growths in rates:
        # Cumulative figures never go down; a negative difference is a bad row, read as 0.
        known = [max(0.0, grown) / span for span, grown in growths if span and grown is not None]
        if known:
            sink.add(spec, key, sum(known))
    for spec, values in (
        (m.DB_CONNECTIONS, [r.db_connections for r in rows]),
        (m.OPEN_FDS, [r.open_fds for r in rows]),
    ):
        present = [value for value in values if value is not None]
        if present:
            sink.add(spec, key, float(sum(present)))


def _render_totals(sink: Sink, key: TaskKey, row: EndedTotals) -> None:
    """What the task's latest ended run used in all, and its work counts (at most 32)."""
    peak = None if row.peak_memory_mb is None else row.peak_memory_mb * _MIB
    for spec, value in (
        (m.ENDED_CPU, row.cpu_seconds),
        (m.ENDED_PEAK_MEMORY, peak),
        (m.ENDED_DISK_READ, row.disk_read),
        (m.ENDED_DISK_WRITE, row.disk_write),
        (m.ENDED_TCP_RECEIVED, row.tcp_received),
        (m.ENDED_TCP_SENT, row.tcp_sent),
    ):
        if value is not None:
            sink.add(spec, key, float(value))
    counts = row.counts if isinstance(row.counts, dict) else {}
    # sql/0010 holds counts to at most 32 whole numbers; the bound is kept here too, so a row
    # written around the constraint cannot blow up the label's cardinality.
    named = sorted(
        (label_value(str(name)), float(value))
        for name, value in counts.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    )
    for name, value in named[: m.MAX_COUNT_NAMES]:
        sink.add_with(m.ENDED_WORK, key, name, value)


def _render_declared(
    sink: Sink,
    key: TaskKey,
    row: Declared,
    *,
    at: float,
    declared: dict[str, Declared],
    latest: dict[str, LatestRun],
    successes: dict[str, float],
) -> None:
    """Series of a declared task: its declared limits and the checks of its schedule."""
    add = sink.add
    add(m.START_GRACE, key, row.start_grace)
    if row.max_duration is not None:
        add(m.MAX_DURATION, key, row.max_duration)
    if row.next_start is not None:
        add(m.NEXT_EXPECTED_START, key, row.next_start)
    if row.previous_start is not None:
        add(m.LAST_EXPECTED_START, key, row.previous_start)
        add(m.MISSED_START, key, 1.0 if missed_start(row, at) else 0.0)
        add(m.STARTS_SINCE_EXPECTED, key, float(row.started_since))
    if row.depends_on:
        add(m.BEFORE_DEPENDENCY, key, 1.0 if _early(row, declared, latest, successes) else 0.0)


def _early(
    row: Declared,
    declared: dict[str, Declared],
    latest: dict[str, LatestRun],
    successes: dict[str, float],
) -> bool:
    """Whether the run that counts now started before a dependency was done.

    The run that counts is the task's latest one when it started since the last expected start
    (scheduled tasks) or is still running (tasks started by hand); otherwise nothing is checked.
    """
    run = latest.get(row.task)
    if run is None:
        return False
    if row.schedule is not None:
        if row.previous_start is None or run.start < row.previous_start:
            return False
    elif run.status not in m.RUNNING_STATUSES:
        return False
    dependencies = [
        declared.get(name) or Declared(name, None, None, "UTC", 0.0, None, (), None, 0.0)
        for name in row.depends_on
    ]
    return started_before_dependency(run.start, dependencies, successes)
