"""A small blocking PostgreSQL client (frontend/backend protocol 3.0) for the tracker's writer.

psycopg loads libpq and OpenSSL, about 20 MB of RSS in every tracked process; this client needs
only ``socket`` and ``struct`` (``ssl`` only once TLS is negotiated). It does what the writer
needs: one connection, batches of parameterised statements in one round trip and one
transaction, a few small text reads. For any setting it cannot honour it raises WireUnsupported,
and the caller connects with psycopg instead.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from tracker._db import wire_codec as codec
from tracker._db.wire_codec import encode_param
from tracker._db.wire_errors import ServerError, WireError, WireUnavailable, WireUnsupported
from tracker._db.wire_settings import Settings, resolve

if TYPE_CHECKING:
    from tracker._db import wire_auth

__all__ = [
    "Sent",
    "ServerError",
    "WireConnection",
    "WireError",
    "WireUnavailable",
    "WireUnsupported",
    "encode_param",
]

logger = logging.getLogger("tracker")

_PROTOCOL_3_0 = 196608
_SSL_REQUEST = 80877103
_CANCEL_REQUEST = 80877102
# Far above anything the writer sends or reads; a bigger length means a broken stream.
_MAX_MESSAGE = 1 << 30
# Batches up to this size are sent in one sendall(); bigger ones read answers as they go.
_SEND_AT_ONCE = 1 << 16
# Named prepared statements kept per connection; further statements are parsed each time.
MAX_PREPARED = 64
# SQLSTATEs after which the cached statements are dropped and the batch retried once:
# cached plan must not change result type (0A000), prepared statement does not exist (26000).
_STALE_STATEMENT = frozenset({"0A000", "26000"})

_AUTH_OK, _AUTH_CLEARTEXT, _AUTH_MD5 = 0, 3, 5
_AUTH_SASL, _AUTH_SASL_CONTINUE, _AUTH_SASL_FINAL = 10, 11, 12
_AUTH_NAMES = {2: "Kerberos V5", 6: "SCM credentials", 7: "GSSAPI", 8: "GSSAPI", 9: "SSPI"}


class Sent:
    """A batch ``WireConnection.send`` sent; ``receive`` reads its answer."""

    __slots__ = ("parsing",)

    def __init__(self, parsing: list[tuple[str, str]]) -> None:
        self.parsing = parsing  # (SQL, name) of the Parse messages sent, in order


class _StartupRejected(Exception):
    """The server answered the startup with an ErrorResponse (sslmode allow/prefer retry once)."""

    def __init__(self, error: WireUnavailable) -> None:
        super().__init__(error.message)
        self.error = error


class WireConnection:
    """One connection to PostgreSQL. Not thread-safe: one thread (the writer) uses it.

    Open it with ``WireConnection.open(params)``; ``closed`` turns True after ``close()`` or
    once the connection broke. Statement errors raise ServerError and leave it usable.
    """

    def __init__(self, sock: socket.socket, settings: Settings) -> None:
        self._sock = sock
        self._settings = settings
        self._buffer = bytearray()
        self._closed = False
        self._deadline: float | None = None
        self._prepared: dict[str, str] = {}  # SQL -> statement name, Parse confirmed
        self._parsing: dict[str, str] = {}  # SQL -> name, Parse sent, not yet answered
        self._sent: list[Sent] = []  # batches sent, answers not yet read (oldest first)
        self._counter = 0
        self._backend_key: tuple[int, bytes] | None = None
        # During the login a FATAL error is the server's answer, not a lost connection.
        self._logging_in = True
        #: ParameterStatus values the server reported (server_version, TimeZone, ...)
        self.parameters: dict[str, str] = {}
        self.tls = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, params: Mapping[str, str], environ: Mapping[str, str] | None = None
    ) -> WireConnection:
        """Connect and log in as libpq would with ``params`` (a parsed conninfo) and the
        ``PG*`` variables of ``environ`` (default: the process environment).

        Raises WireUnsupported for settings only libpq handles, WireUnavailable when the server
        cannot be reached in ``connect_timeout`` or refuses the login.
        """
        settings = resolve(params, environ)
        try:
            for text in (settings.user, settings.dbname, settings.options):
                codec.cstr(text)
        except ValueError:  # NUL characters, or lone surrogates from a byte environment
            raise WireUnsupported("connection settings that are not plain UTF-8 text") from None
        deadline = (
            None
            if settings.connect_timeout is None
            else time.monotonic() + settings.connect_timeout
        )
        mode = "disable" if settings.unix_socket else settings.sslmode
        # sslmode allow and prefer try the other way once when the server refuses the first.
        plans = {
            "disable": ("plain",),
            "allow": ("plain", "tls"),
            "prefer": ("try-tls", "plain"),
        }.get(mode, ("tls",))
        for number, plan in enumerate(plans, start=1):
            try:
                return cls._attempt(settings, plan, deadline)
            except _StartupRejected as rejected:
                if number == len(plans):
                    raise rejected.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _attempt(cls, settings: Settings, plan: str, deadline: float | None) -> WireConnection:
        sock = _connect_socket(settings, deadline)
        conn = cls(sock, settings)
        conn._deadline = deadline
        try:
            if plan != "plain":
                conn._negotiate_tls(required=plan == "tls")
            conn._startup()
        except _StartupRejected:
            conn._drop()
            raise
        except WireError:
            conn._drop()
            raise
        except OSError as exc:
            conn._drop()
            raise conn._unavailable(exc) from None
        conn._deadline = None
        conn._logging_in = False
        return conn

    def _negotiate_tls(self, *, required: bool) -> None:
        self._send(struct.pack("!ii", 8, _SSL_REQUEST))
        self._arm_timeout()
        # Exactly one byte: anything the server sent after it must go through TLS (CVE-2021-23222).
        answer = self._sock.recv(1)
        if answer == b"N":
            if required:
                raise WireUnavailable("server does not support SSL, but SSL was required")
            return
        if answer != b"S":
            raise WireUnavailable("received an invalid response to the SSL negotiation")
        from tracker._db.wire_tls import wrap

        try:
            self._sock = wrap(self._sock, self._settings)
        except WireUnavailable:
            raise
        except OSError as exc:
            if required:
                raise WireUnavailable(f"SSL handshake failed: {exc}") from None
            # sslmode=prefer: libpq goes on without TLS when the handshake fails.
            raise _StartupRejected(WireUnavailable(f"SSL handshake failed: {exc}")) from None
        self.tls = True

    def _startup(self) -> None:
        settings = self._settings
        params = [("user", settings.user), ("database", settings.dbname)]
        if settings.application_name:
            params.append(("application_name", settings.application_name))
        if settings.options:
            params.append(("options", settings.options))
        params.extend(settings.environment_options)
        params.append(("client_encoding", "UTF8"))
        body = struct.pack("!i", _PROTOCOL_3_0) + b"".join(
            codec.cstr(key) + codec.cstr(value) for key, value in params
        )
        self._send(struct.pack("!i", len(body) + 5) + body + b"\x00")
        self._authenticate()
        while True:
            kind, data = self._read()
            if kind == b"Z":
                break
            if kind == b"K":
                self._backend_key = (struct.unpack_from("!i", data)[0], bytes(data[4:]))
            elif kind == b"E":
                raise _StartupRejected(self._login_error(data))
            elif kind == b"v":
                pass  # NegotiateProtocolVersion: we asked for 3.0 with no extensions
            else:
                self._unexpected(kind)
        encoding = self.parameters.get("client_encoding", "")
        if encoding.upper() != "UTF8":
            raise WireUnsupported(f"the server keeps client_encoding {encoding}")

    def _authenticate(self) -> None:
        from tracker._db import wire_auth

        scram: wire_auth.ScramSha256 | None = None
        while True:
            kind, data = self._read()
            if kind == b"E":
                raise _StartupRejected(self._login_error(data))
            if kind == b"v":
                continue
            if kind != b"R":
                self._unexpected(kind)
            (code,) = struct.unpack_from("!i", data)
            if code == _AUTH_OK:
                if scram is not None and not scram.verified:
                    raise WireUnavailable("the server ended SCRAM authentication early")
                return
            if code == _AUTH_CLEARTEXT:
                self._send_message(b"p", self._password_bytes() + b"\x00")
            elif code == _AUTH_MD5:
                user = self._settings.user.encode("utf-8")
                answer = wire_auth.md5_response(self._password_bytes(), user, bytes(data[4:8]))
                self._send_message(b"p", answer + b"\x00")
            elif code in (_AUTH_SASL, _AUTH_SASL_CONTINUE, _AUTH_SASL_FINAL):
                scram = self._sasl_step(code, bytes(data[4:]), scram)
            else:
                name = _AUTH_NAMES.get(code, f"method {code}")
                raise WireUnsupported(f"{name} authentication")

    def _sasl_step(
        self, code: int, data: bytes, scram: wire_auth.ScramSha256 | None
    ) -> wire_auth.ScramSha256:
        from tracker._db import wire_auth

        if code == _AUTH_SASL:
            if b"SCRAM-SHA-256" not in data.split(b"\x00"):
                raise WireUnsupported("SASL mechanisms other than SCRAM-SHA-256")
            self._password_bytes()  # fail early without a password
            scram = wire_auth.ScramSha256(self._settings.password or "")
            first = scram.client_first()
            body = b"SCRAM-SHA-256\x00" + struct.pack("!i", len(first)) + first
            self._send_message(b"p", body)
            return scram
        if scram is None:
            raise WireUnavailable("the server continued a SASL exchange that never started")
        if code == _AUTH_SASL_CONTINUE:
            self._send_message(b"p", scram.client_final(data))
        else:
            scram.verify(data)
        return scram

    def _password_bytes(self) -> bytes:
        if not self._settings.password:
            raise WireUnavailable("the server asked for a password and none was supplied")
        return self._settings.password.encode("utf-8", "surrogateescape")

    def _login_error(self, data: bytes | memoryview) -> WireUnavailable:
        fields = codec.error_fields(data)
        message = fields.get("M", "login failed")
        if self._settings.password_from_file and fields.get("C") == "28P01":
            message += " (password retrieved from the password file)"
        return WireUnavailable(self._redact(message), sqlstate=fields.get("C"))

    # -- statements ------------------------------------------------------------------------

    def execute(
        self, statements: Sequence[tuple[str, Sequence[object]]], *, timeout: float | None = None
    ) -> None:
        """Run ``statements`` (SQL with ``$1..$n``, parameters) in one round trip and one
        transaction: all of them or, on the first error, none (ServerError).

        ``timeout`` bounds the round trip in seconds (default: none); past it the connection
        is cancelled and closed (WireUnavailable), and whether the batch committed is unknown.
        """
        if not statements:
            return
        try:
            self._run(statements, timeout, rows=None)
        except ServerError as exc:
            if exc.sqlstate not in _STALE_STATEMENT or not self._prepared:
                raise
            self._forget_prepared(timeout)
            self._run(statements, timeout, rows=None)

    def query(
        self, sql: str, params: Sequence[object] = (), *, timeout: float | None = None
    ) -> list[tuple[str | None, ...]]:
        """The rows ``sql`` returns, every value as PostgreSQL's text form (None for NULL)."""
        rows: list[tuple[str | None, ...]] = []
        try:
            self._run([(sql, params)], timeout, rows=rows)
        except ServerError as exc:
            if exc.sqlstate not in _STALE_STATEMENT or not self._prepared:
                raise
            self._forget_prepared(timeout)
            rows.clear()
            self._run([(sql, params)], timeout, rows=rows)
        return rows

    def send(
        self, statements: Sequence[tuple[str, Sequence[object]]], *, timeout: float | None = None
    ) -> Sent:
        """Send ``statements`` as ``execute`` does, without waiting for the answer.

        Several batches may be sent before the first is received (a pipeline): the server
        runs each in its own transaction, in order. ``receive`` each, in the order sent.
        """
        self._check_open()
        # Encode everything first: a value we cannot send fails before a byte is sent.
        out = bytearray()
        parsing: list[tuple[str, str]] = []
        for sql, params in statements:
            name = self._prepared.get(sql)
            if name is None:
                # A Parse of this SQL still in flight may yet be skipped (an earlier statement
                # of its batch failing): parse it again here, unnamed, rather than rely on it.
                if (
                    sql not in self._parsing
                    and len(self._prepared) + len(self._parsing) < MAX_PREPARED
                ):
                    self._counter += 1
                    name = f"pipetrack_{self._counter}"
                else:
                    name = ""
                out += codec.message(b"P", codec.cstr(name) + codec.sql_text(sql) + b"\x00\x00")
                parsing.append((sql, name))
                if name:
                    self._parsing[sql] = name
            out += codec.message(b"B", codec.bind_body(name, params))
            out += codec.EXECUTE
        out += codec.SYNC
        sent = Sent(parsing)
        self._sent.append(sent)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._send(out)
        finally:
            self._deadline = None
        return sent

    def receive(
        self,
        sent: Sent,
        *,
        timeout: float | None = None,
        rows: list[tuple[str | None, ...]] | None = None,
        counts: list[int] | None = None,
    ) -> None:
        """Read the answer to a batch ``send`` sent: None, or ServerError (rolled back).

        ``rows`` gets the rows the statements return; ``counts`` the number of rows each
        statement returned or changed (its command tag's last number), in order."""
        if self._closed:
            raise WireUnavailable("the connection is closed")
        if not self._sent or self._sent[0] is not sent:
            raise ValueError("receive() the batches in the order they were sent")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._collect(sent.parsing, rows, counts)
        finally:
            self._deadline = None
            self._sent.pop(0)
            # A Parse the server skipped (an earlier statement failed) created nothing.
            for sql, name in sent.parsing:
                if self._parsing.get(sql) == name:
                    del self._parsing[sql]

    def _run(
        self,
        statements: Sequence[tuple[str, Sequence[object]]],
        timeout: float | None,
        rows: list[tuple[str | None, ...]] | None,
    ) -> None:
        if self._sent:
            raise ValueError("receive() the batches sent before running another")
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = self.send(statements, timeout=timeout)
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        self.receive(sent, timeout=left, rows=rows)

    def _collect(
        self,
        parsing: list[tuple[str, str]],
        rows: list[tuple[str | None, ...]] | None,
        counts: list[int] | None = None,
    ) -> None:
        """Read until ReadyForQuery; remember the statements the server parsed."""
        error: ServerError | None = None
        while True:
            kind, data = self._read()
            if kind == b"Z":
                break
            if kind == b"1":
                sql, name = parsing.pop(0)
                if name:
                    self._prepared[sql] = name
                    self._parsing.pop(sql, None)
            elif kind == b"D" and rows is not None:
                rows.append(codec.data_row(data))
            elif kind == b"C" and counts is not None:
                counts.append(codec.command_count(data))
            elif kind == b"E":
                if error is None:
                    error = codec.server_error(data)
            elif kind == b"G":
                # COPY FROM STDIN: refuse it; the server ignored our Sync while in copy mode.
                self._send(
                    codec.message(b"f", b"COPY is not supported by this client\x00") + codec.SYNC
                )
            elif kind not in b"23CDInsdcHt":
                self._unexpected(kind)
        if error is not None:
            raise error

    def _forget_prepared(self, timeout: float | None) -> None:
        out = bytearray()
        for name in self._prepared.values():
            out += codec.message(b"C", b"S" + codec.cstr(name))
        self._prepared.clear()
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._send(out + codec.SYNC)
            self._collect([], None)
        finally:
            self._deadline = None

    # -- closing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Say goodbye to the server and close the socket. Idempotent."""
        if self._closed:
            return
        try:
            self._sock.settimeout(1.0)
            self._sock.sendall(codec.message(b"X", b""))
        except OSError:
            pass  # the server is gone already; closing is all that is left
        self._drop()

    def __enter__(self) -> WireConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        s = self._settings
        return f"<WireConnection {s.user}@{s.host}:{s.port}/{s.dbname} {state}>"

    def _drop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # nothing more to do with a socket that fails
            self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise WireUnavailable("the connection is closed")

    # -- bytes on the wire -----------------------------------------------------------------

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        return remaining

    def _arm_timeout(self) -> None:
        self._sock.settimeout(self._remaining())

    def _send(self, data: bytes | bytearray) -> None:
        try:
            if len(data) <= _SEND_AT_ONCE:
                self._arm_timeout()
                self._sock.sendall(data)
            else:
                self._send_reading(data)
        except OSError as exc:
            self._lost(exc)

    def _send_reading(self, data: bytes | bytearray) -> None:
        """Send a large batch while taking in the answers the server already writes.

        The server answers each statement as it goes; once the socket buffers between us are
        full of answers it stops reading, and a plain sendall() would then wait forever.
        poll(), not select(): a process may hold file descriptors beyond select()'s 1024.
        """
        import select

        view = memoryview(data)
        poller = select.poll()
        poller.register(self._sock, select.POLLIN | select.POLLOUT)
        while view:
            remaining = self._remaining()
            events = poller.poll(None if remaining is None else max(remaining * 1000, 1))
            if not events:
                raise TimeoutError("timed out")
            mask = events[0][1]
            self._arm_timeout()
            if mask & (select.POLLIN | select.POLLERR | select.POLLHUP):
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the server closed the connection")
                self._buffer += chunk
            if mask & select.POLLOUT:
                sent = self._sock.send(view[:_SEND_AT_ONCE])
                view = view[sent:]

    def _send_message(self, kind: bytes, body: bytes) -> None:
        self._send(codec.message(kind, body))

    def _read(self) -> tuple[bytes, memoryview]:
        """The next message that is not asynchronous (notices, notifications, parameters)."""
        while True:
            header = self._read_exact(5)
            kind = bytes(header[:1])
            (length,) = struct.unpack_from("!i", header, 1)
            if not 4 <= length <= _MAX_MESSAGE:
                self._drop()
                raise WireUnavailable("the server sent a malformed message; connection closed")
            data = self._read_exact(length - 4)
            if kind == b"S":
                name, value = bytes(data).split(b"\x00")[:2]
                self.parameters[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            elif kind == b"N":
                fields = codec.error_fields(data)
                logger.debug("PostgreSQL %s: %s", fields.get("V", "NOTICE"), fields.get("M"))
            elif kind == b"A":
                pass  # NotificationResponse: this client never LISTENs on purpose
            elif (
                kind == b"E"
                and not self._logging_in
                and codec.error_fields(data).get("V") in ("FATAL", "PANIC")
            ):
                fields = codec.error_fields(data)
                self._drop()
                message = self._redact(fields.get("M", "the server ended the session"))
                raise WireUnavailable(message, sqlstate=fields.get("C"))
            else:
                return kind, data

    def _read_exact(self, size: int) -> memoryview:
        buffer = self._buffer
        try:
            while len(buffer) < size:
                self._arm_timeout()
                chunk = self._sock.recv(max(65536, size - len(buffer)))
                if not chunk:
                    raise ConnectionResetError("the server closed the connection")
                buffer += chunk
        except OSError as exc:
            self._lost(exc)
        data = memoryview(bytes(buffer[:size]))
        del buffer[:size]
        return data

    def _lost(self, exc: OSError) -> None:
        if isinstance(exc, TimeoutError) and not self._closed:
            self._cancel()
        self._drop()
        raise self._unavailable(exc) from None

    def _unavailable(self, exc: OSError) -> WireUnavailable:
        if isinstance(exc, TimeoutError):
            return WireUnavailable("timed out waiting for the server; connection closed")
        return WireUnavailable(self._redact(f"connection to the server lost: {exc}"))

    def _cancel(self) -> None:
        """Ask the server to cancel what this connection runs (best effort, one second)."""
        if self._backend_key is None:
            return
        pid, key = self._backend_key
        packet = struct.pack("!iii", 12 + len(key), _CANCEL_REQUEST, pid) + key
        try:
            with _connect_socket(self._settings, time.monotonic() + 1.0) as sock:
                sock.sendall(packet)
        except (OSError, WireError):
            logger.debug("could not send a cancel request to PostgreSQL")

    def _unexpected(self, kind: bytes) -> None:
        self._drop()
        raise WireUnavailable(f"unexpected message {kind!r} from the server; connection closed")

    def _redact(self, text: str) -> str:
        password = self._settings.password
        return text.replace(password, "****") if password else text


def _connect_socket(settings: Settings, deadline: float | None) -> socket.socket:
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
    where = settings.socket_path if settings.unix_socket else f"{settings.host}:{settings.port}"
    try:
        if settings.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(settings.socket_path)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((settings.host, settings.port), timeout=timeout)
    except TimeoutError:
        raise WireUnavailable(f"timed out connecting to {where}") from None
    except OSError as exc:
        raise WireUnavailable(f"cannot connect to {where}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if settings.keepalives:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in settings.keepalive_options:
                option = {
                    "keepalives_idle": "TCP_KEEPIDLE",
                    "keepalives_interval": "TCP_KEEPINTVL",
                    "keepalives_count": "TCP_KEEPCNT",
                }[name]
                if hasattr(socket, option):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:
        sock.close()
        raise
    return sock
