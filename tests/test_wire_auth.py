"""The small PostgreSQL client's logins: each authentication method, TLS modes, .pgpass, and
servers that misbehave (silent, impostor, GSSAPI). One throwaway server for the module
(tests/wire_server.py); the misbehaving ones are scripted sockets in this file."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests import wire_server
from tests.wire_server import ROLES, MatrixServer
from tracker._db import wire_auth
from tracker._db.wire import WireConnection, WireUnavailable, WireUnsupported
from tracker._db.wire_settings import resolve


@pytest.fixture(scope="module")
def server() -> Iterator[MatrixServer]:
    matrix = wire_server.start()
    try:
        yield matrix
    finally:
        try:
            matrix.stop()
        finally:
            shutil.rmtree(matrix.folder, ignore_errors=True)


@pytest.fixture
def env(tmp_path):
    """HOME without .pgpass or ~/.postgresql, so only what a test puts there counts."""
    return {"HOME": str(tmp_path)}


@pytest.fixture
def needs_tls(server):
    if not server.tls:
        message = "no PostgreSQL built with OpenSSL (Debian's postgresql package) installed"
        if os.environ.get("PIPETRACK_REQUIRE_TLS_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def params(server: MatrixServer, role: str, **extra: str) -> dict[str, str]:
    _method, password = ROLES[role]
    given = {"host": "127.0.0.1", "port": str(server.port), "user": role, "dbname": "postgres"}
    if password:
        given["password"] = password
    given.update(connect_timeout="10", sslmode="disable")
    given.update(extra)
    return given


def login(server: MatrixServer, role: str, env: dict[str, str], **extra: str) -> tuple[str, bool]:
    """(current_user, whether the server sees TLS) after logging in."""
    with WireConnection.open(params(server, role, **extra), environ=env) as conn:
        ((user, ssl),) = conn.query(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        assert conn.tls is (ssl == "t")
        return str(user), ssl == "t"


@pytest.mark.parametrize("role", ["u_trust", "u_clear", "u_md5", "u_scram"])
def test_each_method_logs_in_with_the_right_password(server, env, role):
    assert login(server, role, env) == (role, False)


@pytest.mark.parametrize("role", ["u_clear", "u_md5", "u_scram"])
def test_each_method_logs_in_over_tls(server, env, needs_tls, role):
    assert login(server, role, env, sslmode="require") == (role, True)


@pytest.mark.parametrize("role", ["u_clear", "u_md5", "u_scram"])
@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_a_wrong_password_is_refused_without_showing_it(server, env, role, sslmode):
    wrong = "Wr0ng-" + ROLES[role][1]  # type: ignore[operator]
    with pytest.raises(WireUnavailable) as caught:
        WireConnection.open(params(server, role, password=wrong, sslmode=sslmode), environ=env)
    assert caught.value.sqlstate == "28P01"
    assert "password authentication failed" in str(caught.value)
    for secret in (wrong, ROLES[role][1], "Wr0ng"):
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)


@pytest.mark.parametrize("role", ["u_clear", "u_md5", "u_scram"])
def test_no_password_at_all_is_refused(server, env, role):
    given = params(server, role)
    del given["password"]
    with pytest.raises(WireUnavailable, match="none was supplied"):
        WireConnection.open(given, environ=env)


def test_sslmode_require_uses_tls_without_a_root_certificate(server, env, needs_tls):
    assert login(server, "u_trust", env, sslmode="require") == ("u_trust", True)


def test_verify_full_accepts_the_right_ca_and_host_name(server, env, needs_tls):
    extra = {"sslmode": "verify-full", "sslrootcert": str(server.ca_file), "host": "localhost"}
    assert login(server, "u_scram", env, **extra) == ("u_scram", True)


def test_verify_full_refuses_a_host_name_the_certificate_does_not_name(server, env, needs_tls):
    extra = {"sslmode": "verify-full", "sslrootcert": str(server.ca_file), "host": "127.0.0.1"}
    with pytest.raises(WireUnavailable, match=r"certificate|SSL"):
        login(server, "u_scram", env, **extra)
    # verify-ca checks the chain only, so the same host name passes.
    extra["sslmode"] = "verify-ca"
    assert login(server, "u_scram", env, **extra) == ("u_scram", True)


def test_verify_ca_refuses_a_certificate_from_another_ca(server, env, needs_tls):
    extra = {"sslmode": "verify-ca", "sslrootcert": str(server.other_ca_file)}
    with pytest.raises(WireUnavailable, match="certificate verify failed"):
        login(server, "u_trust", env, **extra)


def test_verify_ca_without_a_root_certificate_file_is_refused(server, env, needs_tls):
    with pytest.raises(WireUnavailable, match="root certificate file"):
        login(server, "u_trust", env, sslmode="verify-ca")


def test_a_root_certificate_in_home_is_checked_in_every_sslmode_as_libpq_does(
    server, env, tmp_path, needs_tls
):
    (tmp_path / ".postgresql").mkdir()
    shutil.copy(server.other_ca_file, tmp_path / ".postgresql" / "root.crt")
    with pytest.raises(WireUnavailable, match="certificate verify failed"):
        login(server, "u_trust", env, sslmode="require")
    # prefer verifies too, and goes on without TLS when the check fails.
    assert login(server, "u_trust", env, sslmode="prefer") == ("u_trust", False)
    shutil.copy(server.ca_file, tmp_path / ".postgresql" / "root.crt")
    assert login(server, "u_trust", env, sslmode="require") == ("u_trust", True)
    assert login(server, "u_trust", env, sslmode="prefer") == ("u_trust", True)


def test_prefer_uses_tls_and_goes_plain_when_the_server_refuses_tls(server, env, needs_tls):
    assert login(server, "u_scram", env, sslmode="prefer") == ("u_scram", True)
    # pg_hba.conf rejects u_plainonly over TLS: libpq then retries without it.
    assert login(server, "u_plainonly", env, sslmode="prefer") == ("u_plainonly", False)


def test_allow_goes_plain_and_retries_with_tls_when_the_server_refuses(server, env, needs_tls):
    assert login(server, "u_trust", env, sslmode="allow") == ("u_trust", False)
    assert login(server, "u_sslonly", env, sslmode="allow") == ("u_sslonly", True)


def test_disable_never_uses_tls(server, env):
    assert login(server, "u_scram", env, sslmode="disable") == ("u_scram", False)
    with pytest.raises(WireUnavailable, match=r"pg_hba\.conf rejects"):
        login(server, "u_sslonly", env, sslmode="disable")


def test_a_client_certificate_logs_in_and_its_key_must_be_private(server, env, needs_tls):
    extra = {
        "sslmode": "verify-ca",
        "sslrootcert": str(server.ca_file),
        "sslcert": str(server.client_cert),
        "sslkey": str(server.client_key),
    }
    assert login(server, "u_cert", env, **extra) == ("u_cert", True)
    server.client_key.chmod(0o644)
    try:
        with pytest.raises(WireUnavailable, match="group or world access"):
            login(server, "u_cert", env, **extra)
    finally:
        server.client_key.chmod(0o600)


def test_unix_sockets_never_use_tls(server, env):
    given = {"host": str(server.folder), "port": str(server.port), "user": "postgres"}
    with WireConnection.open({**given, "sslmode": "require"}, environ=env) as conn:
        assert conn.query("SELECT 1") == [("1",)]
        assert not conn.tls


def pgpass(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_password_file_supplies_the_password(server, env, tmp_path):
    password = ROLES["u_scram"][1]
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    lines = (
        "# comment\n"
        f"otherhost:*:*:u_scram:wrong\n"
        f"127.0.0.1:{server.port}:postgres:u_scram:{escaped}\n"
        "*:*:*:*:fallback\n"
    )
    given = params(server, "u_scram")
    del given["password"]
    file = pgpass(tmp_path / "custom.pgpass", lines)
    assert login_with(given, {**env, "PGPASSFILE": str(file)}) == "u_scram"
    assert login_with({**given, "passfile": str(file)}, env) == "u_scram"
    pgpass(tmp_path / ".pgpass", lines)  # the default place, in HOME
    assert login_with(given, env) == "u_scram"


def test_a_wrong_password_from_the_file_says_where_it_came_from(server, env, tmp_path):
    given = params(server, "u_md5")
    del given["password"]
    pgpass(tmp_path / ".pgpass", "*:*:*:u_md5:md5-not-it\n")
    with pytest.raises(WireUnavailable, match="password file") as caught:
        login_with(given, env)
    assert "md5-not-it" not in str(caught.value)


def test_a_password_file_others_can_read_is_ignored_with_a_warning(server, env, tmp_path, caplog):
    given = params(server, "u_scram")
    del given["password"]
    pgpass(tmp_path / ".pgpass", f"*:*:*:*:{ROLES['u_scram'][1]}\n", mode=0o644)
    with pytest.raises(WireUnavailable, match="none was supplied"):
        login_with(given, env)
    assert any("group or world access" in record.getMessage() for record in caplog.records)


def test_a_unix_socket_matches_localhost_in_the_password_file(env, tmp_path):
    file = pgpass(tmp_path / ".pgpass", "localhost:5432:db:etl:a\\:b\\\\c:ignored\n")
    settings = resolve({"host": "/run/pg", "user": "etl", "dbname": "db"}, environ=env)
    assert (settings.password, settings.password_from_file) == ("a:b\\c", True)
    settings = resolve({"host": "/run/pg", "user": "etl", "dbname": "db", "port": "5433"}, env)
    assert settings.password is None
    assert file.exists()


def login_with(given: dict[str, str], env: dict[str, str]) -> str:
    with WireConnection.open(given, environ=env) as conn:
        ((user,),) = conn.query("SELECT current_user")
        return str(user)


def test_a_scram_login_loads_no_libcrypto(server, env):
    code = (
        "import sys\n"
        "from tracker._db.wire import WireConnection\n"
        f"with WireConnection.open({params(server, 'u_scram')!r}, environ={env!r}) as conn:\n"
        "    conn.query('SELECT 1')\n"
        "print(sorted(m for m in ('_hashlib', 'hashlib', 'ssl', 'psycopg') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_the_scram_primitives_match_hashlib():
    import hashlib
    import hmac

    assert wire_auth.hmac_sha256(b"k" * 70, b"m") == hmac.new(b"k" * 70, b"m", "sha256").digest()
    expected = hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 4096)
    assert wire_auth.pbkdf2_sha256(b"pw", b"salt", 4096) == expected
    expected_md5 = hashlib.md5(
        hashlib.md5(b"pwuser", usedforsecurity=False).hexdigest().encode() + b"salt",
        usedforsecurity=False,
    ).hexdigest()
    assert wire_auth.md5_response(b"pw", b"user", b"salt") == b"md5" + expected_md5.encode()


def test_scram_matches_the_rfc_7677_example():
    scram = wire_auth.ScramSha256("pencil", nonce=b"rOprNGfwEbeRWgbNEkqO")
    scram._client_first_bare = b"n=user,r=rOprNGfwEbeRWgbNEkqO"  # the RFC sends a user name
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert scram.client_final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert scram.verified


def test_saslprep_maps_spaces_and_keeps_what_it_must_not_change():
    assert wire_auth.saslprep("plain ascii\x07") == b"plain ascii\x07"
    assert wire_auth.saslprep("I\u00adX") == b"IX"  # soft hyphen maps to nothing
    assert wire_auth.saslprep("a\u00a0b") == b"a b"  # non-ASCII space maps to a space
    assert wire_auth.saslprep("\u2168") == b"IX"  # NFKC
    assert wire_auth.saslprep("a\u0007é") == "a\u0007é".encode()  # prohibited: kept raw


def test_a_server_restart_mid_session_makes_the_connection_unavailable(server, env):
    conn = WireConnection.open(params(server, "u_scram"), environ=env)
    try:
        assert conn.query("SELECT 1") == [("1",)]
        server.restart()
        with pytest.raises(WireUnavailable):
            conn.execute([("SELECT 1", [])])
        assert conn.closed
    finally:
        conn.close()
    assert login(server, "u_scram", env) == ("u_scram", False)


# -- scripted servers ------------------------------------------------------------------------


class Scripted:
    """A TCP listener on 127.0.0.1 whose one accepted connection runs ``script`` in a thread."""

    def __init__(self, script: Callable[[socket.socket], None] | None) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port: int = self.listener.getsockname()[1]
        self.thread: threading.Thread | None = None
        if script is not None:
            self.thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
            self.thread.start()

    def _serve(self, script: Callable[[socket.socket], None]) -> None:
        self.listener.settimeout(30)
        try:
            peer, _ = self.listener.accept()
        except OSError:
            return
        with peer:
            peer.settimeout(30)
            try:
                script(peer)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        if self.thread is not None:
            self.thread.join(timeout=30)
            assert not self.thread.is_alive()


def read_startup(peer: socket.socket) -> bytes:
    (length,) = struct.unpack("!i", recv_exactly(peer, 4))
    return recv_exactly(peer, length - 4)


def recv_exactly(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = peer.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def read_message(peer: socket.socket) -> bytes:
    header = recv_exactly(peer, 5)
    (length,) = struct.unpack("!i", header[1:])
    return recv_exactly(peer, length - 4)


def auth(code: int, data: bytes = b"") -> bytes:
    return b"R" + struct.pack("!ii", 8 + len(data), code) + data


def test_a_server_that_never_answers_times_out_within_the_connect_timeout(env):
    silent = Scripted(None)  # listens, never accepts: the kernel completes the TCP handshake
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            WireConnection.open(
                {"host": "127.0.0.1", "port": str(silent.port), "connect_timeout": "2"},
                environ=env,
            )
        except BaseException as exc:  # handed to the test's thread to check
            outcome.append(exc)

    thread = threading.Thread(target=connect)
    thread.start()
    deadline = time.monotonic() + 30  # the timeout is 2 s; 30 s only guards a hang
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(timeout=0.1)
    silent.close()
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], WireUnavailable)
    assert "timed out" in str(outcome[0])


def test_a_gssapi_request_is_unsupported(env):
    def script(peer: socket.socket) -> None:
        read_startup(peer)
        peer.sendall(auth(7))  # AuthenticationGSS
        peer.recv(1)

    gss = Scripted(script)
    try:
        with pytest.raises(WireUnsupported, match="GSSAPI"):
            WireConnection.open(
                {"host": "127.0.0.1", "port": str(gss.port), "sslmode": "disable"}, environ=env
            )
    finally:
        gss.close()


@pytest.mark.parametrize("skip_final", [False, True])
def test_a_server_that_cannot_prove_it_knows_the_password_is_refused(env, skip_final):
    def script(peer: socket.socket) -> None:
        read_startup(peer)
        peer.sendall(auth(10, b"SCRAM-SHA-256\x00\x00"))
        first = read_message(peer)
        client_nonce = first.split(b"r=", 1)[1]
        peer.sendall(auth(11, b"r=" + client_nonce + b"xyz,s=c2FsdA==,i=4096"))
        read_message(peer)
        if not skip_final:
            peer.sendall(auth(12, b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="))
        peer.sendall(auth(0))
        peer.recv(1)

    impostor = Scripted(script)
    given = {"host": "127.0.0.1", "port": str(impostor.port), "sslmode": "disable"}
    try:
        with pytest.raises(WireUnavailable, match="SCRAM"):
            WireConnection.open({**given, "password": "secret-Pw"}, environ=env)
    finally:
        impostor.close()


def test_an_explicit_environ_replaces_the_process_environment(server, env, monkeypatch):
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGPASSWORD", "not-this-one")
    assert login(server, "u_md5", env) == ("u_md5", False)
