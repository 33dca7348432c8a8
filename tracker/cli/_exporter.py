"""``pipetrack exporter``: serve run-state metrics to Prometheus, and the monitor's pages.

The flags are the exporter's own (``exporter._cli``, shared with ``python -m exporter``); this
command adds the monitor's pages on the same port, under the same web config.
"""

from __future__ import annotations

import argparse

from exporter import _cli


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "exporter",
        help="serve run-state metrics to Prometheus",
        description=(
            f"{_cli.DESCRIPTION} The monitor's pages are served from /now (docs/monitor.md; "
            "Jaeger links: $PIPETRACK_JAEGER_URL)."
        ),
    )
    _cli.add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitor._app import exporter_pages

    return _cli.run(args, mount=exporter_pages)
