"""A real OTLP receiver for the tests: gRPC and HTTP/protobuf servers on free localhost ports.

Built from the official ``opentelemetry-proto`` service definitions (TraceService and
MetricsService ``Export``), it decodes every request and keeps it for assertions, so the tests
check what actually went over the wire, exactly as a collector or Jaeger would receive it.
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

TraceRequest = trace_service_pb2.ExportTraceServiceRequest
MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest


def any_value(value: common_pb2.AnyValue) -> Any:
    """The Python value of an OTLP AnyValue."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class Span:
    """One received span, flattened with its resource for easy assertions."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    status_code: int
    status_message: str
    start_ns: int
    end_ns: int


@dataclass
class Point:
    """One received metric data point."""

    metric: str
    unit: str
    kind: str  # gauge, sum, histogram
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float | None = None
    count: int | None = None
    total: float | None = None
    bounds: list[float] = field(default_factory=list)
    monotonic: bool | None = None


class Collected:
    """The decoded requests, shared by both servers, with a condition to wait on."""

    def __init__(self) -> None:
        self.trace_requests: list[TraceRequest] = []
        self.metric_requests: list[MetricsRequest] = []
        self.transports: list[str] = []
        #: the request headers (gRPC metadata), lower-cased names, one dict per request
        self.headers: list[dict[str, str]] = []
        self._cond = threading.Condition()

    def add(
        self, request: TraceRequest | MetricsRequest, transport: str, headers: dict[str, str]
    ) -> None:
        with self._cond:
            self.headers.append(headers)
            if isinstance(request, TraceRequest):
                self.trace_requests.append(request)
            else:
                self.metric_requests.append(request)
            self.transports.append(transport)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Poll the collected data until ``predicate()`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def spans(self) -> list[Span]:
        with self._cond:
            requests = list(self.trace_requests)
        out = []
        for req in requests:
            for rs in req.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            Span(
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                kind=s.kind,
                                attributes=attributes(s.attributes),
                                resource=resource,
                                events=[
                                    (e.name, e.time_unix_nano, attributes(e.attributes))
                                    for e in s.events
                                ],
                                status_code=s.status.code,
                                status_message=s.status.message,
                                start_ns=s.start_time_unix_nano,
                                end_ns=s.end_time_unix_nano,
                            )
                        )
        return out

    def points(self, metric: str | None = None) -> list[Point]:
        with self._cond:
            requests = list(self.metric_requests)
        out = []
        for req in requests:
            for rm in req.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if metric is not None and m.name != metric:
                            continue
                        out.extend(_points(m, resource))
        return out


def _points(m: Any, resource: dict[str, Any]) -> Iterator[Point]:
    kind = m.WhichOneof("data")
    if kind in ("gauge", "sum"):
        data = getattr(m, kind)
        for p in data.data_points:
            value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
            yield Point(
                metric=m.name,
                unit=m.unit,
                kind=kind,
                attributes=attributes(p.attributes),
                resource=resource,
                value=value,
                monotonic=data.is_monotonic if kind == "sum" else None,
            )
    elif kind == "histogram":
        for p in m.histogram.data_points:
            yield Point(
                metric=m.name,
                unit=m.unit,
                kind=kind,
                attributes=attributes(p.attributes),
                resource=resource,
                count=p.count,
                total=p.sum,
                bounds=list(p.explicit_bounds),
            )


def _metadata(context: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, collected: Collected) -> None:
        self._collected = collected

    def Export(self, request: TraceRequest, context: Any) -> Any:
        self._collected.add(request, "grpc", _metadata(context))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self, collected: Collected) -> None:
        self._collected = collected

    def Export(self, request: MetricsRequest, context: Any) -> Any:
        self._collected.add(request, "grpc", _metadata(context))
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _http_handler(collected: Collected) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, tuple[Any, Any]] = {
        "/v1/traces": (TraceRequest, trace_service_pb2.ExportTraceServiceResponse),
        "/v1/metrics": (MetricsRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(415)
                return
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request_type, response_type = route
            request = request_type()
            request.ParseFromString(body)
            collected.add(request, "http", {k.lower(): v for k, v in self.headers.items()})
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # Requests are asserted on, not printed.
            return

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """A sender killed mid-request (what the signal tests do) resets its connection: that is
    counted, not printed as a traceback."""

    resets = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            self.resets += 1
            return
        super().handle_error(request, client_address)


class OtlpReceiver:
    """Both OTLP transports on free localhost ports, feeding one :class:`Collected`."""

    def __init__(self) -> None:
        self.collected = Collected()
        #: the protocol a test pointed its telemetry at, for assertions
        self.protocol: str | None = None
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(self.collected), self._grpc
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self.collected), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._http = _QuietServer(("127.0.0.1", 0), _http_handler(self.collected))
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="otlp-receiver-http", daemon=True
        )

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    def start(self) -> None:
        self._grpc.start()
        self._http_thread.start()

    def stop(self) -> None:
        self._grpc.stop(grace=None).wait(5)
        self._http.shutdown()
        self._http.server_close()
        self._http_thread.join(5)


@contextmanager
def running_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
