"""pipetrack's Prometheus exporter: reads the canonical record and serves run-state metrics."""

from __future__ import annotations

from exporter._collector import DEFAULT_STATEMENT_TIMEOUT, PipetrackCollector

__all__ = ["DEFAULT_STATEMENT_TIMEOUT", "PipetrackCollector"]
