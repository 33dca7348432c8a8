"""A sample multi-stage pipeline run through the tracker: what `pipetrack demo` runs.

    pipetrack demo                        # one pass over every stage, then the status table
    pipetrack demo --every 120            # a pass every two minutes (the compose stack's demo)

Each pass runs the stages in order, PREREQ, DAILY, PERIODIC, each task a few subtasks with item
progress; DAILY_03_publish fails on every third pass so the failure panels and alerts have a case.
The database comes from PIPETRACK_DSN (or the embedded server), traces and metrics from OTEL_*.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Task:
    name: str
    steps: tuple[tuple[str, int], ...]  # (subtask name, items)
    fails_every: int = 0  # fail on every n-th pass (0: never)


PIPELINE = (
    Task("PREREQ_01_calendar", (("fetch holidays", 4), ("build calendar", 6))),
    Task("DAILY_01_extract", (("download", 8), ("unpack", 5), ("validate", 8))),
    Task("DAILY_02_transform", (("clean", 10), ("join", 6), ("aggregate", 8))),
    Task("DAILY_03_publish", (("render report", 5), ("upload", 3)), fails_every=3),
    Task("PERIODIC_01_reindex", (("vacuum", 3), ("rebuild index", 6))),
)


class DemoFailure(RuntimeError):
    """The deliberate failure of a demo task (so the failure panels have something to show)."""


def run_task(task: Task, *, pass_number: int, pace: float, alive: Path | None) -> bool:
    """Run one task through the tracker; returns whether it finished."""
    import tracker

    if alive is not None:
        alive.touch()
    try:
        with tracker.run(task.name, total_subtasks=len(task.steps)) as run:
            for index, (step, items) in enumerate(task.steps, start=1):
                with run.subtask(step, items_total=items) as st:
                    for _item in range(items):
                        # stands in for real work of uneven length
                        time.sleep(pace * random.uniform(0.5, 1.5))  # noqa: S311 - not crypto
                        st.advance()
                    last = index == len(task.steps)
                    if last and task.fails_every and pass_number % task.fails_every == 0:
                        raise DemoFailure(f"{task.name}: upload target refused the report")
    except DemoFailure as exc:
        # The run is already recorded FAILED, with this traceback; the pipeline goes on.
        print(f"demo: {exc}", file=sys.stderr)
        return False
    return True


def run_pass(pass_number: int, *, pace: float, alive: Path | None) -> int:
    """One pass over every stage, in order; returns how many tasks failed."""
    failed = 0
    for task in PIPELINE:
        if not run_task(task, pass_number=pass_number, pace=pace, alive=alive):
            failed += 1
    return failed


def run_forever(*, every: float, pace: float, alive: Path | None, first_pass: int = 1) -> None:
    """A pass every ``every`` seconds, numbered from ``first_pass``, until interrupted."""
    pass_number = first_pass - 1
    while True:
        pass_number += 1
        started = time.monotonic()
        run_pass(pass_number, pace=pace, alive=alive)
        time.sleep(max(0.0, every - (time.monotonic() - started)))
