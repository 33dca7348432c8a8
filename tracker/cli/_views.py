"""``pipetrack status | top | history | show``: the canonical record, read in a terminal.

Plain text that fits 80 columns (colour only on a terminal, and never with NO_COLOR set), or
``--json`` for scripts. Reads only, through the monitor's query layer (monitor/queries), as the
web pages do; this module holds the arguments and handlers, tracker/cli/_view_text.py the
tables, tracker/cli/_view_json.py the JSON. Those and the query layer load when a command runs:
the side-channel commands (``pipetrack progress`` ...) share this parser and must start quickly.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tracker._db.connect import connect
from tracker._db.ready import ready_target
from tracker.cli._common import EXIT_NOT_OK, EXIT_OK, add_dsn_option, complain, say

if TYPE_CHECKING:
    import psycopg

    from monitor.queries import HistoryFilter, NowFilter

__all__ = ["register", "show_status"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="the latest run of every task",
        description=(
            "The latest run of each task: status, progress, current subtask, ETA, host. Lost, "
            "stalled and overdue tasks show as such, with a line saying why."
        ),
    )
    _now_filters(status)
    _common(status)
    status.set_defaults(handler=_status)

    top = commands.add_parser(
        "top",
        help="the latest runs, refreshing live",
        description="`pipetrack status` with progress bars, refreshed until interrupted.",
    )
    top.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    top.add_argument(
        "--count", type=int, default=0, metavar="N", help="stop after N refreshes (0: never)"
    )
    _now_filters(top)
    _common(top)
    top.set_defaults(handler=_top)

    history = commands.add_parser(
        "history",
        help="past runs of a task",
        description="Past runs of TASK, newest first, with durations and outcomes.",
    )
    history.add_argument("task", metavar="TASK")
    history.add_argument("--limit", default="20", metavar="N", help="at most N runs (1-1000)")
    history.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help="only runs with this status (FINISHED, FAILED, ...); repeat or comma-separate",
    )
    history.add_argument("--since", metavar="WHEN", help="runs started since (24h, 2026-01-05)")
    history.add_argument("--until", metavar="WHEN", help="runs started before (24h, 2026-01-06)")
    _common(history)
    history.set_defaults(handler=_history)

    show = commands.add_parser(
        "show",
        help="one run and its subtasks",
        description="Everything recorded about one run, and its subtasks.",
    )
    show.add_argument("run_id", metavar="RUN_ID")
    _common(show)
    show.set_defaults(handler=_show)


def _now_filters(parser: argparse.ArgumentParser) -> None:
    """The Now page's filters (monitor.queries.NowFilter)."""
    parser.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="STAGE",
        help="only tasks of this stage (DAILY, PREREQ, ...); repeat or comma-separate",
    )
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help=(
            "only tasks shown with this status: RUNNING, FINISHED, FAILED, CANCELLED, STARTED, "
            "LOST, STALLED, OVERDUE or NOT_RUN; repeat or comma-separate"
        ),
    )
    parser.add_argument("--task", metavar="GLOB", help="only tasks whose name matches (DAILY_0*)")
    parser.add_argument(
        "--host", action="append", default=[], metavar="HOST", help="only runs on this host"
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="only tasks whose latest run started since (24h, a date)"
    )
    parser.add_argument(
        "--problems",
        action="store_true",
        help="only failed, lost, stalled and overdue tasks",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_dsn_option(parser)


@contextmanager
def _reading(dsn: str | None) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with connect(ready_target(dsn)) as conn:
        yield conn


def now_filter(args: argparse.Namespace) -> NowFilter:
    """The Now filters given on the command line; ConfigurationError for a bad one."""
    from monitor.filters import now_filter as parse

    return parse(
        stages=args.stage,
        statuses=args.status,
        task=args.task,
        hosts=args.host,
        since=args.since,
        problems=args.problems,
    )


def _latest(dsn: str | None, wanted: NowFilter | None = None) -> list[dict[str, Any]]:
    from monitor.queries import latest_runs

    with _reading(dsn) as conn:
        return latest_runs(conn, wanted).runs


def _status(args: argparse.Namespace) -> int:
    from tracker.cli._view_json import dump
    from tracker.cli._view_text import render_status

    rows = _latest(args.dsn, now_filter(args))
    if args.json:
        dump(rows)
    else:
        for line in render_status(rows):
            say(line, painted=True)
    return EXIT_OK


def show_status(dsn: str | None) -> None:
    """Print the status table of the latest run of every task."""
    from tracker.cli._view_text import render_status

    for line in render_status(_latest(dsn)):
        say(line, painted=True)


def _top(args: argparse.Namespace) -> int:
    from tracker.cli._view_json import dump
    from tracker.cli._view_text import render_status

    wanted = now_filter(args)
    shown = 0
    clear = sys.stdout.isatty()
    try:
        while True:
            rows = _latest(args.dsn, wanted)
            if args.json:
                dump(rows)
            else:
                if clear:
                    sys.stdout.write("\033[H\033[2J")
                stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                say(f"pipetrack top — {stamp}, every {args.interval:g}s (Ctrl-C to quit)")
                for line in render_status(rows, bars=True):
                    say(line, painted=True)
            shown += 1
            if args.count and shown >= args.count:
                return EXIT_OK
            time.sleep(max(args.interval, 0.1))  # the refresh period itself, not a wait
    except KeyboardInterrupt:
        return EXIT_OK


def _history_filter(args: argparse.Namespace) -> HistoryFilter:
    from monitor.filters import history_filter

    return history_filter(
        statuses=args.status, since=args.since, until=args.until, limit=args.limit
    )


def _history(args: argparse.Namespace) -> int:
    from monitor.queries import task_runs
    from tracker.cli._view_json import dump
    from tracker.cli._view_text import render_history

    wanted = _history_filter(args)
    with _reading(args.dsn) as conn:
        rows = task_runs(conn, args.task, wanted)
    if args.json:
        dump(rows)
    else:
        for line in render_history(rows):
            say(line, painted=True)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from monitor.queries import run_detail
    from tracker.cli._view_json import dump
    from tracker.cli._view_text import render_run

    try:
        run_id = uuid.UUID(args.run_id)
    except ValueError:
        complain(f"{args.run_id!r} is not a run id (a UUID)")
        return EXIT_NOT_OK
    with _reading(args.dsn) as conn:
        detail = run_detail(conn, run_id)
    if detail is None:
        complain(f"no run {run_id}")
        return EXIT_NOT_OK
    if args.json:
        dump(asdict(detail))
    else:
        for line in render_run(detail.run, detail.subtasks, detail.samples):
            say(line, painted=True)
    return EXIT_OK
