"""pipetrack's Prometheus exporter: reads the canonical record and serves run-state metrics.

    registry = CollectorRegistry()
    registry.register(PipetrackCollector(ready_target(dsn)))
    server = ExporterServer(registry, host="127.0.0.1", port=DEFAULT_PORT)
    server.start()

or, as an application, ``serve()`` (what ``pipetrack exporter`` runs).
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
    from exporter._app import serve
    from exporter._collector import DEFAULT_STATEMENT_TIMEOUT, PipetrackCollector
    from exporter._server import DEFAULT_PORT, ExporterServer
    from exporter._webconfig import WebConfig, load_web_config

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "ExporterServer",
    "PipetrackCollector",
    "WebConfig",
    "load_web_config",
    "serve",
]

# Loaded on first use (PEP 562): ``pipetrack --help`` reads the exporter's flags from
# ``exporter._cli`` and must not pay for prometheus_client, bcrypt and the HTTP server.
_HOMES = {
    "DEFAULT_PORT": "exporter._server",
    "DEFAULT_STATEMENT_TIMEOUT": "exporter._collector",
    "ExporterServer": "exporter._server",
    "PipetrackCollector": "exporter._collector",
    "WebConfig": "exporter._webconfig",
    "load_web_config": "exporter._webconfig",
    "serve": "exporter._app",
}


def __getattr__(name: str) -> typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
