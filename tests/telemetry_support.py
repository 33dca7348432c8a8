"""Shared set-up of the telemetry tests: the receiver, OTLP environment, and span lookups."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.otlp_receiver import OtlpReceiver, Span, running_receiver
from tracker._telemetry import _config

PROTOCOLS = ["grpc", "http/protobuf"]


def point_env(mp: pytest.MonkeyPatch, receiver: OtlpReceiver, protocol: str) -> None:
    """Configure OTLP towards the receiver; metrics leave only when flushed, never on a timer."""
    mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint(protocol))
    mp.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    mp.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


@contextmanager
def pointed_receiver(mp: pytest.MonkeyPatch, protocol: str) -> Iterator[OtlpReceiver]:
    """A receiver with this process's telemetry pointed at it; telemetry is shut down after."""
    with running_receiver() as receiver:
        point_env(mp, receiver, protocol)
        receiver.protocol = protocol
        try:
            yield receiver
        finally:
            _config.shutdown(5)


def new_run_id() -> str:
    return str(uuid.uuid4())


def by_name(spans: list[Span]) -> dict[str, Span]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def flush_and_collect(receiver: OtlpReceiver, expected_spans: int) -> list[Span]:
    assert _config.shutdown(10)
    assert receiver.collected.wait_for(lambda: len(receiver.collected.spans()) >= expected_spans)
    return receiver.collected.spans()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def black_hole_server() -> Iterator[int]:
    """A collector that accepts connections and reads, but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setblocking(False)
            held.append(conn)

    thread = threading.Thread(target=serve, name="black-hole", daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def slow_collector_env(port: int, protocol: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        # An exporter willing to wait far longer than the process may spend at exit.
        "OTEL_EXPORTER_OTLP_TIMEOUT": "60",
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        "PIPETRACK_TELEMETRY_EXIT_TIMEOUT": "1",
    }
