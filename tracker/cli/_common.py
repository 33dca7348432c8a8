"""What every ``pipetrack`` subcommand shares: exit codes, output, common options."""

from __future__ import annotations

import argparse
import sys

from tracker._db import DSN_HELP
from tracker._model.terminal import printable

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_NOT_OK = 1  # the command ran and the answer is "no" (e.g. migrations pending), or it failed
EXIT_USAGE = 2  # bad arguments or configuration (argparse uses 2 as well)
EXIT_UNAVAILABLE = 3  # the database could not be reached


def say(text: str, *, painted: bool = False) -> None:
    """Print a line of output. Control characters in it (from a task name, a message, an error
    text) are shown as stand-ins; ``painted`` lines carry the views' own colour codes, so their
    pieces were made printable before the colours went on."""
    print(text if painted else printable(text, keep_newlines=True), flush=True)


def complain(text: str) -> None:
    print(f"pipetrack: error: {printable(text, keep_newlines=True)}", file=sys.stderr, flush=True)


def add_dsn_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", metavar="DSN", help=DSN_HELP)
