"""The HTTP server: pages, content types, TLS, client certificates and basic auth, checked with
the standard library's real HTTP client."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter import ExporterServer, PipetrackCollector, load_web_config
from tests.test_exporter_support import insert_run

PASSWORD = "correct horse battery staple"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, issuer, key, signing_key, *, ca: bool, sans=()):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: Path, cert, key=None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", "test CA", ca_key, ca_key, ca=True)
    _write(folder / "ca", ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    _write(
        folder / "server",
        _certificate("localhost", "test CA", server_key, ca_key, ca=False, sans=sans),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(
        folder / "client",
        _certificate("prometheus", "test CA", client_key, ca_key, ca=False),
        client_key,
    )
    return folder


def _hash(password: str) -> str:
    # Cost 4 keeps the tests fast; $2y$ is what htpasswd writes (and the toolkit's docs show).
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")


@contextmanager
def running(registry, web_config=None) -> Iterator[ExporterServer]:
    server = ExporterServer(registry, host="127.0.0.1", port=0, web_config=web_config)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def get(server, path="/metrics", *, headers=None, context=None, method="GET"):
    """(status, headers, body) of one request to ``server``."""
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(pki: Path, *, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki / "ca.crt")
    if with_cert:
        context.load_cert_chain(pki / "client.crt", pki / "client.key")
    return context


@pytest.fixture
def registry(db, db_target):
    insert_run(db, task_name='quote"back\\slash')
    registry = CollectorRegistry()
    collector = PipetrackCollector(db_target)
    registry.register(collector)
    yield registry
    collector.close()


def test_metrics_page_serves_the_collector_as_text(registry):
    with running(registry) as server:
        status, headers, body = get(server)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["pipetrack_database_up"].samples[0].value == 1
    (sample,) = families["pipetrack_task_running_runs"].samples
    assert sample.labels == {"task": 'quote"back\\slash', "task_stage": "DAILY"}


def test_metrics_page_speaks_openmetrics_when_asked(registry):
    with running(registry) as server:
        status, headers, body = get(
            server, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_landing_page_links_to_metrics_and_health_answers(registry):
    with running(registry) as server:
        status, headers, body = get(server, "/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'href="metrics"' in body
        assert get(server, "/-/healthy")[0] == 200
        assert get(server, "/nothing-here")[0] == 404
        status, headers, body = get(server, "/metrics", method="HEAD")
        assert status == 200
        assert body == b""
        assert int(headers["Content-Length"]) > 0


def test_tls_with_basic_auth_lets_only_the_right_credentials_in(registry, pki, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n"
        f"  cert_file: {pki / 'server.crt'}\n"
        f"  key_file: {pki / 'server.key'}\n"
        f"basic_auth_users:\n"
        f"  prometheus: {_hash(PASSWORD)}\n"
    )
    context = client_context(pki)
    with running(registry, load_web_config(config)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        status, _, body = get(server, headers=basic("prometheus", PASSWORD), context=context)
        assert status == 200
        assert b"pipetrack_database_up 1.0" in body
        # The cached verdict answers the same credentials again.
        assert get(server, headers=basic("prometheus", PASSWORD), context=context)[0] == 200

        status, headers, _ = get(server, headers=basic("prometheus", "wrong"), context=context)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic ")
        assert get(server, headers=basic("mallory", PASSWORD), context=context)[0] == 401
        assert get(server, context=context)[0] == 401
        assert get(server, "/", context=context)[0] == 401
        assert get(server, headers={"Authorization": "Basic !!!"}, context=context)[0] == 401
        assert get(server, headers=basic("prometheus", "x" * 100), context=context)[0] == 401

        with pytest.raises((http.client.HTTPException, OSError)):
            get(server, headers=basic("prometheus", PASSWORD))


def test_client_certificates_are_required_when_configured(registry, pki, tmp_path):
    config = tmp_path / "web.yml"
    config.write_text(
        "tls_server_config:\n"
        "  cert_file: server.crt\n"
        "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.crt\n"
    )
    # Relative names are relative to the config file's folder.
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    with running(registry, load_web_config(config)) as server:
        assert get(server, context=client_context(pki, with_cert=True))[0] == 200
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            get(server, context=client_context(pki))


def test_two_exporters_on_one_database_agree(db, db_target):
    insert_run(db, task_name="DAILY_a")
    registries, collectors = [], []
    for _ in range(2):
        registry = CollectorRegistry()
        collector = PipetrackCollector(db_target)
        registry.register(collector)
        registries.append(registry)
        collectors.append(collector)
    try:
        with running(registries[0]) as first, running(registries[1]) as second:
            for _ in range(3):
                bodies = [get(server)[2].decode() for server in (first, second)]
                values = [
                    {
                        (s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in text_string_to_metric_families(body)
                        for s in f.samples
                        if s.name.startswith("pipetrack_task_")
                    }
                    for body in bodies
                ]
                assert values[0] == values[1]
                assert (
                    values[0][
                        (
                            "pipetrack_task_running_runs",
                            (("task", "DAILY_a"), ("task_stage", "DAILY")),
                        )
                    ]
                    == 1
                )
    finally:
        for collector in collectors:
            collector.close()


def test_a_port_in_use_is_a_clear_configuration_error(registry):
    from tracker.errors import ConfigurationError

    with running(registry) as server, pytest.raises(ConfigurationError, match="cannot listen"):
        ExporterServer(registry, host="127.0.0.1", port=server.port)


def test_the_scrapers_timeout_header_shortens_the_database_wait(db, db_target):
    import psycopg

    insert_run(db)
    registry = CollectorRegistry()
    # A statement timeout far beyond the client's patience: only the header can save the scrape.
    collector = PipetrackCollector(db_target, statement_timeout=300)
    registry.register(collector)
    try:
        with running(registry) as server, psycopg.connect(db_target.conninfo) as locker:
            locker.execute("LOCK TABLE pipetrack.pipeline_task_outcomes IN ACCESS EXCLUSIVE MODE")
            status, _, body = get(server, headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
            assert status == 200
            assert b"pipetrack_last_scrape_error 1.0" in body
            assert b"pipetrack_database_up 1.0" in body
            locker.rollback()
            status, _, body = get(server, headers={"X-Prometheus-Scrape-Timeout-Seconds": "bad"})
            assert b"pipetrack_last_scrape_error 0.0" in body
    finally:
        collector.close()


@pytest.fixture
def fixed_registry():
    """A registry whose exposition is the same at every scrape (no database, no timings)."""
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    gauge = Gauge("fixed_sample", "a fixed value", ["task"], registry=registry)
    for i in range(500):
        gauge.labels(f"DAILY_{i:03d}_task").set(i)
    return registry


def test_gzip_is_served_when_the_scraper_accepts_it(fixed_registry):
    import gzip

    with running(fixed_registry) as server:
        status, plain_headers, plain = get(server)
        assert status == 200
        assert "Content-Encoding" not in plain_headers
        assert plain.startswith(b"# HELP fixed_sample")

        # What Prometheus sends (and prometheus_client answers with gzip).
        status, headers, body = get(server, headers={"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Vary"] == "Accept-Encoding"
        assert int(headers["Content-Length"]) == len(body) < len(plain) / 3
        assert gzip.decompress(body) == plain

        for accept in ("deflate, gzip;q=0.5, br", "x-gzip", "GZIP"):
            _, headers, body = get(server, headers={"Accept-Encoding": accept})
            assert headers.get("Content-Encoding") == "gzip", accept
            assert gzip.decompress(body) == plain
        for accept in ("gzip;q=0", "identity", "br, deflate", ""):
            _, headers, body = get(server, headers={"Accept-Encoding": accept})
            assert "Content-Encoding" not in headers, accept
            assert body == plain

        _, headers, body = get(
            server,
            headers={"Accept-Encoding": "gzip", "Accept": "application/openmetrics-text"},
        )
        assert gzip.decompress(body).endswith(b"# EOF\n")
        _, head, body = get(server, headers={"Accept-Encoding": "gzip"}, method="HEAD")
        assert body == b""
        assert head["Content-Encoding"] == "gzip"


def test_failed_logins_are_answered_429_past_the_limit(registry):
    from exporter._basic_auth import DEFAULT_FAILURE_BURST
    from exporter._webconfig import WebConfig

    config = WebConfig(users={"prometheus": _hash(PASSWORD), "grafana": _hash("other")})
    with running(registry, config) as server:
        assert get(server, headers=basic("prometheus", PASSWORD))[0] == 200
        for i in range(DEFAULT_FAILURE_BURST):
            assert get(server, headers=basic("prometheus", f"guess {i}"))[0] == 401
        status, headers, body = get(server, headers=basic("prometheus", "one more"))
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert b"Too Many Requests" in body
        # A scraper whose credentials were already proven is not locked out by the guesser.
        assert get(server, headers=basic("prometheus", PASSWORD))[0] == 200
        # Without credentials nothing is hashed: a plain 401 asking for them.
        assert get(server)[0] == 401


def _big_registry(samples: int):
    """A registry whose exposition is far larger than the sockets' buffers."""
    from prometheus_client.core import GaugeMetricFamily

    class Big:
        def collect(self):
            family = GaugeMetricFamily("big_sample", "many lines", labels=["n"])
            for i in range(samples):
                family.add_metric([f"{i:08d}" + "x" * 40], float(i))
            yield family

    registry = CollectorRegistry()
    registry.register(Big())
    return registry


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_client_gone_mid_response_is_logged_at_debug_never_as_an_error(
    pki, tmp_path, caplog, tls
):
    import logging
    import socket
    import struct
    import time

    web_config = None
    context = None
    if tls:
        config = tmp_path / "web.yml"
        config.write_text(
            f"tls_server_config:\n"
            f"  cert_file: {pki / 'server.crt'}\n  key_file: {pki / 'server.key'}\n"
        )
        web_config = load_web_config(config)
        context = client_context(pki)
    registry = _big_registry(200_000)  # about 17 MB
    with caplog.at_level(logging.DEBUG, logger="exporter"), running(registry, web_config) as server:
        for _ in range(3):
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.settimeout(30)
            raw.connect(("127.0.0.1", server.port))
            sock = raw if context is None else context.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")
            # Gone with a reset, mid-body: the server's next write fails.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        deadline = time.monotonic() + 60
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices at its next write
        assert server.open_connections == 0
        assert get(server, "/-/healthy", context=context)[0] == 200
    ours = [r for r in caplog.records if r.name == "exporter"]
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in ours)
    gone = [r for r in ours if "went away" in r.getMessage()]
    assert len(gone) == 3
    assert all(r.levelno == logging.DEBUG for r in gone)
