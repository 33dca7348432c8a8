"""``pipetrack archive``, ``reap`` and ``tasks``: keeping the record right over months."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from tracker._db.connect import connect
from tracker._db.ready import ready_target
from tracker._ops import archive, reaper, registry
from tracker._ops.durations import format_duration, parse_duration
from tracker.cli._common import EXIT_OK, add_dsn_option, say
from tracker.errors import ConfigurationError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    archiving = commands.add_parser(
        "archive",
        help="move old finished runs into the partitioned history",
        description=(
            "Move runs that ended more than --older-than ago (and their subtasks) into "
            "pipeline_status_history, in short batches that never block writers."
        ),
    )
    archiving.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d")
    archiving.add_argument(
        "--batch-size", type=int, default=archive.DEFAULT_BATCH, metavar="N", help="runs per batch"
    )
    archiving.add_argument(
        "--drop-partitions-older-than",
        metavar="AGE",
        help="also drop history months that ended more than AGE ago (deletes them for good)",
    )
    add_dsn_option(archiving)
    archiving.set_defaults(handler=_archive)

    reaping = commands.add_parser(
        "reap",
        help="mark runs whose process died silently as FAILED",
        description=(
            "Mark active runs whose heartbeat is older than --stale-after as FAILED, unless their "
            "process is alive on this host. Safe to run from several hosts at once."
        ),
    )
    reaping.add_argument(
        "--stale-after",
        default=format_duration(reaper.DEFAULT_STALE_AFTER),
        metavar="AGE",
        help="heartbeat age that counts as lost (default: %(default)s, four heartbeats)",
    )
    add_dsn_option(reaping)
    reaping.set_defaults(handler=_reap)

    tasks = commands.add_parser(
        "tasks",
        help="the registry of declared tasks and their schedules",
        description="Load and show the declared tasks (schedules, grace, maximum duration).",
    )
    sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    syncing = sub.add_parser(
        "sync",
        help="replace the declared tasks with those in a TOML file",
        description="Replace the declared tasks with those in FILE (see docs/tasks.md).",
    )
    syncing.add_argument("file", type=Path, metavar="FILE")
    add_dsn_option(syncing)
    syncing.set_defaults(handler=_sync)
    listing = sub.add_parser(
        "list", help="show the declared tasks", description="Show the declared tasks."
    )
    add_dsn_option(listing)
    listing.set_defaults(handler=_list)


def _archive(args: argparse.Namespace) -> int:
    older_than = parse_duration(args.older_than, what="--older-than")
    drop_after = (
        parse_duration(args.drop_partitions_older_than, what="--drop-partitions-older-than")
        if args.drop_partitions_older_than
        else None
    )
    if args.batch_size < 1:
        raise ConfigurationError(f"--batch-size must be at least 1, not {args.batch_size}")
    with connect(ready_target(args.dsn)) as conn:
        result = archive.archive(conn, older_than, batch_size=args.batch_size)
        say(
            f"archived {result.runs} runs, {result.subtasks} subtasks, {result.samples} samples,"
            f" in {result.batches} batches"
        )
        if drop_after is not None:
            dropped = archive.drop_partitions(conn, drop_after, now=datetime.now(timezone.utc))
            say(
                f"dropped {len(dropped)} partitions"
                + (f": {', '.join(dropped)}" if dropped else "")
            )
    return EXIT_OK


def _reap(args: argparse.Namespace) -> int:
    stale_after = parse_duration(args.stale_after, what="--stale-after")
    with connect(ready_target(args.dsn)) as conn:
        reaped = reaper.reap_once(conn, stale_after=stale_after)
    for run in reaped:
        say(f"{run.run_id}  {run.task_name}  {run.reason}")
    say(f"reaped {len(reaped)} lost runs")
    return EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    declared = registry.load(args.file)
    with connect(ready_target(args.dsn)) as conn:
        result = registry.sync(conn, declared)
    say(
        f"{len(declared)} tasks declared: {len(result.added)} added, "
        f"{len(result.updated)} updated, {len(result.removed)} removed"
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with connect(ready_target(args.dsn)) as conn:
        declared = registry.declared(conn)
    now = datetime.now(timezone.utc)
    for task in declared:
        upcoming = task.next_start(now)
        say(
            f"{task.name:<40} {task.stage:<12} {task.schedule or '-':<16} "
            f"next {upcoming.isoformat(timespec='minutes') if upcoming else '-'}"
        )
    return EXIT_OK
