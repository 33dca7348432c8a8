"""``pipetrack spool …``: see and replay the statuses kept locally while the database was down."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tracker.cli._common import (
    EXIT_NOT_OK,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_dsn_option,
    complain,
    say,
)

if TYPE_CHECKING:
    from tracker._record.spool import Spool


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spool = commands.add_parser(
        "spool",
        help="see and replay statuses spooled while the database was unreachable",
        description=(
            "Statuses the tracker could not write are kept in a local spool (under the data "
            "directory) and replayed automatically once the database answers; these commands "
            "show and replay them by hand."
        ),
    )
    sub = spool.add_subparsers(dest="spool_command", required=True, metavar="COMMAND")

    status = sub.add_parser(
        "status",
        help="list spooled statuses",
        description=(
            "List the spool files and what they hold, and the files set aside as *.corrupt. "
            "Only looks: nothing is read through a link or from a FIFO. Exits 1 if anything "
            "is pending or set aside."
        ),
    )
    _add_dir_option(status)
    status.set_defaults(handler=_status)

    replay = sub.add_parser(
        "replay",
        help="write spooled statuses to the database now",
        description=(
            "Replay spooled statuses, oldest first, into the database they were meant for "
            "(idempotent: a status already written is not written again). Files still being "
            "written by a live process are skipped. A file that is not this user's regular "
            "file, is not readable spool data or has no header is renamed *.corrupt, with one "
            "warning, and the replay goes on. Exits 3 if the database cannot be reached."
        ),
    )
    add_dsn_option(replay)
    _add_dir_option(replay)
    replay.add_argument(
        "--any-target",
        action="store_true",
        help="replay every file into this database, whatever database it was spooled for",
    )
    replay.set_defaults(handler=_replay)


def _add_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="spool folder (default: the spool folder under $PIPETRACK_DATA_DIR)",
    )


def _spool(args: argparse.Namespace) -> Spool:
    from pathlib import Path

    from tracker._record.spool import Spool
    from tracker._settings import TrackerSettings

    settings = TrackerSettings(spool_dir=Path(args.spool_dir) if args.spool_dir else None)
    return Spool(settings.resolved_spool_dir(), max_bytes=settings.spool_max_bytes)


def _status(args: argparse.Namespace) -> int:
    spool = _spool(args)
    try:
        files = spool.status()
        aside = spool.set_aside()
    except OSError as exc:
        complain(f"cannot read the spool in {spool.directory}: {exc.strerror or exc}")
        return EXIT_NOT_OK
    say(f"spool: {spool.directory}")
    if not files and not aside:
        say("empty")
        return EXIT_OK
    for item in files:
        if item.problem is not None:
            say(f"{item.path.name}  not read: {item.problem} (a replay renames it *.corrupt)")
            continue
        state = "in use" if item.in_use else "waiting"
        bad = f", {item.bad_lines} unreadable line(s)" if item.bad_lines else ""
        say(
            f"{item.path.name}  {item.records} status(es) of {len(item.runs)} run(s){bad}, "
            f"{item.size} bytes, {state}, from pid {item.pid} on {item.host}, for {item.target}"
        )
    readable = [item for item in files if item.problem is None]
    if readable:
        total = sum(item.records for item in readable)
        say(f"{total} status(es) in {len(readable)} file(s) waiting to be written")
    if aside:
        say(
            f"{len(aside)} file(s) moved aside as *.corrupt, never replayed: look at them, "
            "then delete them"
        )
    return EXIT_NOT_OK


def _replay(args: argparse.Namespace) -> int:
    from tracker._record.store import Store, Unavailable

    spool = _spool(args)
    store = Store(args.dsn)
    key = store.resolve()
    try:
        store.connect()
    except Unavailable as exc:
        complain(f"database unavailable: {exc}")
        return EXIT_UNAVAILABLE
    try:
        result = spool.replay(None if args.any_target else key, store.write, own_first=False)
    except OSError as exc:
        complain(f"cannot read the spool in {spool.directory}: {exc.strerror or exc}")
        return EXIT_NOT_OK
    finally:
        store.close()
    say(
        f"replayed {result.replayed} status(es) from {result.files_done} file(s); "
        f"{result.rejected} rejected, {result.corrupt} corrupt line(s) skipped, "
        f"{result.files_quarantined} file(s) quarantined (renamed *.corrupt), "
        f"{result.files_skipped} file(s) left (in use or for another database)"
    )
    if result.unavailable is not None:
        complain(f"stopped: database unavailable ({result.unavailable})")
        return EXIT_UNAVAILABLE
    return EXIT_OK
