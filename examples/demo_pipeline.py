"""A sample multi-stage pipeline run through the tracker, so the dashboards have something to show.

    python examples/demo_pipeline.py --once            # one pass over every stage, then exit
    python examples/demo_pipeline.py --every 120       # a pass every two minutes (the compose demo)

Each pass runs the stages in order, PREREQ, DAILY, PERIODIC, each task a few subtasks with item
progress; DAILY_03_publish fails on every third pass so the failure panels and alerts have a case.
The database comes from PIPETRACK_DSN (or the embedded server), traces and metrics from OTEL_*.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit")
    mode.add_argument("--every", type=float, default=120.0, help="seconds between passes")
    parser.add_argument("--pace", type=float, default=0.5, help="mean seconds per item")
    parser.add_argument("--alive-file", type=Path, help="touched before every task")
    parser.add_argument(
        "--first-pass", type=int, default=1, help="number of the first pass (3 fails a task)"
    )
    args = parser.parse_args(argv)

    if args.once:
        failed = run_pass(args.first_pass, pace=args.pace, alive=args.alive_file)
        return 1 if failed else 0
    pass_number = args.first_pass - 1
    while True:
        pass_number += 1
        started = time.monotonic()
        run_pass(pass_number, pace=args.pace, alive=args.alive_file)
        time.sleep(max(0.0, args.every - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
