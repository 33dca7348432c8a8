"""The ``pipetrack`` command: one entry point, subcommands grouped by what they act on."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tracker.cli import _report
from tracker.cli._common import (
    EXIT_NOT_OK,
    complain,
)
from tracker.errors import TrackerError

__all__ = ["build_parser", "main"]


def build_parser(*, reports_only: bool = False) -> argparse.ArgumentParser:
    """The command's parser; ``reports_only``: just the side-channel subcommands, which run in
    a pipeline's loops and must start quickly (the others' modules are not even imported)."""
    from tracker._version import __version__

    parser = argparse.ArgumentParser(
        prog="pipetrack",
        description="Know what every batch pipeline script is doing, how far it is, what it did.",
    )
    parser.add_argument("--version", action="version", version=f"pipetrack {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what pipetrack does (to stderr)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if reports_only:
        _report.register(commands)
        return parser
    from tracker.cli import _db, _demo, _exporter, _ops, _run, _spool, _ui, _views

    # In the order a newcomer meets them: try it, wrap scripts, watch, then operate.
    _demo.register(commands)
    _run.register(commands)
    _views.register(commands)
    _report.register(commands)
    _ui.register(commands)
    _exporter.register(commands)
    _db.register(commands)
    _ops.register(commands)
    _spool.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(reports_only=given[:1] in _report.COMMANDS).parse_args(given)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        code: int = args.handler(args)
    except TrackerError as exc:
        complain(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`pipetrack history X | head`): not an error of ours. Point stdout
        # at devnull so the interpreter's final flush does not raise again (Python docs, "SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_NOT_OK
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
