"""The exporter as an application: settings from arguments and environment, then serve.

Arguments win; ``None`` falls back to the environment variable, read at call time, then to the
default. Every bad setting raises ConfigurationError before anything is served.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from exporter._collector import DEFAULT_STATEMENT_TIMEOUT, PipetrackCollector
from exporter._reaper import DEFAULT_REAP_EVERY, DEFAULT_STALE_AFTER, Reaper
from exporter._render import DEFAULT_STALL_AFTER
from exporter._server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_READ_TIMEOUT,
    ExporterServer,
)
from exporter._webconfig import WebConfig, load_web_config
from tracker.errors import ConfigurationError

if TYPE_CHECKING:
    from exporter._server import Routes
    from tracker._db.dsn import DatabaseTarget

Mount = Callable[["DatabaseTarget"], AbstractContextManager["Routes | None"]]
"""Routes to serve beside /metrics, opened for a database target and closed after serving."""

logger = logging.getLogger("exporter")

LISTEN_ENV = "PIPETRACK_EXPORTER_LISTEN"
"""``HOST:PORT`` the exporter listens on (``:PORT`` for every IPv4 interface)."""

WEB_CONFIG_ENV = "PIPETRACK_EXPORTER_WEB_CONFIG"
"""Path of the exporter-toolkit style web configuration file (TLS, basic auth)."""

READ_TIMEOUT_ENV = "PIPETRACK_EXPORTER_READ_TIMEOUT"
"""Seconds a client has to send a request's line and headers (and to take the response)."""

MAX_CONNECTIONS_ENV = "PIPETRACK_EXPORTER_MAX_CONNECTIONS"
"""Client connections served at once; more are answered 503 (TLS: closed)."""

MIN_INTERVAL_ENV = "PIPETRACK_EXPORTER_MIN_INTERVAL"
"""Seconds between database reads; scrapes in between get the last read's answer."""

REAP_EVERY_ENV = "PIPETRACK_EXPORTER_REAP_EVERY"
"""Seconds between reaper rounds; 0 turns the exporter's reaper off."""

STALE_AFTER_ENV = "PIPETRACK_EXPORTER_STALE_AFTER"
"""Heartbeat silence (seconds or a duration such as ``1m``) after which a run is lost."""

STALL_AFTER_ENV = "PIPETRACK_EXPORTER_STALL_AFTER"
"""Progress standstill (seconds or a duration such as ``30m``) after which a run is stalled."""

REAP_DSN_ENV = "PIPETRACK_EXPORTER_REAP_DSN"
"""DSN of a role that may UPDATE pipeline_status, for the reaper (default: the exporter's)."""

DEFAULT_LISTEN = f":{DEFAULT_PORT}"


@dataclass(frozen=True)
class ExporterSettings:
    host: str
    port: int
    web_config: WebConfig
    min_interval: float
    statement_timeout: float
    reap_every: float = DEFAULT_REAP_EVERY
    stale_after: float = DEFAULT_STALE_AFTER
    stall_after: float = DEFAULT_STALL_AFTER
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every IPv4 interface) as (host, port)."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ConfigurationError(
            f"listen address {text!r} must be HOST:PORT (e.g. :{DEFAULT_PORT})"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigurationError(f"listen address {text!r}: write an IPv6 host in brackets")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigurationError(f"listen address {text!r}: port must be a number 0-65535")
    return (host or "0.0.0.0"), int(port_text)  # noqa: S104  (an exporter serves the network)


def _seconds(value: str | float, what: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{what} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"{what} must be 0 or more seconds, not {value!r}")
    return seconds


def _count(value: str | float, what: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"{what} must be a whole number of 1 or more, not {value!r}")
    return int(text)


def _duration(value: str | float, what: str) -> float:
    """Seconds, from a number of seconds or a duration such as ``30m`` (tracker's syntax)."""
    if isinstance(value, str) and value.strip() and not value.strip()[-1].isdigit():
        from tracker._ops.durations import parse_duration

        return parse_duration(value, what=what).total_seconds()
    return _seconds(value, what)


def _given(value: str | float | None, env_name: str, default: str | float) -> str | float:
    """An argument, else its environment variable (read now, not at import), else the default."""
    if value is not None:
        return value
    return os.environ.get(env_name) or default


def settings(
    *,
    listen: str | None = None,
    web_config: str | Path | None = None,
    min_interval: float | str | None = None,
    statement_timeout: float | None = None,
    reap_every: float | str | None = None,
    stale_after: float | str | None = None,
    stall_after: float | str | None = None,
    read_timeout: float | str | None = None,
    max_connections: int | str | None = None,
) -> ExporterSettings:
    """Resolve the exporter's settings from arguments, then environment, then defaults."""
    host, port = parse_listen(str(_given(listen, LISTEN_ENV, DEFAULT_LISTEN)))
    config_path = web_config if web_config is not None else os.environ.get(WEB_CONFIG_ENV)
    config = load_web_config(config_path) if config_path else WebConfig()
    interval = _given(min_interval, MIN_INTERVAL_ENV, 0.0)
    timeout = DEFAULT_STATEMENT_TIMEOUT if statement_timeout is None else statement_timeout
    if _seconds(timeout, "statement timeout") == 0:
        raise ConfigurationError("statement timeout must be more than 0 seconds")
    every = _duration(_given(reap_every, REAP_EVERY_ENV, DEFAULT_REAP_EVERY), "reap every")
    stale = _duration(_given(stale_after, STALE_AFTER_ENV, DEFAULT_STALE_AFTER), "stale after")
    stall = _duration(_given(stall_after, STALL_AFTER_ENV, DEFAULT_STALL_AFTER), "stall after")
    if stale == 0 or stall == 0:
        raise ConfigurationError("stale after and stall after must be more than 0 seconds")
    read = _seconds(_given(read_timeout, READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT), "read timeout")
    if read == 0:
        raise ConfigurationError("read timeout must be more than 0 seconds")
    connections = _count(
        _given(max_connections, MAX_CONNECTIONS_ENV, DEFAULT_MAX_CONNECTIONS), "max connections"
    )
    return ExporterSettings(
        host,
        port,
        config,
        _seconds(interval, "min interval"),
        float(timeout),
        reap_every=every,
        stale_after=stale,
        stall_after=stall,
        read_timeout=read,
        max_connections=connections,
    )


def _checked(target: DatabaseTarget) -> DatabaseTarget:
    """``target``, if libpq accepts its settings. A database that is down is no reason not to
    start (the metrics say so); settings that can never connect are a bad configuration."""
    from tracker._db.connect import require_valid_settings

    require_valid_settings(target)
    return target


def serve(
    dsn: str | None = None,
    *,
    listen: str | None = None,
    web_config: str | Path | None = None,
    min_interval: float | str | None = None,
    statement_timeout: float | None = None,
    reap_every: float | str | None = None,
    stale_after: float | str | None = None,
    stall_after: float | str | None = None,
    reap_dsn: str | None = None,
    read_timeout: float | str | None = None,
    max_connections: int | str | None = None,
    mount: Mount | None = None,
) -> int:
    """Run the exporter until SIGTERM or SIGINT; returns the process exit code (0).

    ``mount``, given the database target, opens further routes to serve beside /metrics (the
    monitor's pages: ``pipetrack exporter`` mounts them) and closes them when serving ends.

    The database may be down at start: the exporter starts anyway and says so in its metrics.
    Unless ``reap_every`` is 0, a reaper thread marks lost runs FAILED (see exporter/_reaper.py),
    connecting with ``reap_dsn`` (else $PIPETRACK_EXPORTER_REAP_DSN, else the exporter's DSN).
    """
    from prometheus_client import CollectorRegistry

    from tracker._db.ready import ready_target

    chosen = settings(
        listen=listen,
        web_config=web_config,
        min_interval=min_interval,
        statement_timeout=statement_timeout,
        reap_every=reap_every,
        stale_after=stale_after,
        stall_after=stall_after,
        read_timeout=read_timeout,
        max_connections=max_connections,
    )
    target = _checked(ready_target(dsn))
    reaper: Reaper | None = None
    if chosen.reap_every > 0:
        writer_dsn = reap_dsn if reap_dsn is not None else os.environ.get(REAP_DSN_ENV)
        reaper = Reaper(
            _checked(ready_target(writer_dsn)) if writer_dsn else target,
            every=chosen.reap_every,
            stale_after=chosen.stale_after,
        )
    collector = PipetrackCollector(
        target,
        min_interval=chosen.min_interval,
        statement_timeout=chosen.statement_timeout,
        stall_after=chosen.stall_after,
        lost_after=chosen.stale_after,
        reaper=reaper,
    )
    registry = CollectorRegistry()
    registry.register(collector)
    with ExitStack() as mounted:
        routes = mounted.enter_context(mount(target) if mount else nullcontext(None))
        server = ExporterServer(
            registry,
            host=chosen.host,
            port=chosen.port,
            web_config=chosen.web_config,
            read_timeout=chosen.read_timeout,
            max_connections=chosen.max_connections,
            routes=routes,
        )
        _serve(server, target, reaper, collector)
    return 0


def _serve(
    server: ExporterServer,
    target: DatabaseTarget,
    reaper: Reaper | None,
    collector: PipetrackCollector,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop the reaper and close the collector."""

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for the serve loop, which runs in this thread: ask from another.
        threading.Thread(target=server.shutdown, name="pipetrack-exporter-stop").start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"pipetrack exporter: serving {server.url}metrics from {target.redacted}",
        file=sys.stderr,
        flush=True,
    )
    if reaper is not None:
        reaper.start()
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        if reaper is not None:
            reaper.shutdown()
        collector.close()
