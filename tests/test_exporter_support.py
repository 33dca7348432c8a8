"""Helpers shared by the exporter tests (this module holds no tests itself)."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import PipetrackCollector

T0 = datetime(2026, 3, 14, 9, 0, 0, tzinfo=timezone.utc)


def ts(when: datetime) -> float:
    return when.timestamp()


def insert_run(db, **columns) -> uuid.UUID:
    """Insert one run; defaults describe a RUNNING run of DAILY_01_BDC_Locations."""
    row = {
        "run_id": uuid.uuid4(),
        "task_name": "DAILY_01_BDC_Locations",
        "task_stage": "DAILY",
        "hostname": "etl-1",
        "process_id": 4242,
        "execution_start": T0,
        "execution_status": "RUNNING",
    }
    row.update(columns)
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO pipeline_status ({names}) VALUES ({marks})", list(row.values()))
    return row["run_id"]


def finish_run(db, run_id, status: str, end: datetime) -> None:
    db.execute(
        "UPDATE pipeline_status SET execution_status = %s, execution_end = %s WHERE run_id = %s",
        (status, end, run_id),
    )


@contextmanager
def registered(target, **kwargs) -> Iterator[tuple[CollectorRegistry, PipetrackCollector]]:
    """A fresh registry holding a collector for ``target``; the collector closed afterwards."""
    registry = CollectorRegistry()
    collector = PipetrackCollector(target, **kwargs)
    registry.register(collector)
    try:
        yield registry, collector
    finally:
        collector.close()


def parse(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The registry's full text exposition, parsed back: {(sample name, labels): value}."""
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """A TCP port on 127.0.0.1 forwarding to a PostgreSQL socket (Unix path or host:port).

    ``stop()`` closes the port and every connection through it (the database "goes away");
    ``start()`` opens the same port again; ``stall()`` keeps accepting but forwards nothing,
    like a network that swallows packets.
    """

    def __init__(self, upstream: tuple[str, int] | str, port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted so far
        self._stalled = threading.Event()
        self._resume = threading.Event()
        self._resume.set()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._stalled.clear()
        self._resume.set()
        self._spawn(self._accept, listener)

    def stall(self) -> None:
        self._stalled.set()
        self._resume.clear()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="test-proxy")
        thread.start()
        self._threads.append(thread)

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(self.upstream)
        else:
            sock = socket.create_connection(self.upstream)
        return sock

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self._stalled.is_set():
                with self._lock:
                    self._sockets.append(client)
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.extend((client, server))
            self._spawn(self._pipe, client, server)
            self._spawn(self._pipe, server, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            # While stalled, hold the data: the peer waits for an answer that does not come.
            self._resume.wait()
            if self._listener is None:
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        self._resume.set()
        if listener is not None:
            # On Linux, close() alone leaves a thread blocked in accept() (and the port taking
            # connections); shutdown() wakes it.
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)


def proxy_to(dsn: str) -> TcpProxy:
    """A (not yet started) proxy to the server ``dsn`` names, Unix socket or TCP."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "/var/run/postgresql")
    port = int(str(params.get("port") or 5432))
    if host.startswith("/"):
        return TcpProxy(f"{host}/.s.PGSQL.{port}")
    return TcpProxy((host, port))


def via_proxy(dsn: str, proxy: TcpProxy):
    """A DatabaseTarget for ``dsn``'s database, reached through ``proxy``."""
    from psycopg.conninfo import make_conninfo

    from tracker._db.dsn import DatabaseTarget

    return DatabaseTarget(
        conninfo=make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port)), source="test"
    )
