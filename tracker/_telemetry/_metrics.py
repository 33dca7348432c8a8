"""pipetrack's OpenTelemetry metrics: progress and memory gauges, run duration, active runs, and
each run's resources and work counts.

The gauges are observable: the SDK calls back at collection time and the callbacks read each
live run's progress then, so a progress call in the user's loop costs nothing here. So are the
resource instruments, which read the run's latest resource sample (the tracker's writer takes
one every 10 s and at subtask boundaries; ``tracker._record.measure``) and its work counts:
``process.cpu.time``, ``process.disk.io`` (``disk.io.direction``), ``process.network.io``
(``network.io.direction``: the payload bytes of the run's TCP connections, not all network
traffic), ``process.open_file_descriptor.count`` (OpenTelemetry's semantic conventions; newer
versions call it ``process.unix.file_descriptor.count``),
``pipetrack.process.connection.count`` (``pipetrack.connection.kind``: database or other) and
``pipetrack.run.work`` (``pipetrack.count.name``). For a command under ``pipetrack run`` they
are its process tree's. Attributes are bounded (task name, stage, run state, result, error
type, direction, a run's at most 32 count names) — never run ids; runs of one task in one
process are summed.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Imported only when telemetry is on (tracker._telemetry._run loads this module lazily).
from opentelemetry.metrics import Observation

from tracker._telemetry._run import ProgressRatios, ProgressSource, Resources, ResourceSource

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter

logger = logging.getLogger("tracker")

RUN_PROGRESS = "pipetrack.run.progress"
SUBTASK_PROGRESS = "pipetrack.subtask.progress"
MEMORY_USAGE = "pipetrack.process.memory.usage"
RUN_DURATION = "cicd.pipeline.run.duration"  # OpenTelemetry CI/CD semantic conventions
RUN_ACTIVE = "cicd.pipeline.run.active"  # idem
CPU_TIME = "process.cpu.time"  # OpenTelemetry process semantic conventions
DISK_IO = "process.disk.io"  # idem
NETWORK_IO = "process.network.io"  # idem
OPEN_FDS = "process.open_file_descriptor.count"  # idem (v1.27; later process.unix.…)
CONNECTIONS = "pipetrack.process.connection.count"
RUN_WORK = "pipetrack.run.work"

# Batch runs last from seconds to a day; the SDK's default buckets (meant for milliseconds)
# would put every run longer than three hours into the overflow bucket.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
DURATION_BUCKETS += (7200, 14400, 28800, 86400)

# The counters report an ended run's final totals once more, as the gauges its final progress.
_COUNTERS = (CPU_TIME, DISK_IO, NETWORK_IO, RUN_WORK)
_GAUGES = (RUN_PROGRESS, SUBTASK_PROGRESS, MEMORY_USAGE, *_COUNTERS)
_NOTHING = Resources()


@dataclass
class _Live:
    attributes: dict[str, str]
    source: ProgressSource
    resources: ResourceSource | None = None
    final: ProgressRatios | None = None
    final_resources: Resources = _NOTHING
    #: gauges that have not yet reported the final value of an ended run
    unreported: set[str] = field(default_factory=lambda: set(_GAUGES))


def _ratio(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return min(1.0, max(0.0, float(value)))


class Instruments:
    """The instruments of one meter, and the live runs the gauges read."""

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, _Live] = {}
        self._keys = itertools.count(1)
        self._process: Any = None
        meter.create_observable_gauge(
            RUN_PROGRESS,
            callbacks=[self._observe_overall],
            unit="1",
            description="Overall progress of running pipeline runs, 0 to 1.",
        )
        meter.create_observable_gauge(
            SUBTASK_PROGRESS,
            callbacks=[self._observe_subtask],
            unit="1",
            description="Progress within the current subtask of running pipeline runs, 0 to 1.",
        )
        meter.create_observable_gauge(
            MEMORY_USAGE,
            callbacks=[self._observe_memory],
            unit="By",
            description="Resident memory of the process running a pipeline run.",
        )
        self._duration = meter.create_histogram(
            RUN_DURATION,
            unit="s",
            description="Duration of a pipeline run grouped by pipeline, state and result.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._active = meter.create_up_down_counter(
            RUN_ACTIVE,
            unit="{run}",
            description="The number of pipeline runs currently active in the system by state.",
        )
        self._resource_instruments(meter)

    def _resource_instruments(self, meter: Meter) -> None:
        meter.create_observable_counter(
            CPU_TIME,
            callbacks=[self._observe_cpu],
            unit="s",
            description="CPU seconds the process (tree) of a pipeline run used since it began.",
        )
        meter.create_observable_counter(
            DISK_IO,
            callbacks=[self._observe_disk],
            unit="By",
            description="Bytes a pipeline run's process (tree) read from and wrote to storage.",
        )
        meter.create_observable_counter(
            NETWORK_IO,
            callbacks=[self._observe_network],
            unit="By",
            description=(
                "Payload bytes a pipeline run's process (tree) received and sent over TCP, as "
                "each connection's tcp_info says when sampled: not UDP, not a connection opened "
                "and closed between two samples."
            ),
        )
        meter.create_observable_up_down_counter(
            OPEN_FDS,
            callbacks=[self._observe_fds],
            unit="{file_descriptor}",
            description="File descriptors open in the process (tree) running a pipeline run.",
        )
        meter.create_observable_up_down_counter(
            CONNECTIONS,
            callbacks=[self._observe_connections],
            unit="{connection}",
            description=(
                "Open TCP connections of a pipeline run's process (tree): to a database (its "
                "well-known ports, the configured DSN, PostgreSQL's socket) or other. The "
                "tracker's own connection is not counted."
            ),
        )
        meter.create_observable_counter(
            RUN_WORK,
            callbacks=[self._observe_work],
            unit="{item}",
            description="Work a pipeline run counted (run.count, pipetrack count), by count name.",
        )

    # -- runs ----------------------------------------------------------------------------------

    def run_started(
        self,
        *,
        task_name: str,
        stage: str,
        source: ProgressSource,
        resources: ResourceSource | None = None,
    ) -> int:
        """Count the run as active and let the gauges read ``source`` (and the resource
        instruments ``resources``); returns its key."""
        attributes = {"cicd.pipeline.name": task_name, "pipetrack.stage": stage}
        key = next(self._keys)
        with self._lock:
            self._runs[key] = _Live(attributes=attributes, source=source, resources=resources)
        self._active.add(1, {**attributes, "cicd.pipeline.run.state": "executing"})
        return key

    def run_ended(
        self, key: int, *, duration_s: float, result: str, error_type: str | None
    ) -> None:
        """Record the duration, uncount the run; the gauges report its final values once more."""
        with self._lock:
            live = self._runs.get(key)
        if live is None:
            return
        try:
            final = live.source()
        except Exception:
            logger.debug("telemetry: progress source failed at run end", exc_info=True)
            final = ProgressRatios(None, None)
        final_resources = _read_resources(live.resources) or _NOTHING
        with self._lock:
            live.final_resources = final_resources
            live.final = final
        state = {**live.attributes, "cicd.pipeline.run.state": "executing"}
        self._active.add(-1, state)
        outcome = {**state, "cicd.pipeline.result": result}
        if error_type:
            outcome["error.type"] = error_type
        self._duration.record(max(0.0, duration_s), outcome)

    def forget_all(self) -> None:
        """After a fork (in the child): replaced, not acquired, as another thread may have
        held the lock at the fork."""
        self._lock = threading.Lock()
        self._runs.clear()

    # -- observable gauge callbacks (the SDK's collection thread) -------------------------------

    def _snapshot(
        self, gauge: str, *, with_resources: bool = False
    ) -> list[tuple[dict[str, str], Any]]:
        """Each run ``gauge`` reports now: a live run's source (its resource source, with
        ``with_resources``), or an ended run's final values (reported once per gauge, then the
        run is forgotten)."""
        out: list[tuple[dict[str, str], Any]] = []
        with self._lock:
            for key, live in list(self._runs.items()):
                if live.final is None:
                    if not with_resources:
                        out.append((live.attributes, live.source))
                    elif live.resources is not None:
                        out.append((live.attributes, live.resources))
                elif gauge in live.unreported:
                    live.unreported.discard(gauge)
                    final = live.final_resources if with_resources else live.final
                    out.append((live.attributes, final))
                    if not live.unreported:
                        del self._runs[key]
        return out

    def _progress(self, gauge: str) -> Iterator[tuple[dict[str, str], ProgressRatios]]:
        # Sources are read outside the lock: they belong to the tracker and take its locks.
        for attributes, item in self._snapshot(gauge):
            progress = item if isinstance(item, ProgressRatios) else _read(item)
            if progress is not None:
                yield attributes, progress

    def _observe_overall(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, progress in self._progress(RUN_PROGRESS):
            value = _ratio(progress.overall)
            if value is not None:
                yield Observation(value, attributes)

    def _observe_subtask(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, progress in self._progress(SUBTASK_PROGRESS):
            value = _ratio(progress.subtask)
            if value is not None:
                yield Observation(value, attributes)

    def _observe_memory(self, options: CallbackOptions) -> Iterable[Observation]:
        # Only live runs: an ended run's process memory no longer belongs to it.
        live = [
            a for a, item in self._snapshot(MEMORY_USAGE) if not isinstance(item, ProgressRatios)
        ]
        rss = self._rss() if live else None
        if rss is None:
            return
        for attributes in live:
            yield Observation(rss, attributes)

    def _resources(
        self, instrument: str, *, live_only: bool = False
    ) -> Iterator[tuple[dict[str, str], Resources]]:
        """Each run's resource figures: a live run's read now, an ended run's final ones (once,
        unless ``live_only``: an ended run's open files are no longer its own)."""
        for attributes, item in self._snapshot(instrument, with_resources=True):
            if isinstance(item, Resources):
                if not live_only:
                    yield attributes, item
                continue
            figures = _read_resources(item)
            if figures is not None:
                yield attributes, figures

    def _summed(
        self,
        instrument: str,
        values: Callable[[Resources], Iterable[tuple[dict[str, str], float | None]]],
        *,
        live_only: bool = False,
    ) -> list[Observation]:
        """One observation per attribute set: runs of one task in this process are summed."""
        totals: dict[tuple[tuple[str, str], ...], float] = {}
        for attributes, figures in self._resources(instrument, live_only=live_only):
            for extra, value in values(figures):
                if value is not None:
                    key = tuple(sorted({**attributes, **extra}.items()))
                    totals[key] = totals.get(key, 0) + value
        return [Observation(total, dict(key)) for key, total in totals.items()]

    def _observe_cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._summed(CPU_TIME, lambda r: [({}, r.cpu_seconds)])

    def _observe_disk(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._summed(
            DISK_IO,
            lambda r: [
                ({"disk.io.direction": "read"}, r.disk_read_bytes),
                ({"disk.io.direction": "write"}, r.disk_write_bytes),
            ],
        )

    def _observe_network(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._summed(
            NETWORK_IO,
            lambda r: [
                ({"network.io.direction": "receive"}, r.tcp_received_bytes),
                ({"network.io.direction": "transmit"}, r.tcp_sent_bytes),
            ],
        )

    def _observe_work(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._summed(
            RUN_WORK, lambda r: [({"pipetrack.count.name": n}, c) for n, c in r.counts]
        )

    def _observe_fds(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._summed(OPEN_FDS, lambda r: [({}, r.open_fds)], live_only=True)

    def _observe_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._summed(
            CONNECTIONS,
            lambda r: [
                ({"pipetrack.connection.kind": "database"}, r.db_connections),
                ({"pipetrack.connection.kind": "other"}, r.other_connections),
            ],
            live_only=True,
        )

    def _rss(self) -> int | None:
        try:
            if self._process is None:
                import psutil

                self._process = psutil.Process(os.getpid())
            return int(self._process.memory_info().rss)
        except Exception:
            logger.debug("telemetry: cannot read process memory", exc_info=True)
            return None


def _read_resources(source: ResourceSource | None) -> Resources | None:
    if source is None:
        return None
    try:
        return source()
    except Exception:
        # A callback must never raise into the SDK's collection.
        logger.debug("telemetry: resource source failed", exc_info=True)
        return None


def _read(source: ProgressSource) -> ProgressRatios | None:
    try:
        return source()
    except Exception:
        # A gauge callback must never raise into the SDK's collection.
        logger.debug("telemetry: progress source failed", exc_info=True)
        return None


_instruments_lock = threading.Lock()


def instruments_for(telemetry: Any) -> Instruments | None:
    """The instruments on ``telemetry``'s meter, made once (a meter allows one of each name)."""
    if telemetry.meter is None:
        return None
    with _instruments_lock:
        if telemetry.instruments is None:
            telemetry.instruments = Instruments(telemetry.meter)
        return telemetry.instruments  # type: ignore[no-any-return]


def _after_fork_in_child() -> None:
    # A thread of the parent may have held it at the fork: held for ever in the child.
    global _instruments_lock  # noqa: PLW0603 - replaced, never acquired, in the child
    _instruments_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
