"""``pipetrack ui`` as an application: settings from arguments and environment, then serve.

The monitor runs on the exporter's HTTP server (exporter/_server.py), with the exporter's web
config for TLS and basic auth, its read timeout and connection cap. It binds to 127.0.0.1
unless told otherwise, and reads the database through read-only sessions.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from exporter._app import MAX_CONNECTIONS_ENV, READ_TIMEOUT_ENV, WEB_CONFIG_ENV, parse_listen
from exporter._server import DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT, ExporterServer
from exporter._webconfig import WebConfig, load_web_config
from monitor._database import DEFAULT_STATEMENT_TIMEOUT, MonitorDatabase
from monitor._web import MonitorRoutes
from tracker._db.dsn import DatabaseTarget
from tracker.errors import ConfigurationError

LISTEN_ENV = "PIPETRACK_UI_LISTEN"
"""``HOST:PORT`` the monitor listens on (default 127.0.0.1:8480)."""

JAEGER_URL_ENV = "PIPETRACK_JAEGER_URL"
"""Base address of the Jaeger UI that run pages link traces to (``http://jaeger:16686``)."""

DEFAULT_PORT = 8480
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


@dataclass(frozen=True)
class MonitorSettings:
    host: str
    port: int
    web_config: WebConfig
    jaeger_url: str | None
    read_timeout: float
    max_connections: int


def jaeger_url(value: str | None) -> str | None:
    """The Jaeger UI's address (argument, else $PIPETRACK_JAEGER_URL), if it is an http(s) URL."""
    given = value if value is not None else os.environ.get(JAEGER_URL_ENV)
    if not given:
        return None
    parts = urlsplit(given.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            f"Jaeger URL {given!r} must be an http:// or https:// address such as "
            "http://localhost:16686"
        )
    return given.strip().rstrip("/")


def settings(
    *,
    listen: str | None = None,
    web_config: str | Path | None = None,
    jaeger: str | None = None,
    read_timeout: float | str | None = None,
    max_connections: int | str | None = None,
) -> MonitorSettings:
    """Resolve the monitor's settings: arguments, then environment, then defaults. The web
    config, read timeout and connection cap are the exporter's, read the exporter's way."""
    from exporter._app import _count, _given, _seconds

    host, port = parse_listen(str(_given(listen, LISTEN_ENV, DEFAULT_LISTEN)))
    config_path = web_config if web_config is not None else os.environ.get(WEB_CONFIG_ENV)
    read = _seconds(_given(read_timeout, READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT), "read timeout")
    if read == 0:
        raise ConfigurationError("read timeout must be more than 0 seconds")
    return MonitorSettings(
        host=host,
        port=port,
        web_config=load_web_config(config_path) if config_path else WebConfig(),
        jaeger_url=jaeger_url(jaeger),
        read_timeout=read,
        max_connections=_count(
            _given(max_connections, MAX_CONNECTIONS_ENV, DEFAULT_MAX_CONNECTIONS),
            "max connections",
        ),
    )


@contextmanager
def exporter_pages(target: DatabaseTarget) -> Iterator[MonitorRoutes]:
    """The monitor's pages for ``pipetrack exporter`` (exporter._app.serve's ``mount``): the
    exporter keeps its landing page at /, the Now page is at /now."""
    database = MonitorDatabase(target)
    try:
        yield MonitorRoutes(database, jaeger_url=jaeger_url(None), at_root=False)
    finally:
        database.close()


def monitor_server(
    database: MonitorDatabase,
    chosen: MonitorSettings,
) -> ExporterServer:
    """An HTTP server (not yet serving) for the monitor's pages alone."""
    return ExporterServer(
        None,
        host=chosen.host,
        port=chosen.port,
        web_config=chosen.web_config,
        read_timeout=chosen.read_timeout,
        max_connections=chosen.max_connections,
        routes=MonitorRoutes(database, jaeger_url=chosen.jaeger_url, at_root=True),
    )


def open_server(
    dsn: str | None = None,
    *,
    listen: str | None = None,
    web_config: str | Path | None = None,
    jaeger: str | None = None,
    read_timeout: float | str | None = None,
    max_connections: int | str | None = None,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
) -> tuple[ExporterServer, MonitorDatabase]:
    """The monitor's server, bound (not yet serving), and its database; close both after."""
    from tracker._db.connect import require_valid_settings
    from tracker._db.ready import ready_target

    chosen = settings(
        listen=listen,
        web_config=web_config,
        jaeger=jaeger,
        read_timeout=read_timeout,
        max_connections=max_connections,
    )
    target = ready_target(dsn)
    require_valid_settings(target)
    database = MonitorDatabase(target, statement_timeout=statement_timeout)
    try:
        return monitor_server(database, chosen), database
    except BaseException:
        database.close()
        raise


def serve_until_signalled(
    server: ExporterServer, database: MonitorDatabase, *, started: bool = False
) -> None:
    """Serve from a background thread (``started``: already serving) until SIGTERM or SIGINT;
    then stop and close both."""
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not started:
            server.start()
        while not stop.wait(0.5):  # a timed wait, so the signal handler runs promptly
            continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        database.close()


def serve(
    dsn: str | None = None,
    *,
    listen: str | None = None,
    web_config: str | Path | None = None,
    jaeger: str | None = None,
    read_timeout: float | str | None = None,
    max_connections: int | str | None = None,
) -> int:
    """Serve the monitor until SIGTERM or SIGINT; returns the process exit code (0)."""
    server, database = open_server(
        dsn,
        listen=listen,
        web_config=web_config,
        jaeger=jaeger,
        read_timeout=read_timeout,
        max_connections=max_connections,
    )
    print(
        f"pipetrack ui: serving {server.url} from {database.redacted}", file=sys.stderr, flush=True
    )
    serve_until_signalled(server, database)
    return 0
