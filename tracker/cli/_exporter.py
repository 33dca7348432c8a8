"""``pipetrack exporter``: serve run-state metrics to Prometheus (flags in ``exporter._cli``)."""

from __future__ import annotations

import argparse

from exporter import _cli


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "exporter", help="serve run-state metrics to Prometheus", description=_cli.DESCRIPTION
    )
    _cli.add_arguments(parser)
    parser.set_defaults(handler=_cli.run)
