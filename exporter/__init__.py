"""pipetrack's Prometheus exporter: reads the canonical record and serves run-state metrics.

    registry = CollectorRegistry()
    registry.register(PipetrackCollector(ready_target(dsn)))
    server = ExporterServer(registry, host="127.0.0.1", port=DEFAULT_PORT)
    server.start()

or, as an application, ``serve()`` (what ``pipetrack exporter`` runs).
"""

from __future__ import annotations

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
