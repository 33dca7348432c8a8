"""The exporter server's connections: one thread each, a read timeout, and a connection cap.

- **read timeout**: a request's line and headers (and, for the first request of a connection,
  the TLS handshake) must arrive within ``read_timeout`` seconds of the connection opening or
  of the previous response; sending a response is bounded the same way. A watchdog thread
  shuts the socket down when the time is up, however slowly the bytes trickle in, and an idle
  keep-alive connection is closed after it too;
- **connection cap**: at most ``max_connections`` connections are served at once, one thread
  each; a connection beyond it is answered 503 (plain HTTP) or closed (TLS) at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger("exporter")

_BUSY_BODY = b"too many connections\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
# What a peer that went away (or was cut off by the watchdog) makes a read or write raise.
_GONE_ERRNOS = {
    errno.EPIPE,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ENOTCONN,
    errno.ESHUTDOWN,
    errno.ETIMEDOUT,
    errno.EBADF,
}


def client_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is the client's doing: a disconnect, a timeout, a TLS alert or EOF."""
    if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _GONE_ERRNOS


def shut(sock: socket.socket) -> None:
    """Shut ``sock`` down under whoever blocks on it (the raw call: SSLSocket's own would drop
    the TLS object under the serving thread's feet)."""
    with contextlib.suppress(OSError):  # already shut down, closed, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Connection:
    """One client connection: its socket (the TLS one once wrapped) and its deadline state."""

    __slots__ = ("client", "expired", "sock")

    def __init__(self, sock: socket.socket, client: Any) -> None:
        self.sock = sock
        self.client = client
        self.expired = False  # the watchdog cut it off


class Watchdog:
    """One thread for all connections: shuts a connection's socket down when its deadline
    passes, which ends whatever read or write blocks on it at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[Connection, tuple[float, bool]] = {}  # deadline, reading
        self._stopped = False
        self.closing = False  # the server stops: idle connections go at once
        self._thread = threading.Thread(
            target=self._run, name="pipetrack-exporter-watchdog", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def arm(self, conn: Connection, seconds: float, *, reading: bool = True) -> None:
        """Cut ``conn`` off ``seconds`` from now unless disarmed (or re-armed) before."""
        with self._cond:
            if conn.expired:
                return
            if reading and self.closing:
                self._expire(conn)
                return
            self._deadlines[conn] = (time.monotonic() + seconds, reading)
            self._cond.notify()

    def disarm(self, conn: Connection) -> bool:
        """Stop ``conn``'s clock; False if it already ran out (the socket is shut down)."""
        with self._cond:
            self._deadlines.pop(conn, None)
            return not conn.expired

    def replace_socket(self, conn: Connection, sock: socket.socket) -> None:
        with self._cond:
            conn.sock = sock
            if conn.expired:
                shut(sock)

    def close_idle(self) -> None:
        """Cut off every connection waiting for a request, and any that starts waiting later."""
        with self._cond:
            self.closing = True
            for conn, (_, reading) in list(self._deadlines.items()):
                if reading:
                    self._expire(conn)

    def cut_all(self, connections: list[Connection]) -> None:
        with self._cond:
            for conn in connections:
                self._expire(conn)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _expire(self, conn: Connection) -> None:  # with self._cond held
        self._deadlines.pop(conn, None)
        conn.expired = True
        shut(conn.sock)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for conn, (deadline, _) in list(self._deadlines.items()):
                    if deadline <= now:
                        self._expire(conn)
                nearest = min((d for d, _ in self._deadlines.values()), default=None)
                self._cond.wait(None if nearest is None else max(0.0, nearest - now))


class CappedServer(ThreadingHTTPServer):
    """A threaded HTTP server with the read timeout and the connection cap; each connection
    is served by ``handle_connection`` in its own thread, after its TLS handshake."""

    daemon_threads = True
    block_on_close = False  # server_close() drains the connections itself, with a bound
    # Restarting the exporter must not wait for TIME_WAIT sockets of the last run.
    allow_reuse_address = True
    # Connections the kernel queues while the accept loop is busy (socketserver's default is 5).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        tls: ssl.SSLContext | None,
        read_timeout: float,
        max_connections: int,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.tls = tls
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.watchdog = Watchdog()
        self._connections: set[Connection] = set()
        self._drained = threading.Condition()
        self._refusal_warned_at = -math.inf
        # Counts, for tests and debugging.
        self.refused = 0  # connections beyond the cap
        self.timed_out = 0  # requests cut off by the read timeout
        self.disconnects = 0  # clients gone mid-request or mid-response
        # Connections are served by _serve_connection (which passes the handler its connection).
        super().__init__(address, BaseHTTPRequestHandler)
        self.watchdog.start()

    @property
    def open_connections(self) -> int:
        with self._drained:
            return len(self._connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the new connection from a thread of its own, unless the cap is reached."""
        conn = Connection(request, client_address)
        with self._drained:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(conn)
        if full:
            self._refuse(request, client_address)
            return
        # The clock runs from the accept: the TLS handshake and the first request share it.
        self.watchdog.arm(conn, self.read_timeout)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(conn,),
            name="pipetrack-exporter-connection",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: refuse, as at the cap
            self._forget(conn)
            self._refuse(request, client_address)

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._refusal_warned_at >= 60:
            self._refusal_warned_at = now
            logger.warning(
                "refusing connections: %d are open, the most allowed (--max-connections)",
                self.max_connections,
            )
        else:
            logger.debug("refused a connection from %s: at the connection cap", client_address)
        if self.tls is None:
            try:
                request.setblocking(False)  # the accept loop must never wait on a client
                request.send(_BUSY)
            except OSError:
                pass
        self.shutdown_request(request)

    def _serve_connection(self, conn: Connection) -> None:
        try:
            conn.sock.settimeout(self.read_timeout)  # each socket call, besides the watchdog
            if self.tls is not None and not self._handshake(conn, self.tls):
                return
            self.handle_connection(conn)
        except Exception as exc:
            if client_gone(exc):
                self.disconnects += 1
                logger.debug("client %s went away: %s", conn.client, exc or type(exc).__name__)
            else:
                logger.exception("error serving %s", conn.client)
        finally:
            self._forget(conn)

    def handle_connection(self, conn: Connection) -> None:
        """Answer the requests of ``conn`` (its socket TLS-wrapped when the server has TLS)."""
        raise NotImplementedError

    def _handshake(self, conn: Connection, tls: ssl.SSLContext) -> bool:
        try:
            secure = tls.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            self.watchdog.replace_socket(conn, secure)
            secure.do_handshake()
        except (ssl.SSLError, OSError, ValueError) as exc:
            # A plain-HTTP client, a wrong client certificate, a port scan, a slow handshake.
            logger.debug("TLS handshake with %s failed: %s", conn.client, exc)
            return False
        return True

    def _forget(self, conn: Connection) -> None:
        self.watchdog.disarm(conn)
        self.shutdown_request(conn.sock)
        with self._drained:
            self._connections.discard(conn)
            self._drained.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Only the accept loop's own errors arrive here (connections handle theirs).
        logger.exception("error serving %s", client_address)

    def server_close(self) -> None:
        """Close the socket; idle connections at once, answers in flight within the timeout."""
        super().server_close()
        self.watchdog.close_idle()
        deadline = time.monotonic() + self.read_timeout
        with self._drained:
            while self._connections and time.monotonic() < deadline:
                self._drained.wait(deadline - time.monotonic())
            left = list(self._connections)
        self.watchdog.cut_all(left)
        self.watchdog.stop()
