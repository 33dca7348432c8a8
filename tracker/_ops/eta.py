"""Predicting when a running run will finish, from its own progress and its task's history.

Three sources, each good at a different moment:
- the run's own rate (elapsed / progress): unbiased late in a run, wild early and wrong whenever
  progress does not grow evenly with time (subtasks of unequal length);
- the task's recent durations (their median): good before the run has shown much, blind to
  this run being slower or faster;
- the task's progress curve (at which fraction of a past run's duration each subtask ended):
  turns "3 of 8 subtasks done" into "about 60 % of the time done" for runs of a consistent shape.
The blend weighs the run's own evidence by its progress: at 10 % done the history dominates, at
90 % the run itself does. See bench/bench_eta.py for the accuracy of each on synthetic histories.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

# Below this much progress a rate says little; above, it starts to count.
MIN_PROGRESS = 0.01


@dataclass(frozen=True)
class ProgressCurve:
    """Where past runs were in time when they reached each progress mark.

    ``marks`` are progress fractions in (0, 1), increasing; ``time_fractions`` the median share of
    their run's duration that had passed when past runs reached them.
    """

    marks: tuple[float, ...]
    time_fractions: tuple[float, ...]

    @classmethod
    def from_runs(cls, runs: Sequence[Sequence[tuple[float, float]]]) -> ProgressCurve | None:
        """From past runs, each a list of (progress fraction, time fraction) points.

        Points at the same progress mark are pooled across runs (subtask ends recur at the same
        marks when runs have the same number of subtasks); returns None without usable points.
        """
        pooled: dict[float, list[float]] = {}
        for points in runs:
            for progress, time_fraction in points:
                if 0.0 < progress < 1.0 and 0.0 <= time_fraction <= 1.0:
                    pooled.setdefault(round(progress, 6), []).append(time_fraction)
        if not pooled:
            return None
        marks = tuple(sorted(pooled))
        fractions = [statistics.median(pooled[m]) for m in marks]
        # Time only moves forward: a noisy median must not make the curve go back.
        for i in range(1, len(fractions)):
            fractions[i] = max(fractions[i], fractions[i - 1])
        return cls(marks=marks, time_fractions=tuple(fractions))

    def time_fraction_at(self, progress: float) -> float:
        """Interpolated share of the duration passed at ``progress`` (0 at 0 %, 1 at 100 %)."""
        xs = (0.0, *self.marks, 1.0)
        ys = (0.0, *self.time_fractions, 1.0)
        i = bisect_left(xs, progress)
        if i == 0:
            return 0.0
        if i >= len(xs):
            return 1.0
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        if x1 == x0:
            return y1
        return y0 + (y1 - y0) * (progress - x0) / (x1 - x0)


def rate_only(elapsed: float, progress: float) -> float | None:
    """Total duration if the rest goes at the rate so far; None before any progress."""
    if progress < MIN_PROGRESS or elapsed <= 0:
        return None
    return elapsed / min(progress, 1.0)


def predict_total(
    elapsed: float,
    progress: float,
    recent_durations: Sequence[float] = (),
    curve: ProgressCurve | None = None,
) -> float | None:
    """Predicted total duration (seconds) of a run ``elapsed`` seconds in, ``progress`` done.

    Never less than ``elapsed``; None when neither progress nor history says anything.
    """
    progress = min(max(progress, 0.0), 1.0)
    own: float | None = None
    if curve is not None and progress >= MIN_PROGRESS:
        passed = curve.time_fraction_at(progress)
        own = elapsed / passed if passed > 0 else None
    if own is None:
        own = rate_only(elapsed, progress)
    history = statistics.median(recent_durations) if recent_durations else None
    if own is not None and history is not None:
        total = progress * own + (1.0 - progress) * history
    elif own is not None:
        total = own
    elif history is not None:
        total = history
    else:
        return None
    return max(total, elapsed)
