"""pipetrack's OpenTelemetry metrics: progress and memory gauges, run duration, active runs.

The gauges are observable: the SDK calls back at collection time and the callbacks read each
live run's progress then, so a progress call in the user's loop costs nothing here. Attributes
are bounded (task name, stage, run state, result, error type) — never run ids.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Imported only when telemetry is on (tracker._telemetry._run loads this module lazily).
from opentelemetry.metrics import Observation

from tracker._telemetry._run import ProgressRatios, ProgressSource

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter

logger = logging.getLogger("tracker")

RUN_PROGRESS = "pipetrack.run.progress"
SUBTASK_PROGRESS = "pipetrack.subtask.progress"
MEMORY_USAGE = "pipetrack.process.memory.usage"
RUN_DURATION = "cicd.pipeline.run.duration"  # OpenTelemetry CI/CD semantic conventions
RUN_ACTIVE = "cicd.pipeline.run.active"  # idem

# Batch runs last from seconds to a day; the SDK's default buckets (meant for milliseconds)
# would put every run longer than three hours into the overflow bucket.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
DURATION_BUCKETS += (7200, 14400, 28800, 86400)

_GAUGES = (RUN_PROGRESS, SUBTASK_PROGRESS, MEMORY_USAGE)


@dataclass
class _Live:
    attributes: dict[str, str]
    source: ProgressSource
    final: ProgressRatios | None = None
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

    # -- runs ----------------------------------------------------------------------------------

    def run_started(self, *, task_name: str, stage: str, source: ProgressSource) -> int:
        """Count the run as active and let the gauges read ``source``; returns its key."""
        attributes = {"cicd.pipeline.name": task_name, "pipetrack.stage": stage}
        key = next(self._keys)
        with self._lock:
            self._runs[key] = _Live(attributes=attributes, source=source)
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
        with self._lock:
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

    def _snapshot(self, gauge: str) -> list[tuple[dict[str, str], ProgressSource | ProgressRatios]]:
        """Each run ``gauge`` reports now: a live run's source, or an ended run's final values
        (reported once per gauge, then the run is forgotten)."""
        out: list[tuple[dict[str, str], ProgressSource | ProgressRatios]] = []
        with self._lock:
            for key, live in list(self._runs.items()):
                if live.final is None:
                    out.append((live.attributes, live.source))
                elif gauge in live.unreported:
                    live.unreported.discard(gauge)
                    out.append((live.attributes, live.final))
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

    def _rss(self) -> int | None:
        try:
            if self._process is None:
                import psutil

                self._process = psutil.Process(os.getpid())
            return int(self._process.memory_info().rss)
        except Exception:
            logger.debug("telemetry: cannot read process memory", exc_info=True)
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
