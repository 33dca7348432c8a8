"""Exporters that never get in the pipeline's way: they count what the collector did not take.

Wraps the OTLP span and metric exporters so that a collector that is down, slow or refusing is
logged once (with the count of what was lost reported at exit) instead of once per batch. Imported
only when pipetrack configures the SDK itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger("tracker")

# The OTLP exporters log every failed batch (and every retry) themselves; after the first such
# record, DeliveryLog.note_failure has said what matters and the rest would only flood the
# user's log while the collector stays down.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    # "Queue full, dropping Span." - the batch processor's bounded queue overflowing
    "opentelemetry.sdk._shared_internal",
)


class _FirstOnly(logging.Filter):
    """Lets the first warning-or-worse record of a logger through, drops the later ones."""

    def __init__(self) -> None:
        super().__init__()
        self._seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self._seen:
            return False
        self._seen = True
        return True


class DeliveryLog:
    """Counts spans and metric exports the collector did not take; logs the first loss once."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.spans_ended = 0  # handed to the batch processor
        self.spans_exported = 0  # accepted by the collector
        self.spans_dropped = 0  # in batches the collector refused or never answered
        self.metric_exports_failed = 0
        self._lock = threading.Lock()
        self._logged = False
        self._filters: list[tuple[logging.Logger, logging.Filter]] = []

    def quiet_exporter_loggers(self) -> None:
        """Keep only the first failure record of the SDK's exporter loggers (see above)."""
        for name in _EXPORTER_LOGGERS:
            target = logging.getLogger(name)
            flt = _FirstOnly()
            target.addFilter(flt)
            self._filters.append((target, flt))

    def restore_exporter_loggers(self) -> None:
        for target, flt in self._filters:
            target.removeFilter(flt)
        self._filters.clear()

    def note_failure(self, *, spans: int = 0, metric_exports: int = 0) -> None:
        with self._lock:
            self.spans_dropped += spans
            self.metric_exports_failed += metric_exports
            first = not self._logged
            self._logged = True
        if first:
            logger.warning(
                "telemetry: the OTLP collector at %s did not accept data; the pipeline goes on, "
                "and what is lost is counted (reported at exit)",
                self.endpoint,
            )

    def note_ended(self) -> None:
        # Spans end on any thread; += alone could lose counts between them.
        with self._lock:
            self.spans_ended += 1

    def note_exported(self, spans: int) -> None:
        with self._lock:
            self.spans_exported += spans

    def report(self) -> None:
        """Log once, at exit, what did not reach the collector: spans it refused, spans the
        batch processor's full queue dropped, and spans still queued when time ran out."""
        with self._lock:
            lost = max(self.spans_ended - self.spans_exported, 0)
            ended, metrics = self.spans_ended, self.metric_exports_failed
        if lost or metrics:
            logger.warning(
                "telemetry: %d of %d span(s) and %d metric export(s) were not delivered to %s",
                lost,
                ended,
                metrics,
                self.endpoint,
            )


class GuardedSpanExporter(SpanExporter):
    """Delegates to an exporter; counts failed batches and never lets an exception escape."""

    def __init__(self, inner: SpanExporter, log: DeliveryLog) -> None:
        self._inner = inner
        self._log = log

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            logger.debug("telemetry: span export raised", exc_info=True)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._log.note_exported(len(spans))
        else:
            self._log.note_failure(spans=len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class GuardedMetricExporter(MetricExporter):
    """Delegates to a metric exporter, keeping its temporality and aggregation preferences."""

    def __init__(self, inner: MetricExporter, log: DeliveryLog) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._log = log

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            logger.debug("telemetry: metric export raised", exc_info=True)
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self._log.note_failure(metric_exports=1)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class CountingSpanProcessor(SpanProcessor):
    """Counts the spans handed to the batch processor, so that what its bounded queue dropped
    (ended, but neither exported nor failed) is known at exit."""

    def __init__(self, inner: SpanProcessor, log: DeliveryLog) -> None:
        self._inner = inner
        self._log = log

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._log.note_ended()
        self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
