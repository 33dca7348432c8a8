"""What every ``pipetrack`` subcommand shares: exit codes, output, common options."""

from __future__ import annotations

import argparse
import sys

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_NOT_OK = 1  # the command ran and the answer is "no" (e.g. migrations pending), or it failed
EXIT_USAGE = 2  # bad arguments or configuration (argparse uses 2 as well)
EXIT_UNAVAILABLE = 3  # the database could not be reached


def say(text: str) -> None:
    print(text, flush=True)


def complain(text: str) -> None:
    print(f"pipetrack: error: {text}", file=sys.stderr, flush=True)


def add_dsn_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        help=(
            "PostgreSQL connection string or URI (default: $PIPETRACK_DSN, then libpq's PG* "
            "variables, then the embedded server)"
        ),
    )
