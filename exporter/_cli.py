"""The exporter as an application: its flags, and ``python -m exporter``.

``pipetrack exporter`` and ``python -m exporter`` share these flags; the exporter's machinery is
imported only when it runs, so ``pipetrack --help`` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tracker._db import DSN_HELP
from tracker._model.terminal import printable
from tracker.errors import TrackerError

if TYPE_CHECKING:
    from exporter._app import Mount

DESCRIPTION = (
    "Serve run-state metrics of every task at /metrics, read from the database at scrape time, "
    "with a landing page at / and a health check at /-/healthy."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", metavar="DSN", help=DSN_HELP)
    # Each with exporter-toolkit's name as an alias, as Prometheus exporters are run.
    parser.add_argument(
        "--listen",
        "--web.listen-address",
        dest="listen",
        metavar="HOST:PORT",
        help=(
            "address to serve on; :PORT means every IPv4 interface, [::]:PORT IPv6 "
            "(default: $PIPETRACK_EXPORTER_LISTEN, else :8479)"
        ),
    )
    parser.add_argument(
        "--web-config",
        "--web.config.file",
        dest="web_config",
        metavar="FILE",
        help=(
            "TLS and basic-auth settings in Prometheus exporter-toolkit's web-config format "
            "(default: $PIPETRACK_EXPORTER_WEB_CONFIG, else plain HTTP without auth)"
        ),
    )
    parser.add_argument(
        "--read-timeout",
        metavar="SECONDS",
        help=(
            "a client must send a request's line and headers within this many seconds of "
            "connecting (TLS handshake included) or of the last response, and take a response "
            "as fast; idle connections close after it (default: "
            "$PIPETRACK_EXPORTER_READ_TIMEOUT, else 10)"
        ),
    )
    parser.add_argument(
        "--max-connections",
        metavar="N",
        help=(
            "client connections served at once; more are answered 503 (TLS: closed) "
            "(default: $PIPETRACK_EXPORTER_MAX_CONNECTIONS, else 64)"
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
    parser.add_argument(
        "--reap-every",
        metavar="SECONDS",
        help=(
            "mark lost runs FAILED this often (one exporter acts at a time); 0 turns it off "
            "(default: $PIPETRACK_EXPORTER_REAP_EVERY, else 15)"
        ),
    )
    parser.add_argument(
        "--stale-after",
        metavar="DURATION",
        help=(
            "a run silent this long (seconds, or e.g. 1m) is lost: reaped, never stalled "
            "(default: $PIPETRACK_EXPORTER_STALE_AFTER, else 60, four heartbeats)"
        ),
    )
    parser.add_argument(
        "--stall-after",
        metavar="DURATION",
        help=(
            "a heartbeating run whose progress stood still this long is stalled; a declared "
            "task's stall_after wins (default: $PIPETRACK_EXPORTER_STALL_AFTER, else 30m)"
        ),
    )
    parser.add_argument(
        "--reap-dsn",
        metavar="DSN",
        help=(
            "database role allowed to UPDATE runs, for the reaper, on the primary when --dsn "
            "is a standby; without one a read-only exporter skips reaping with a warning "
            "(default: $PIPETRACK_EXPORTER_REAP_DSN, else --dsn)"
        ),
    )


def run(args: argparse.Namespace, *, mount: Mount | None = None) -> int:
    """Serve as ``args`` say; ``mount`` adds routes beside /metrics (``exporter._app.serve``)."""
    from exporter._app import serve

    return serve(
        args.dsn,
        listen=args.listen,
        web_config=args.web_config,
        min_interval=args.min_interval,
        statement_timeout=args.statement_timeout,
        reap_every=args.reap_every,
        stale_after=args.stale_after,
        stall_after=args.stall_after,
        reap_dsn=args.reap_dsn,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
        mount=mount,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m exporter [flags]``: exit codes as the ``pipetrack`` command's."""
    parser = argparse.ArgumentParser(prog="python -m exporter", description=DESCRIPTION)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what the exporter does (to stderr)"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return run(args)
    except TrackerError as exc:
        message = printable(str(exc), keep_newlines=True)
        print(f"pipetrack exporter: error: {message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
