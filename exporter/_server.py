"""The exporter's HTTP server: /metrics, a landing page at /, and /-/healthy.

A threaded server from the standard library: each request in its own thread, TLS handshakes in
that thread too (a slow or plain-HTTP client never blocks the others), basic auth on every path
when the web config has users, as exporter-toolkit does.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.registry import CollectorRegistry

from exporter._collector import scrape_timeout
from exporter._exposition import choose
from exporter._webconfig import BasicAuth, WebConfig
from tracker.errors import ConfigurationError

logger = logging.getLogger("exporter")

# Not on Prometheus' default port allocations list (9090-9094 and the full 9100-9999 range).
DEFAULT_PORT = 8479
HANDSHAKE_TIMEOUT_SECONDS = 10.0

_LANDING = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>pipetrack exporter</title></head>
<body>
<h1>pipetrack exporter</h1>
<p>Run-state metrics of pipeline scripts, read from PostgreSQL at scrape time.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>
</ul>
<p>Version {version}</p>
</body>
</html>
"""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Restarting the exporter must not wait for TIME_WAIT sockets of the last run.
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        registry: CollectorRegistry,
        tls: ssl.SSLContext | None,
        auth: BasicAuth | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.tls = tls
        self.auth = auth
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        try:
            secure = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # A plain-HTTP client, a wrong client certificate, a port scan: not our problem.
            logger.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            secure.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "pipetrack-exporter"
    protocol_version = "HTTP/1.1"

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
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics(include_body)
        elif path == "/":
            from tracker import __version__

            page = _LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, page, "text/html; charset=utf-8", include_body)
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", "text/plain; charset=utf-8", include_body)
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8", include_body)

    def _metrics(self, include_body: bool) -> None:
        encoder, content_type = choose(self.headers.get("Accept", ""))
        token = scrape_timeout.set(
            _seconds(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        )
        try:
            body = encoder(self.server.registry)
        except Exception:
            logger.exception("collecting metrics failed")
            self._send(500, b"collecting metrics failed\n", "text/plain", include_body)
            return
        finally:
            scrape_timeout.reset(token)
        self._send(200, body, content_type, include_body)

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str,
        include_body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
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


def _seconds(header: str | None) -> float | None:
    """A positive number of seconds from a header, else None (a bad header is ignored)."""
    try:
        value = float(header) if header else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < float("inf") else None


class ExporterServer:
    """An HTTP(S) server for ``registry``, bound when constructed.

    ``start()`` serves from a background thread (tests, embedding); ``serve_forever()`` serves
    from the caller's. ``shutdown()`` stops either and closes the socket; it is idempotent.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        web_config: WebConfig | None = None,
    ) -> None:
        config = web_config or WebConfig()
        try:
            self._httpd = _HTTPServer(
                (host, port),
                registry=registry,
                tls=config.ssl_context(),
                auth=config.authenticator(),
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
