"""How accurate is the predicted finish? Rate-only against history-aware estimates.

    python bench/bench_eta.py [--tasks 300] [--history 20] [--seed 7]

Synthetic tasks: each has 3 to 12 subtasks of unequal typical length (log-normal weights) and a
typical duration of 10 min to 3 h; each run scales that by a per-run factor (log-normal,
sigma 0.15) and each subtask by its own jitter (sigma 0.10). Progress is reported the way
pipetrack computes it: (completed subtasks + the current one's item fraction) / total, with
items processed evenly.
For each task, the last --history runs form the history; the next run is predicted when its
progress reaches 25 %, 50 % and 75 %. Error = |predicted total duration - actual|.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from tracker._ops.eta import ProgressCurve, predict_total, rate_only

MARKS = (0.25, 0.50, 0.75)


@dataclass(frozen=True)
class Run:
    subtask_seconds: tuple[float, ...]

    @property
    def total(self) -> float:
        return sum(self.subtask_seconds)

    def elapsed_at(self, progress: float) -> float:
        """Seconds from start until reported progress reaches ``progress``."""
        count = len(self.subtask_seconds)
        done, fraction = divmod(progress * count, 1.0)
        whole = int(done)
        before = sum(self.subtask_seconds[:whole])
        current = self.subtask_seconds[whole] if whole < count else 0.0
        return before + fraction * current

    def curve_points(self) -> list[tuple[float, float]]:
        count, total, points, passed = len(self.subtask_seconds), self.total, [], 0.0
        for index, seconds in enumerate(self.subtask_seconds[:-1], start=1):
            passed += seconds
            points.append((index / count, passed / total))
        return points


def make_task(rng: random.Random) -> tuple[list[float], float]:
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(rng.randint(3, 12))]
    scale = sum(weights)
    return [w / scale for w in weights], rng.uniform(600, 3 * 3600)


def make_run(rng: random.Random, weights: list[float], typical: float) -> Run:
    factor = rng.lognormvariate(0.0, 0.15)
    return Run(tuple(typical * factor * w * rng.lognormvariate(0.0, 0.10) for w in weights))


Estimator = Callable[[float, float, list[Run]], float | None]


def estimators() -> dict[str, Estimator]:
    def history_median(elapsed: float, progress: float, history: list[Run]) -> float | None:
        return max(statistics.median(r.total for r in history), elapsed)

    def blended(elapsed: float, progress: float, history: list[Run]) -> float | None:
        return predict_total(elapsed, progress, [r.total for r in history])

    def blended_curve(elapsed: float, progress: float, history: list[Run]) -> float | None:
        curve = ProgressCurve.from_runs([r.curve_points() for r in history])
        return predict_total(elapsed, progress, [r.total for r in history], curve)

    return {
        "rate only": lambda elapsed, progress, _history: rate_only(elapsed, progress),
        "history median": history_median,
        "blend (rate+history)": blended,
        "blend + subtask curve": blended_curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - reproducible synthetic data, not security
    errors: dict[str, dict[float, list[float]]] = {
        name: {m: [] for m in MARKS} for name in estimators()
    }
    relative: dict[str, dict[float, list[float]]] = {
        name: {m: [] for m in MARKS} for name in estimators()
    }
    for _ in range(args.tasks):
        weights, typical = make_task(rng)
        history = [make_run(rng, weights, typical) for _ in range(args.history)]
        run = make_run(rng, weights, typical)
        for mark in MARKS:
            elapsed = run.elapsed_at(mark)
            for name, estimate in estimators().items():
                predicted = estimate(elapsed, mark, history)
                assert predicted is not None
                assert math.isfinite(predicted)
                errors[name][mark].append(abs(predicted - run.total))
                relative[name][mark].append(abs(predicted - run.total) / run.total)
    print(
        f"mean absolute error of the predicted finish over {args.tasks} tasks "
        f"({args.history} past runs each), minutes and % of the run's duration"
    )
    print(f"{'estimator':<24}" + "".join(f"{f'at {m:.0%}':>18}" for m in MARKS))
    for name in estimators():
        cells = "".join(
            f"{statistics.mean(errors[name][m]) / 60:>9.1f} min"
            f" {statistics.mean(relative[name][m]):>4.0%}"
            for m in MARKS
        )
        print(f"{name:<24}{cells}")


if __name__ == "__main__":
    main()
