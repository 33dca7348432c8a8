"""``pipetrack exporter`` (also ``python -m exporter``): serve run-state metrics to Prometheus.

The flags live here, so both entry points share them; the exporter itself is imported only
when the command runs (``import tracker`` stays cheap).
"""

from __future__ import annotations

import argparse

from tracker.cli._common import add_dsn_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=(
            "address to serve on; :PORT means every IPv4 interface, [::]:PORT IPv6 "
            "(default: $PIPETRACK_EXPORTER_LISTEN, else :8479)"
        ),
    )
    parser.add_argument(
        "--web-config",
        metavar="FILE",
        help=(
            "TLS and basic-auth settings in Prometheus exporter-toolkit's web-config format "
            "(default: $PIPETRACK_EXPORTER_WEB_CONFIG, else plain HTTP without auth)"
        ),
    )
    parser.add_argument(
        "--min-interval",
        metavar="SECONDS",
        help=(
            "read the database at most once per this many seconds; scrapes in between get "
            "the last answer (default: $PIPETRACK_EXPORTER_MIN_INTERVAL, else 0)"
        ),
    )
    parser.add_argument(
        "--statement-timeout",
        metavar="SECONDS",
        type=float,
        help="limit of each database statement; keep it below the scrape timeout (default: 5)",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "exporter",
        help="serve run-state metrics to Prometheus",
        description=(
            "Serve run-state metrics of every task at /metrics, read from the database at "
            "scrape time, with a landing page at / and a health check at /-/healthy."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from exporter._app import serve

    return serve(
        args.dsn,
        listen=args.listen,
        web_config=args.web_config,
        min_interval=args.min_interval,
        statement_timeout=args.statement_timeout,
    )
