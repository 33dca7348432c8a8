"""The exporter's HTTP server: /metrics, a landing page at /, /-/healthy, and extra routes.

A threaded server from the standard library: each connection in its own thread, TLS handshakes
in that thread too (a slow or plain-HTTP client never blocks the others), basic auth on every
path when the web config has users, as exporter-toolkit does.

A client cannot hold the server's resources for long: a read timeout and a connection cap
(``exporter._connections``). A client that goes away mid-response is logged at debug level,
never as an error.

Other paths go to ``routes`` when one is given (the monitor's pages, monitor/_web.py): a
callable from a GET/HEAD request's path and query string to a Response, or None for "not
mine". It runs in the connection's thread, under the same TLS, auth and timeouts.
"""

from __future__ import annotations

import gzip
import html
import logging
import math
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.registry import CollectorRegistry

from exporter._basic_auth import BasicAuth
from exporter._collector import scrape_timeout
from exporter._connections import CappedServer, Connection
from exporter._exposition import choose
from exporter._webconfig import WebConfig
from tracker.errors import ConfigurationError

logger = logging.getLogger("exporter")

# Not on Prometheus' default port allocations list (9090-9094 and the full 9100-9999 range).
DEFAULT_PORT = 8479
# Prometheus sends its request at once and keeps the connection between scrapes only if the
# server does; 10 s is ample for any real client and what a slow-loris gets at most.
DEFAULT_READ_TIMEOUT = 10.0
# Prometheus holds one connection per scrape target; two HA servers, a browser and a few curls
# are far below this, while a connection flood is stopped well before threads pile up.
DEFAULT_MAX_CONNECTIONS = 64
_GZIP_LEVEL = 6  # a 1.5 MB scrape in ~12 ms to ~8 %; level 9 is three times slower for 5 % less

_LANDING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>pipetrack exporter</title></head>
<body>
<h1>pipetrack exporter</h1>
<p>Run-state metrics of pipeline scripts, read from PostgreSQL at scrape time.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>{extra}
</ul>
<p>Version {version}</p>
</body>
</html>
"""


_MONITOR_LINK = '\n<li><a href="now">Monitor</a></li>'


@dataclass(frozen=True)
class Response:
    """What a route answers: status, body, content type and any further headers."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


Routes = Callable[[str, str], "Response | None"]
"""(path, query string) -> the Response, or None when the path is not the route's."""


class _HTTPServer(CappedServer):
    """The capped server, answering with ``_Handler``: metrics, routes, auth."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        registry: CollectorRegistry | None,
        tls: ssl.SSLContext | None,
        auth: BasicAuth | None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        routes: Routes | None = None,
    ) -> None:
        self.registry = registry
        self.routes = routes
        self.auth = auth
        super().__init__(
            address, tls=tls, read_timeout=read_timeout, max_connections=max_connections
        )

    def handle_connection(self, conn: Connection) -> None:
        _Handler(conn.sock, conn.client, self, conn)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "pipetrack-exporter"
    protocol_version = "HTTP/1.1"

    def __init__(self, request: Any, client_address: Any, server: Any, conn: Connection) -> None:
        self.conn = conn
        super().__init__(request, client_address, server)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        if self.server.watchdog.closing:
            self.close_connection = True
        if not self.close_connection:
            # The next request (or an idle keep-alive connection's end) is on the clock again.
            self.server.watchdog.arm(self.conn, self.server.read_timeout)

    def parse_request(self) -> bool:
        # The request line and headers were read on the clock; a request completed only by the
        # watchdog's cut (a trickle, an HTTP/0.9 line without its blank line) is not served.
        parsed = not self.conn.expired and super().parse_request()
        if not self.server.watchdog.disarm(self.conn):
            self.server.timed_out += 1
            self.close_connection = True
            logger.debug(
                "closed the connection of %s: no complete request within %g s",
                self.client_address,
                self.server.read_timeout,
            )
            return False
        return parsed

    def do_GET(self) -> None:
        self._respond(include_body=True)

    def do_HEAD(self) -> None:
        self._respond(include_body=False)

    def _respond(self, *, include_body: bool) -> None:
        auth = self.server.auth
        verdict = (
            None
            if auth is None
            else auth.check(self.headers.get("Authorization"), self.client_address[0])
        )
        if verdict is not None and verdict.limited:
            self._send(
                429,
                b"Too Many Requests: too many failed logins\n",
                "text/plain; charset=utf-8",
                include_body,
                {"Retry-After": str(verdict.retry_after)},
            )
            return
        if verdict is not None and not verdict.allowed:
            self._send(
                401,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                include_body,
                {"WWW-Authenticate": 'Basic realm="pipetrack exporter", charset="UTF-8"'},
            )
            return
        parts = urlsplit(self.path)
        path = parts.path
        routes = self.server.routes
        registry = self.server.registry
        if path == "/metrics" and registry is not None:
            self._metrics(registry, include_body)
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", "text/plain; charset=utf-8", include_body)
        elif routes is not None and (answer := self._route(routes, path, parts.query)):
            self._send(
                answer.status, answer.body, answer.content_type, include_body, answer.headers
            )
        elif path == "/":
            from tracker._version import __version__

            page = _LANDING.format(
                version=html.escape(__version__), extra=_MONITOR_LINK if routes else ""
            ).encode()
            self._send(200, page, "text/html; charset=utf-8", include_body)
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8", include_body)

    def _route(self, routes: Routes, path: str, query: str) -> Response | None:
        try:
            return routes(path, query)
        except Exception:
            logger.exception("serving %s failed", path)
            return Response(500, b"Internal Server Error\n", "text/plain; charset=utf-8")

    def _metrics(self, registry: CollectorRegistry, include_body: bool) -> None:
        encoder, content_type = choose(self.headers.get("Accept", ""))
        token = scrape_timeout.set(
            _seconds(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        )
        try:
            body = encoder(registry)
        except Exception:
            logger.exception("collecting metrics failed")
            self._send(500, b"collecting metrics failed\n", "text/plain", include_body)
            return
        finally:
            scrape_timeout.reset(token)
        headers = {"Vary": "Accept-Encoding"}
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, content_type, include_body, headers)

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str,
        include_body: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # Sending is on the clock too: a client that does not take the answer is cut off.
        self.server.watchdog.arm(self.conn, self.server.read_timeout, reading=False)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if include_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header asks for gzip (``gzip`` or ``x-gzip``, q above 0)."""
    for part in (header or "").split(","):
        coding, *params = (item.strip() for item in part.split(";"))
        if coding.lower() not in ("gzip", "x-gzip"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _seconds(header: str | None) -> float | None:
    """A positive number of seconds from a header, else None (a bad header is ignored)."""
    try:
        value = float(header) if header else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < float("inf") else None


class ExporterServer:
    """An HTTP(S) server for ``registry`` (None: no /metrics) and ``routes``, bound when
    constructed.

    ``start()`` serves from a background thread (tests, embedding); ``serve_forever()`` serves
    from the caller's. ``shutdown()`` stops either and closes the socket; it is idempotent.
    ``read_timeout`` and ``max_connections`` bound what one client can hold (see the module's
    docstring).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        web_config: WebConfig | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        routes: Routes | None = None,
    ) -> None:
        if not (math.isfinite(read_timeout) and read_timeout > 0):
            raise ConfigurationError(
                f"read timeout must be more than 0 seconds, not {read_timeout}"
            )
        if isinstance(max_connections, bool) or not (
            isinstance(max_connections, int) and max_connections >= 1
        ):
            raise ConfigurationError(
                f"max connections must be a whole number of 1 or more, not {max_connections!r}"
            )
        config = web_config or WebConfig()
        try:
            self._httpd = _HTTPServer(
                (host, port),
                registry=registry,
                tls=config.ssl_context(),
                auth=config.authenticator(),
                read_timeout=read_timeout,
                max_connections=max_connections,
                routes=routes,
            )
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            raise ConfigurationError(
                f"cannot listen on {shown}:{port}: {exc.strerror or exc}"
            ) from None
        self._tls = config.tls is not None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._serving = False
        self._closed = False

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def open_connections(self) -> int:
        """Client connections being served now (at most ``max_connections``)."""
        return self._httpd.open_connections

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8479/``."""
        host = self.host
        if host == "0.0.0.0":  # noqa: S104  (a URL for this machine's clients)
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}/"

    def serve_forever(self) -> None:
        with self._lock:
            self._serving = True
        self._httpd.serve_forever(poll_interval=0.5)

    def start(self) -> None:
        """Serve from a daemon thread until ``shutdown()``."""
        thread = threading.Thread(
            target=self.serve_forever, name="pipetrack-exporter-http", daemon=True
        )
        self._thread = thread
        thread.start()

    def shutdown(self) -> None:
        """Stop serving (waiting for the serve loop to end) and close the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            serving = self._serving or self._thread is not None
        if serving:
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._httpd.server_close()
