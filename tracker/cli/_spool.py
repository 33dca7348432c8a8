"""``pipetrack spool …``: see and replay the statuses kept locally while the database was down."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tracker.cli._common import EXIT_NOT_OK, EXIT_OK, EXIT_UNAVAILABLE, add_dsn_option, say

if TYPE_CHECKING:
    from tracker._spool import Spool


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
        description="List the spool files and what they hold. Exits 1 if anything is pending.",
    )
    _add_dir_option(status)
    status.set_defaults(handler=_status)

    replay = sub.add_parser(
        "replay",
        help="write spooled statuses to the database now",
        description=(
            "Replay spooled statuses, oldest first, into the database they were meant for "
            "(idempotent: a status already written is not written again). Files still being "
            "written by a live process are skipped. Exits 3 if the database cannot be reached."
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

    from tracker._settings import Settings
    from tracker._spool import Spool

    settings = Settings(spool_dir=Path(args.spool_dir) if args.spool_dir else None)
    return Spool(settings.resolved_spool_dir(), max_bytes=settings.spool_max_bytes)


def _status(args: argparse.Namespace) -> int:
    spool = _spool(args)
    files = spool.status()
    say(f"spool: {spool.directory}")
    if not files:
        say("empty")
        return EXIT_OK
    for item in files:
        state = "in use" if item.in_use else "waiting"
        say(
            f"{item.path.name}  {item.records} status(es) of {len(item.runs)} run(s), "
            f"{item.size} bytes, {state}, from pid {item.pid} on {item.host}, for {item.target}"
        )
    total = sum(item.records for item in files)
    say(f"{total} status(es) in {len(files)} file(s) waiting to be written")
    return EXIT_NOT_OK


def _replay(args: argparse.Namespace) -> int:
    from tracker._store import Store, Unavailable

    spool = _spool(args)
    store = Store(args.dsn)
    key = store.resolve()
    try:
        store.connect()
    except Unavailable as exc:
        say(f"database unavailable: {exc}")
        return EXIT_UNAVAILABLE
    try:
        result = spool.replay(None if args.any_target else key, store.write, own_first=False)
    finally:
        store.close()
    say(
        f"replayed {result.replayed} status(es) from {result.files_done} file(s); "
        f"{result.rejected} rejected, {result.corrupt} corrupt line(s) skipped, "
        f"{result.files_skipped} file(s) left (in use or for another database)"
    )
    if result.unavailable is not None:
        say(f"stopped: database unavailable ({result.unavailable})")
        return EXIT_UNAVAILABLE
    return EXIT_OK
