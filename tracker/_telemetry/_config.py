"""Whether pipetrack emits OpenTelemetry, and the tracer and meter it emits through.

Decided from the standard ``OTEL_*`` variables and pipetrack's switch, read at run start. With
nothing configured this module imports nothing and opens nothing. A provider the application set
is used as it is; otherwise pipetrack builds private SDK providers with OTLP exporters (never
registered globally, so an application may still install its own later) and flushes them at exit
within a bounded time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from tracker._env import FALSE_VALUES, TRUE_VALUES
from tracker._signals import signals_blocked

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Tracer

    from tracker._telemetry._export import DeliveryLog

logger = logging.getLogger("tracker")

PIPETRACK_TELEMETRY = "PIPETRACK_TELEMETRY"
"""``on``: emit telemetry (OTLP to the standard endpoint variables, default localhost);
``off``: never, whatever else is set; unset or ``auto``: emit when an OTLP endpoint or exporter is
configured, or the application set its own tracer/meter provider."""

PIPETRACK_TELEMETRY_EXIT_TIMEOUT = "PIPETRACK_TELEMETRY_EXIT_TIMEOUT"
"""Seconds the process may spend at exit delivering the last spans and metrics (default 2)."""

DEFAULT_SERVICE_NAME = "pipetrack"
DEFAULT_EXIT_TIMEOUT = 2.0
DEFAULT_PROTOCOL = "http/protobuf"  # the OTLP specification's default transport
PROTOCOLS = ("grpc", "http/protobuf")

# The standard variables, as the OpenTelemetry SDK documents them.
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
_SIGNAL_ENDPOINT = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
}
_SIGNAL_PROTOCOL = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
}
_SIGNAL_EXPORTER = {"traces": OTEL_TRACES_EXPORTER, "metrics": OTEL_METRICS_EXPORTER}

Signal = Literal["traces", "metrics"]
Source = Literal["application", "otlp"]


class Plan(NamedTuple):
    """Where each signal goes: the application's provider, pipetrack's OTLP export, or nowhere."""

    traces: Source | None
    metrics: Source | None

    @property
    def enabled(self) -> bool:
        return self.traces is not None or self.metrics is not None


OFF = Plan(traces=None, metrics=None)


def _flag(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip().lower()


def _application_providers() -> tuple[bool, bool]:
    """Whether the application installed its own global tracer / meter provider.

    Only looked at when the application already imported the API: one that never imported
    opentelemetry cannot have installed a provider, and pipetrack must not import it to find out.
    """
    tracing = metering = False
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import trace

        tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    if "opentelemetry.metrics" in sys.modules:
        from opentelemetry import metrics

        # The API exposes no public "is one set" test; the proxy is what it hands out until then.
        from opentelemetry.metrics._internal import _ProxyMeterProvider

        metering = not isinstance(metrics.get_meter_provider(), _ProxyMeterProvider)
    return tracing, metering


def plan(environ: Mapping[str, str] | None = None) -> Plan:
    """Decide, from the environment alone, where telemetry goes (cheap; imports nothing new)."""
    env = os.environ if environ is None else environ
    switch = _flag(env, PIPETRACK_TELEMETRY)
    if switch and switch != "auto" and switch not in TRUE_VALUES | FALSE_VALUES:
        logger.warning("ignoring %s=%r: expected on, off or auto", PIPETRACK_TELEMETRY, switch)
        switch = "auto"
    if (switch in FALSE_VALUES and switch != "") or _flag(env, OTEL_SDK_DISABLED) in TRUE_VALUES:
        return OFF
    app_tracing, app_metering = _application_providers()
    asked = switch in TRUE_VALUES or any(
        env.get(name) for name in (OTEL_EXPORTER_OTLP_ENDPOINT, *_SIGNAL_ENDPOINT.values())
    )

    def source(signal: Signal, from_app: bool) -> Source | None:
        if from_app:
            return "application"
        chosen = _flag(env, _SIGNAL_EXPORTER[signal])
        if chosen == "none":
            return None
        if chosen == "otlp" or asked:
            return "otlp"
        return None

    return Plan(
        traces=source("traces", app_tracing),
        metrics=source("metrics", app_metering),
    )


def protocol(signal: Signal, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = (
        env.get(_SIGNAL_PROTOCOL[signal]) or env.get(OTEL_EXPORTER_OTLP_PROTOCOL) or ""
    ).strip()
    if not value:
        return DEFAULT_PROTOCOL
    if value not in PROTOCOLS:
        logger.warning(
            "telemetry: OTLP protocol %r is not supported (use grpc or http/protobuf); using %s",
            value,
            DEFAULT_PROTOCOL,
        )
        return DEFAULT_PROTOCOL
    return value


def endpoint_for_log(environ: Mapping[str, str] | None = None) -> str:
    """The endpoint as the user configured it, for messages (a URL, never a header)."""
    env = os.environ if environ is None else environ
    for name in (*_SIGNAL_ENDPOINT.values(), OTEL_EXPORTER_OTLP_ENDPOINT):
        if env.get(name):
            return env[name]
    return "the default OTLP endpoint (localhost)"


def exit_timeout(environ: Mapping[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    raw = env.get(PIPETRACK_TELEMETRY_EXIT_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_EXIT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects NaN
        logger.warning(
            "ignoring %s=%r: expected seconds >= 0", PIPETRACK_TELEMETRY_EXIT_TIMEOUT, raw
        )
        return DEFAULT_EXIT_TIMEOUT
    return value


def build_resource() -> Any:
    """``service.name`` (default ``pipetrack``), ``host.name``, ``process.pid``; the standard
    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over these defaults."""
    import socket

    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    defaults = Resource.create(
        {
            "service.name": DEFAULT_SERVICE_NAME,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
    )
    # Resource.create lets explicit attributes override the environment; the user's variables
    # must win over pipetrack's defaults, so merge the environment back on top.
    return defaults.merge(OTELResourceDetector().detect())


class Telemetry:
    """The tracer and meter runs emit through, and the providers pipetrack owns (if any)."""

    def __init__(
        self,
        *,
        tracer: Tracer | None,
        meter: Meter | None,
        owned: list[Any],
        delivery: DeliveryLog | None,
    ) -> None:
        self.tracer = tracer
        self.meter = meter
        self._owned = owned
        self._delivery = delivery
        self._lock = threading.Lock()
        self._shut = False
        self.instruments: Any = None  # tracker._telemetry._metrics.Instruments, made on first use

    def _bounded(self, name: str, work: Any, timeout: float) -> bool:
        """Run ``work`` on a daemon thread and wait at most ``timeout`` seconds for it."""
        done = threading.Event()

        def target() -> None:
            try:
                work()
            except Exception:
                logger.exception("telemetry: %s failed", name)
            finally:
                done.set()

        with signals_blocked():
            threading.Thread(target=target, name=f"pipetrack-telemetry-{name}", daemon=True).start()
        return done.wait(timeout)

    def flush(self, timeout: float = DEFAULT_EXIT_TIMEOUT) -> bool:
        """Export what is buffered in pipetrack's own providers; wait at most ``timeout`` s."""
        if not self._owned or self._shut:
            return True

        def work() -> None:
            for provider in self._owned:
                provider.force_flush()

        return self._bounded("flush", work, timeout)

    def shutdown(self, timeout: float = DEFAULT_EXIT_TIMEOUT) -> bool:
        """Flush and close pipetrack's own providers, waiting at most ``timeout`` seconds.

        Idempotent. Providers the application set are left to the application.
        """
        with self._lock:
            if self._shut:
                return True
            self._shut = True
        if not self._owned:
            return True

        def work() -> None:
            for provider in self._owned:
                provider.shutdown()

        finished = self._bounded("shutdown", work, timeout)
        if self._delivery is not None:
            if not finished:
                logger.warning(
                    "telemetry: delivery to %s did not finish within %.1f s; the rest is dropped",
                    self._delivery.endpoint,
                    timeout,
                )
            self._delivery.report()
            if finished:
                self._delivery.restore_exporter_loggers()
        return finished


def _span_exporter(proto: str) -> Any:
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def _metric_exporter(proto: str) -> Any:
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    return OTLPMetricExporter()


def _otlp_tracer_provider(resource: Any, delivery: DeliveryLog) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from tracker._telemetry._export import CountingSpanProcessor, GuardedSpanExporter

    # shutdown_on_exit=False: the SDK's own atexit hook would wait up to 30 s on a dead
    # collector; pipetrack's exit hook bounds that wait.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    # The batch processor's worker (and gRPC's threads) must leave SIGTERM to the main thread.
    with signals_blocked():
        exporter = GuardedSpanExporter(_span_exporter(protocol("traces")), delivery)
        provider.add_span_processor(CountingSpanProcessor(BatchSpanProcessor(exporter), delivery))
    return provider


def _otlp_meter_provider(resource: Any, delivery: DeliveryLog) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from tracker._telemetry._export import GuardedMetricExporter

    with signals_blocked():  # the reader's ticker thread, as above
        exporter = GuardedMetricExporter(_metric_exporter(protocol("metrics")), delivery)
        return MeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(exporter)],
            shutdown_on_exit=False,
        )


def build(chosen: Plan) -> Telemetry:
    """Make the tracer and meter ``chosen`` asks for (imports the SDK only for OTLP export)."""
    from tracker._version import __version__

    tracer: Tracer | None = None
    meter: Meter | None = None
    if chosen.traces == "application":
        from opentelemetry import trace

        tracer = trace.get_tracer("pipetrack", __version__)
    if chosen.metrics == "application":
        from opentelemetry import metrics

        meter = metrics.get_meter("pipetrack", __version__)
    if "otlp" not in (chosen.traces, chosen.metrics):
        return Telemetry(tracer=tracer, meter=meter, owned=[], delivery=None)

    from tracker._telemetry._export import DeliveryLog

    owned: list[Any] = []
    delivery = DeliveryLog(endpoint_for_log())
    delivery.quiet_exporter_loggers()
    resource = build_resource()
    if chosen.traces == "otlp":
        tracer_provider = _otlp_tracer_provider(resource, delivery)
        owned.append(tracer_provider)
        tracer = tracer_provider.get_tracer("pipetrack", __version__)
    if chosen.metrics == "otlp":
        meter_provider = _otlp_meter_provider(resource, delivery)
        owned.append(meter_provider)
        meter = meter_provider.get_meter("pipetrack", __version__)
    return Telemetry(tracer=tracer, meter=meter, owned=owned, delivery=delivery)


class _Process:
    """The process's telemetry (one per process, like the SDK's global providers)."""

    lock = threading.Lock()
    current: Telemetry | None = None


def current() -> Telemetry | None:
    """The process's telemetry, set up on first use; ``None`` when telemetry is off.

    Called at run start. While nothing is configured it only reads the environment, so a later
    run still sees configuration made in between.
    """
    with _Process.lock:
        if _Process.current is not None:
            return _Process.current
        chosen = plan()
        if not chosen.enabled:
            return None
        _Process.current = build(chosen)
        logger.debug("telemetry on: traces via %s, metrics via %s", chosen.traces, chosen.metrics)
        return _Process.current


def shutdown(timeout: float | None = None) -> bool:
    """Flush and close the process's telemetry within ``timeout`` seconds (default: the
    ``PIPETRACK_TELEMETRY_EXIT_TIMEOUT``); the next run sets it up afresh."""
    with _Process.lock:
        telemetry, _Process.current = _Process.current, None
    if telemetry is None:
        return True
    return telemetry.shutdown(exit_timeout() if timeout is None else timeout)


def active() -> bool:
    """Whether this process's telemetry is set up (read lock-free, for the signal path)."""
    return _Process.current is not None


def forget_runs() -> None:
    """After a fork: the gauges stop reporting the parent's runs (the SDK re-creates its own
    export threads in the child). Acquires nothing: a lock another thread held at the fork is
    held for ever in the child, so the locks are replaced instead."""
    _Process.lock = threading.Lock()
    telemetry = _Process.current
    if telemetry is not None and telemetry.instruments is not None:
        telemetry.instruments.forget_all()


def at_exit() -> None:
    """The process's exit hook (registered by the package): a bounded final flush."""
    shutdown()
