"""When to keep a resource sample: every 10 s for a run's first hour, then every 60 s.

A run's samples become rows of ``pipeline_run_sample``; without thinning a 3-day run would leave
25,920 of them. With the default tiers it leaves at most ``max_rows(3 days)`` = 4,622: 360 for
the first hour, 60 an hour after, plus the first and the last. The rule is a pure function of
the run's age and of when the last kept sample was taken, so the writer can call it each cycle
and tests can drive it with any clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_TIERS", "SampleCadence", "SampleSchedule"]

# (from this run age in seconds, keep one sample per this many seconds), ascending ages.
DEFAULT_TIERS: tuple[tuple[float, float], ...] = ((0.0, 10.0), (3600.0, 60.0))


@dataclass(frozen=True)
class SampleCadence:
    tiers: tuple[tuple[float, float], ...] = DEFAULT_TIERS

    def __post_init__(self) -> None:
        if not self.tiers or self.tiers[0][0] != 0:
            raise ValueError("the first tier must start at age 0")
        ages = [age for age, _ in self.tiers]
        if ages != sorted(ages) or len(set(ages)) != len(ages):
            raise ValueError("tier ages must be strictly ascending")
        for age, every in self.tiers:
            if not (math.isfinite(age) and math.isfinite(every) and every > 0):
                raise ValueError(f"a tier needs a finite age and a positive interval: {age, every}")

    def interval(self, age: float) -> float:
        """Seconds between kept samples for a run ``age`` seconds old."""
        chosen = self.tiers[0][1]
        for start, every in self.tiers:
            if age >= start:
                chosen = every
        return chosen

    def due(self, age: float, last_kept_age: float | None, *, final: bool = False) -> bool:
        """Keep a sample taken at run age ``age``, the previous one kept at ``last_kept_age``
        (None: none yet)? The first and the ``final`` one are always kept."""
        if final or last_kept_age is None:
            return True
        return age - last_kept_age >= self.interval(age)

    def max_rows(self, duration: float) -> int:
        """An upper bound on the rows a run of ``duration`` seconds keeps (first and last
        included), for any sampling rate of the caller."""
        rows = 2
        bounds = [age for age, _ in self.tiers[1:]] + [math.inf]
        for (start, every), end in zip(self.tiers, bounds, strict=True):
            if duration > start:
                rows += math.ceil((min(duration, end) - start) / every)
        return rows


class SampleSchedule:
    """One run's cadence against a clock: ``due()`` before sampling, ``kept()`` after keeping."""

    def __init__(
        self,
        cadence: SampleCadence | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cadence = cadence or SampleCadence()
        self._clock = clock
        self._started = clock()
        self._last_kept: float | None = None

    def age(self) -> float:
        return self._clock() - self._started

    def due(self, *, final: bool = False) -> bool:
        return self.cadence.due(self.age(), self._last_kept, final=final)

    def kept(self) -> None:
        self._last_kept = self.age()
