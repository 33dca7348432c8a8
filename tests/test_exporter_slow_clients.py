"""Clients that hold connections: idle sockets, a request trickled a byte at a time (plain and
TLS, in the handshake too), an HTTP/0.9 line without its blank line, and more connections than
the cap. Real sockets against a real running exporter server; no database needed."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

import pytest
from prometheus_client import CollectorRegistry, Gauge

from exporter import ExporterServer, load_web_config
from tests.test_exporter_server import client_context, get, pki  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 1.0  # the servers' read timeout in these tests
# How long past its timeout a server may take to cut a connection off (a busy machine).
MARGIN = 5.0


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    Gauge("slow_client_test", "a fixed sample", registry=registry).set(1)
    return registry


@contextmanager
def running(registry, **kwargs) -> Iterator[ExporterServer]:
    server = ExporterServer(registry, host="127.0.0.1", port=0, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def connect(server, *, tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT + 2 * MARGIN)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes ``sock``; what it sent. Fails if it stays open too long."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return received
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; got {received!r}")
        if not data:
            return received
        received += data


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a server thread, bounded by the deadline


def test_idle_connections_are_closed_after_the_read_timeout(registry):
    with running(registry, read_timeout=TIMEOUT) as server, ExitStack() as stack:
        socks = [stack.enter_context(connect(server)) for _ in range(30)]
        wait_for(lambda: server.open_connections == 30, MARGIN, "30 open connections")
        started = time.monotonic()
        for sock in socks:
            assert closed_by_server(sock) == b""
        assert time.monotonic() - started < TIMEOUT + MARGIN
        wait_for(lambda: server.open_connections == 0, MARGIN, "the connections to close")
        assert get(server)[0] == 200  # and the server still serves


def test_an_idle_keep_alive_connection_is_closed_after_the_read_timeout(registry):
    with running(registry, read_timeout=TIMEOUT) as server, connect(server) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = closed_by_server(sock)
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert reply.endswith(b"Healthy\n")


def trickle(sock: socket.socket, data: bytes, every: float, until: float) -> bytes:
    """Send ``data`` a byte every ``every`` seconds (each gap well inside the timeout) until
    the server hangs up; fails if it is still taking bytes at ``until``."""
    for byte in data:
        if time.monotonic() > until:
            pytest.fail("the server kept taking a trickled request")
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return b""
        sock.settimeout(every)
        try:
            received = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, ssl.SSLError):
            return b""
        finally:
            sock.settimeout(TIMEOUT + 2 * MARGIN)
        return received  # an answer or the end: the server stopped waiting
    pytest.fail("the trickle ran out before the server hung up")


REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"z" * 10_000


def test_a_trickled_request_is_cut_off_at_the_read_timeout(registry):
    with running(registry, read_timeout=TIMEOUT) as server, connect(server) as sock:
        started = time.monotonic()
        assert trickle(sock, REQUEST, TIMEOUT / 4, started + TIMEOUT + MARGIN) == b""
        assert time.monotonic() - started < TIMEOUT + MARGIN
        assert closed_by_server(sock) == b""
        wait_for(lambda: server.open_connections == 0, MARGIN, "the connection to close")


def test_an_http_0_9_line_without_a_blank_line_is_cut_off(registry):
    with running(registry, read_timeout=TIMEOUT) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics\r\n")
        assert b"slow_client_test" not in closed_by_server(sock)
        assert time.monotonic() - started < TIMEOUT + MARGIN


@pytest.fixture
def tls_config(pki, tmp_path):  # noqa: F811  (the fixture imported above)
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki / 'server.crt'}\n  key_file: {pki / 'server.key'}\n"
    )
    return load_web_config(config)


def test_a_request_trickled_over_tls_is_cut_off(registry, pki, tls_config):  # noqa: F811
    with running(registry, web_config=tls_config, read_timeout=TIMEOUT) as server:
        with connect(server, tls=client_context(pki)) as sock:
            started = time.monotonic()
            assert trickle(sock, REQUEST, TIMEOUT / 4, started + TIMEOUT + MARGIN) == b""
            assert time.monotonic() - started < TIMEOUT + MARGIN
        wait_for(lambda: server.open_connections == 0, MARGIN, "the connection to close")


def test_a_trickled_tls_handshake_is_cut_off(registry, tls_config):
    # A TLS record header announcing 512 bytes of handshake, then its bytes one at a time.
    hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 512
    with running(registry, web_config=tls_config, read_timeout=TIMEOUT) as server:
        with connect(server) as sock:
            started = time.monotonic()
            assert trickle(sock, hello, TIMEOUT / 4, started + TIMEOUT + MARGIN) == b""
            assert time.monotonic() - started < TIMEOUT + MARGIN
        wait_for(lambda: server.open_connections == 0, MARGIN, "the connection to close")


def test_many_trickling_tls_clients_are_all_cut_off(registry, pki, tls_config):  # noqa: F811
    """The outside test's case: 50 TLS connections, each sending a header byte every few
    seconds (here a quarter of the timeout)."""
    results: list[float] = []

    def one() -> None:
        with connect(server, tls=client_context(pki)) as sock:
            started = time.monotonic()
            trickle(sock, REQUEST, TIMEOUT / 4, started + TIMEOUT + MARGIN)
            results.append(time.monotonic() - started)

    with running(registry, web_config=tls_config, read_timeout=TIMEOUT) as server:
        threads = [threading.Thread(target=one) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT + 3 * MARGIN)
        assert len(results) == 50
        assert max(results) < TIMEOUT + MARGIN
        wait_for(lambda: server.open_connections == 0, MARGIN, "the connections to close")


def test_connections_beyond_the_cap_are_refused_and_threads_stay_bounded(registry):
    cap = 5
    with running(registry, read_timeout=60, max_connections=cap) as server, ExitStack() as stack:
        held = [stack.enter_context(connect(server)) for _ in range(cap)]
        wait_for(lambda: server.open_connections == cap, MARGIN, f"{cap} open connections")
        threads_at_cap = threading.active_count()
        for _ in range(50):
            with connect(server) as extra:
                started = time.monotonic()
                with suppress(BrokenPipeError, ConnectionResetError):
                    extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = closed_by_server(extra)
                assert time.monotonic() - started < MARGIN  # refused at once, not queued
                assert reply == b"" or reply.startswith(b"HTTP/1.1 503 ")
                assert b"slow_client_test" not in reply
        assert server.open_connections == cap
        assert threading.active_count() <= threads_at_cap + 2  # not one per refused client
        for sock in held:
            sock.close()
        wait_for(lambda: server.open_connections == 0, MARGIN, "the held connections to close")
        assert get(server)[0] == 200  # a slot is free again


def test_a_refused_plain_http_client_is_told_why(registry):
    with running(registry, read_timeout=60, max_connections=1) as server, connect(server):
        wait_for(lambda: server.open_connections == 1, MARGIN, "one open connection")
        with connect(server) as extra:
            reply = closed_by_server(extra)
        # Best effort: the 503 is sent without waiting, so a reset may come first.
        assert reply in (b"",) or reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_a_keep_alive_client_gets_many_answers_on_one_connection(registry):
    import http.client

    with running(registry, read_timeout=TIMEOUT) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for _ in range(5):
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                assert response.status == 200
                assert b"slow_client_test 1.0" in response.read()
            assert server.open_connections == 1
        finally:
            conn.close()


def test_shutdown_does_not_wait_for_idle_connections(registry):
    server = ExporterServer(registry, host="127.0.0.1", port=0, read_timeout=60)
    server.start()
    with ExitStack() as stack:
        for _ in range(5):
            stack.enter_context(connect(server))
        wait_for(lambda: server.open_connections == 5, MARGIN, "5 open connections")
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < MARGIN
        assert server.open_connections == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"read_timeout": 0}, "read timeout must be more than 0"),
        ({"read_timeout": float("nan")}, "read timeout must be more than 0"),
        ({"max_connections": 0}, "max connections must be a whole number"),
        ({"max_connections": 2.5}, "max connections must be a whole number"),
    ],
)
def test_bad_limits_are_configuration_errors(registry, kwargs, message):
    from tracker.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        ExporterServer(registry, host="127.0.0.1", port=0, **kwargs)
