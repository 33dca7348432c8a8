"""The custom prometheus_client collector: reads the canonical record at scrape time.

``describe()`` lists the families without touching the database, so registering is free;
``collect()`` reads (or, within ``min_interval`` of the last read, reuses) one snapshot and
yields fresh families built from it (their exposition lines already written, see
exporter/_lines.py), plus the self-metrics. A failed read yields only the
self-metrics, saying the database is down: never an exception, never a hang.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Iterator

from prometheus_client.registry import Collector

from exporter import _metrics as m
from exporter._database import DatabaseReader, ReadFailed
from exporter._exposition import WrittenFamily
from exporter._lines import LineCache, render_lines
from exporter._queries import ScrapeSnapshot
from exporter._reaper import DEFAULT_STALE_AFTER, Reaper
from exporter._render import DEFAULT_STALL_AFTER, Family
from tracker._db.dsn import DatabaseTarget
from tracker.errors import ConfigurationError

logger = logging.getLogger("exporter")

# Below Prometheus' default scrape timeout of 10 s, with room for connecting (3 s) first.
DEFAULT_STATEMENT_TIMEOUT = 5.0

scrape_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "pipetrack_scrape_timeout", default=None
)
"""The scraper's own timeout (Prometheus sends X-Prometheus-Scrape-Timeout-Seconds), set by the
HTTP server around a scrape. A read then uses at most half of it per statement, so the answer
that the database is slow arrives before the scraper gives up."""


class PipetrackCollector(Collector):
    """Run-state metrics of every task, read from PostgreSQL when Prometheus scrapes."""

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        min_interval: float = 0.0,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        stall_after: float = DEFAULT_STALL_AFTER,
        lost_after: float = DEFAULT_STALE_AFTER,
        reaper: Reaper | None = None,
    ) -> None:
        if not math.isfinite(min_interval) or min_interval < 0:
            raise ConfigurationError(f"min interval must be 0 or more seconds, not {min_interval}")
        if not math.isfinite(statement_timeout) or statement_timeout <= 0:
            raise ConfigurationError(
                f"statement timeout must be more than 0 seconds, not {statement_timeout}"
            )
        for what, value in (("stall after", stall_after), ("lost after", lost_after)):
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{what} must be more than 0 seconds, not {value}")
        from tracker._version import __version__

        self._stall_after = stall_after
        self._lost_after = lost_after
        self._reaper = reaper

        self._version = __version__
        self._min_interval = min_interval
        self._reader = DatabaseReader(target, statement_timeout=statement_timeout)
        self._redacted = target.redacted
        self._lock = threading.Lock()
        self._snapshot: ScrapeSnapshot | None = None
        self._error: ReadFailed | None = None
        self._read_at = -math.inf  # time.monotonic() of the last read
        self._read_seconds = 0.0
        self._lines = LineCache()  # task labels escaped once, kept between scrapes

    def describe(self) -> list[Family]:
        return m.describe_all()

    def collect(self) -> Iterator[Family | WrittenFamily]:
        with self._lock:
            self._refresh()
            snapshot, error, seconds = self._snapshot, self._error, self._read_seconds
        families: list[WrittenFamily] = []
        if snapshot is not None:
            try:
                families = render_lines(
                    snapshot,
                    self._lines,
                    stall_after=self._stall_after,
                    lost_after=self._lost_after,
                )
            except Exception:
                logger.exception("building metrics from %s failed", self._redacted)
                error = ReadFailed("unexpected rows", reachable=True)
        yield from families
        reaped = m.REAPED_RUNS.family()
        reaped.add_metric([], float(self._reaper.reaped if self._reaper else 0))
        yield reaped
        yield _gauge(m.DATABASE_UP, 0.0 if error is not None and not error.reachable else 1.0)
        yield _gauge(m.LAST_SCRAPE_ERROR, 0.0 if error is None else 1.0)
        yield _gauge(m.SCRAPE_DURATION, seconds)
        if snapshot is not None:  # what the last read found; nothing when it failed
            yield _gauge(m.IN_RECOVERY, 1.0 if snapshot.in_recovery else 0.0)
            if snapshot.replica_lag is not None:
                yield _gauge(m.REPLICA_LAG, snapshot.replica_lag)
        info = m.BUILD_INFO.family()
        info.add_metric([self._version], 1.0)
        yield info

    def _refresh(self) -> None:
        """Read the database unless the last read is younger than ``min_interval``."""
        started = time.monotonic()
        if started - self._read_at < self._min_interval:
            return
        snapshot: ScrapeSnapshot | None = None
        failure: ReadFailed | None = None
        budget = scrape_timeout.get()
        try:
            snapshot = self._reader.read(None if budget is None else budget / 2)
        except ReadFailed as exc:
            failure = exc
        except Exception as exc:
            # A bug, or a schema this version does not know, must not turn scrapes into HTTP
            # 500s: say so in the metrics and the log, and keep serving.
            logger.exception("reading %s failed unexpectedly", self._redacted)
            failure = ReadFailed(f"unexpected {type(exc).__name__}", reachable=True)
        if failure is not None and (self._error is None or str(self._error) != str(failure)):
            logger.warning("cannot read %s: %s", self._redacted, failure)
        elif failure is None and self._error is not None:
            logger.warning("reading %s again", self._redacted)
        self._snapshot, self._error = snapshot, failure
        self._read_at = time.monotonic()
        self._read_seconds = self._read_at - started

    def close(self) -> None:
        """Close the database connection (a later scrape opens a new one)."""
        with self._lock:
            self._reader.close()


def _gauge(spec: m.MetricSpec, value: float) -> Family:
    family = spec.family()
    family.add_metric([], value)
    return family
