"""``pipetrack ui``: the live monitor's web pages, served on 127.0.0.1 unless told otherwise.

The flags live here; the monitor is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from tracker.cli._common import add_dsn_option


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ui",
        help="serve the live monitor: every pipeline at a glance, in a browser",
        description=(
            "Serve the monitor's pages (Now, Run, Task history, Dependencies, Failures) and "
            "their /api JSON twins, read-only, from the configured database (docs/monitor.md)."
        ),
    )
    add_dsn_option(parser)
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve on (default: $PIPETRACK_UI_LISTEN, else 127.0.0.1:8480)",
    )
    parser.add_argument(
        "--web-config",
        metavar="FILE",
        help=(
            "TLS and basic-auth settings, the exporter's web-config format "
            "(default: $PIPETRACK_EXPORTER_WEB_CONFIG, else plain HTTP without auth)"
        ),
    )
    parser.add_argument(
        "--jaeger-url",
        metavar="URL",
        help="Jaeger UI that run pages link traces to (default: $PIPETRACK_JAEGER_URL, else none)",
    )
    parser.add_argument(
        "--read-timeout",
        metavar="SECONDS",
        help="as for `pipetrack exporter` (default: $PIPETRACK_EXPORTER_READ_TIMEOUT, else 10)",
    )
    parser.add_argument(
        "--max-connections",
        metavar="N",
        help="as for `pipetrack exporter` (default: $PIPETRACK_EXPORTER_MAX_CONNECTIONS, else 64)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from monitor._app import serve

    return serve(
        args.dsn,
        listen=args.listen,
        web_config=args.web_config,
        jaeger=args.jaeger_url,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
    )
