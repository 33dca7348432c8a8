"""`pipetrack exporter` and `python -m exporter` as a user runs them: flags, environment,
one-line refusals of bad settings, and a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from exporter._app import DEFAULT_LISTEN, LISTEN_ENV, parse_listen, settings
from exporter._server import DEFAULT_PORT
from tests.test_exporter_support import free_port
from tracker.errors import ConfigurationError


def pipetrack(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nonsense"], "must be HOST:PORT"),
        (["--listen", ":99999"], "port must be a number"),
        (["--listen", "::1:80"], "IPv6 host in brackets"),
        (["--min-interval", "-1"], "min interval must be 0 or more"),
        (["--min-interval", "soon"], "min interval must be a number"),
        (["--statement-timeout", "0"], "statement timeout must be more than 0"),
        (["--web-config", "/nonexistent/web.yml"], "cannot read web config"),
        (["--dsn", "host='unterminated"], "malformed DSN"),
        (["--reap-every", "-1"], "reap every must be 0 or more"),
        (["--stall-after", "soonish"], "not a duration"),
        (["--stale-after", "0"], "must be more than 0 seconds"),
        (["--reap-dsn", "host='unterminated"], "malformed DSN"),
        (["--read-timeout", "0"], "read timeout must be more than 0"),
        (["--read-timeout", "soon"], "read timeout must be a number"),
        (["--max-connections", "0"], "max connections must be a whole number of 1 or more"),
        (["--max-connections", "many"], "max connections must be a whole number"),
        # exporter-toolkit's names for --listen and --web-config
        (["--web.listen-address", "nonsense"], "must be HOST:PORT"),
        (["--web.config.file", "/nonexistent/web.yml"], "cannot read web config"),
    ],
)
def test_bad_settings_refuse_to_start_with_one_line(args, message):
    result = pipetrack("exporter", "--dsn", "host=127.0.0.1 port=1", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pipetrack: error: ")
    assert message in lines[0]


def test_listen_addresses_parse():
    assert parse_listen(":8479") == ("0.0.0.0", 8479)  # noqa: S104
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9999") == ("::1", 9999)
    assert parse_listen("localhost:80") == ("localhost", 80)
    assert f":{DEFAULT_PORT}" == DEFAULT_LISTEN


def test_listen_comes_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv(LISTEN_ENV, "127.0.0.1:12345")
    assert (settings().host, settings().port) == ("127.0.0.1", 12345)
    assert settings(listen=":1").port == 1
    monkeypatch.setenv(LISTEN_ENV, "bad")
    with pytest.raises(ConfigurationError, match="bad"):
        settings()
    monkeypatch.delenv(LISTEN_ENV)
    assert settings().port == DEFAULT_PORT


def test_read_timeout_and_max_connections_come_from_the_environment_unless_given(monkeypatch):
    from exporter._app import MAX_CONNECTIONS_ENV, READ_TIMEOUT_ENV
    from exporter._server import DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT

    chosen = settings()
    assert (chosen.read_timeout, chosen.max_connections) == (
        DEFAULT_READ_TIMEOUT,
        DEFAULT_MAX_CONNECTIONS,
    )
    monkeypatch.setenv(READ_TIMEOUT_ENV, "2.5")
    monkeypatch.setenv(MAX_CONNECTIONS_ENV, "7")
    assert (settings().read_timeout, settings().max_connections) == (2.5, 7)
    chosen = settings(read_timeout="4", max_connections="9")
    assert (chosen.read_timeout, chosen.max_connections) == (4, 9)


def _wait_for_metrics(url, process, deadline):
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exporter exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our URL)
                return response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)  # polling a starting process, bounded by the deadline
    pytest.fail("the exporter did not answer in time")


@contextlib.contextmanager
def running_exporter(*args: str, entry=("-m", "exporter")):
    """An exporter process started with ``args``; always stopped and reaped."""
    process = subprocess.Popen(
        [sys.executable, *entry, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def stop_cleanly(process) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


@pytest.mark.parametrize("entry", [("-m", "exporter"), ("-m", "tracker", "exporter")])
def test_exporter_serves_and_stops_cleanly_on_sigterm(db_dsn, entry):
    port = free_port()
    with running_exporter("--dsn", db_dsn, "--listen", f"127.0.0.1:{port}", entry=entry) as process:
        body = _wait_for_metrics(f"http://127.0.0.1:{port}/metrics", process, time.monotonic() + 60)
        assert "pipetrack_database_up 1.0" in body
        stop_cleanly(process)
        assert "Traceback" not in process.stderr.read()


def _status_without_credentials(url):
    """The HTTP status of a GET of ``url``, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our URL)
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return None


def test_exporter_toolkit_flag_names_listen_and_read_the_web_config(db_dsn, tmp_path):
    """--web.listen-address and --web.config.file, as Prometheus exporters are started."""
    import base64

    import bcrypt

    hashed = bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with running_exporter(
        "--dsn",
        db_dsn,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--web.config.file",
        str(config),
    ) as process:
        deadline = time.monotonic() + 60
        while (code := _status_without_credentials(url)) is None:
            if process.poll() is not None:
                pytest.fail(f"exporter exited with {process.returncode}: {process.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("the exporter did not answer in time")
            time.sleep(0.05)  # polling a starting process, bounded by the deadline
        assert code == 401  # the web config's basic auth is in force
        token = base64.b64encode(b"prometheus:scrape-secret").decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert "pipetrack_database_up 1.0" in response.read().decode()
        stop_cleanly(process)


def test_the_read_timeout_flag_closes_idle_connections(db_dsn):
    import socket

    port = free_port()
    with running_exporter(
        "--dsn",
        db_dsn,
        "--listen",
        f"127.0.0.1:{port}",
        "--read-timeout",
        "1",
        "--max-connections",
        "3",
    ) as process:
        _wait_for_metrics(f"http://127.0.0.1:{port}/metrics", process, time.monotonic() + 60)
        with socket.create_connection(("127.0.0.1", port), timeout=15) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""
            assert time.monotonic() - started < 10
        stop_cleanly(process)
