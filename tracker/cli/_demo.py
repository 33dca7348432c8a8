"""``pipetrack demo``: a sample multi-stage pipeline, tracked, then what pipetrack saw of it."""

from __future__ import annotations

import argparse
from pathlib import Path

import tracker
from tracker.cli._common import EXIT_OK, say
from tracker.cli._views import show_status


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a sample multi-stage pipeline through the tracker",
        description=(
            "Run a sample pipeline (PREREQ, DAILY and PERIODIC tasks with subtasks and item "
            "progress) through the tracker, into the configured database or the embedded one, "
            "then show `pipetrack status`. With --every, repeat forever (the compose stack's demo)."
        ),
    )
    demo.add_argument(
        "--every", type=float, metavar="SECONDS", help="run a pass every SECONDS, until stopped"
    )
    demo.add_argument(
        "--pace", type=float, default=0.1, metavar="SECONDS", help="mean seconds per item"
    )
    demo.add_argument(
        "--first-pass",
        type=int,
        default=3,
        metavar="N",
        help="number of the first pass (every third pass fails DAILY_03_publish on purpose)",
    )
    demo.add_argument("--alive-file", type=Path, help="touched before every task (healthchecks)")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="serve the monitor (`pipetrack ui`) while the pass runs, and after it until Ctrl-C",
    )
    demo.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="the monitor's address with --serve (default: as `pipetrack ui`, 127.0.0.1:8480)",
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if not args.serve:
        return _one_pass(args, None)
    from monitor._app import open_server, serve_until_signalled

    server, database = open_server(None, listen=args.listen)
    say(f"monitor: {server.url} (watch the pass there, live)")
    server.start()
    try:
        _one_pass(args, server.url)
    except BaseException:
        server.shutdown()
        database.close()
        raise
    say(f"monitor: serving {server.url} until Ctrl-C")
    serve_until_signalled(server, database, started=True)
    return EXIT_OK


def _one_pass(args: argparse.Namespace, url: str | None) -> int:
    # psycopg only when the demo runs: the light commands must not load it (import time).
    import psycopg

    from monitor._app import DEFAULT_LISTEN
    from tracker.cli import _demo_pipeline as _demo

    if args.every is not None:
        _demo.run_forever(
            every=args.every, pace=args.pace, alive=args.alive_file, first_pass=args.first_pass
        )
    failed = _demo.run_pass(args.first_pass, pace=args.pace, alive=args.alive_file)
    tracker.flush()
    try:
        show_status(None)
    except psycopg.Error as exc:  # e.g. a writer-only login may not read the views
        say(f"(the status table cannot be shown: {' '.join(str(exc).split())})")
    say(
        f"\n{len(_demo.PIPELINE) - failed} of {len(_demo.PIPELINE)} tasks finished. Next: "
        "`pipetrack history TASK`, `pipetrack show RUN_ID`,\n`pipetrack top` while a run runs, "
        "and the README for tracking your own scripts."
    )
    if url is None:
        say(f"monitor: http://{DEFAULT_LISTEN}/ while `pipetrack ui` runs")
        say("(or `pipetrack demo --serve`: the pass and its monitor, in one command)")
    # The demo's failure is deliberate (a failed run to look at), not a failure of the command.
    return EXIT_OK
