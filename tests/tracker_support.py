"""Shared helpers of the tracker tests: a Tracker on the test's database, row readers, polling,
and running the scripts in tests/scripts/ as real child processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from psycopg.rows import dict_row

import tracker
from tracker._model.state import TERMINAL, RunCore
from tracker._runtime import trackers

SCRIPTS = Path(__file__).parent / "scripts"


@contextmanager
def default_tracker_on(dsn: str, spool: Path, **settings: Any) -> Iterator[tracker.Tracker]:
    """The default Tracker, writing to ``dsn`` (strict, no process hooks), shut down after."""
    instance = make_tracker(dsn, spool, **settings)
    previous = trackers.set_default(instance)
    try:
        yield instance
    finally:
        instance.shutdown(5.0)
        trackers.set_default(previous)


def make_tracker(dsn: str, spool: Path, **settings: Any) -> tracker.Tracker:
    options: dict[str, Any] = {
        "dsn": dsn,
        "flush_interval": 0.05,
        "spool_dir": spool,
        "lifecycle": False,
        "console": False,
    }
    options.update(settings)
    return tracker.Tracker(**options)


def fetch_run(db: Any, run_id: str) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM pipeline_status WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None, f"no row for run {run_id}"
    return dict(row)


def fetch_subtasks(db: Any, run_id: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM pipeline_subtask WHERE run_id = %s ORDER BY subtask_index", (run_id,)
        ).fetchall()
    return [dict(r) for r in rows]


def pct(value: float | None) -> Decimal | None:
    """A percentage as NUMERIC(5,2) returns it."""
    return None if value is None else Decimal(str(round(value, 2))).quantize(Decimal("0.01"))


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def child_env(dsn: str | None, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPETRACK_", "PG"))}
    env["PIPETRACK_DATA_DIR"] = str(data_dir)
    env["PIPETRACK_STRICT"] = "1"
    env["PIPETRACK_FLUSH_INTERVAL"] = "0.05"
    if dsn is not None:
        env["PIPETRACK_DSN"] = dsn
    env.update(extra)
    return env


def start_script(name: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_script(
    name: str, env: dict[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The child's next stdout line (scripts print READY <run_id> when they are in their loop)."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            _, err = process.communicate()
            pytest.fail(f"child printed nothing in {timeout} s; stderr:\n{err}")
    return process.stdout.readline().strip()


class TcpProxy:
    """A localhost TCP proxy in front of the test's PostgreSQL, to stop and start "the database"
    without touching the server. ``blackhole=True`` accepts connections and never answers."""

    def __init__(self, dsn: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "/tmp")  # noqa: S108 - libpq's default socket folder
        port = int(str(params.get("port") or 5432))
        self._upstream: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._dsn = dsn
        self.port = 0
        self.blackhole = False
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = False

    @property
    def dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self._dsn, host="127.0.0.1", port=str(self.port), connect_timeout="2")

    def start(self) -> TcpProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.05)
        self.port = server.getsockname()[1]
        self._server = server
        self._running = True
        self._spawn(self._accept, server)
        return self

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="test-proxy")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while self._running:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._sockets.append(client)
            if self.blackhole:
                continue
            upstream = socket.socket(self._upstream[0], socket.SOCK_STREAM)
            try:
                upstream.connect(self._upstream[1])
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._running = False
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
            threads, self._threads = self._threads, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(5)


@contextmanager
def proxy_for(dsn: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(dsn).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl")) if directory.exists() else []


def replay_spool(data_dir: Path, env: dict[str, str]) -> int:
    """Replay what processes with ``data_dir`` spooled (as the next pipetrack process would):
    a final state the database did not take within a process's exit bound (a busy machine)
    waits there. Returns how many spool files there were."""
    spooled = len(spool_files(data_dir / "spool"))
    if spooled:
        replay = subprocess.run(
            [sys.executable, "-m", "tracker", "spool", "replay"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert replay.returncode == 0, replay.stderr
        assert spool_files(data_dir / "spool") == []
    return spooled


def bare_run(task_name: str, run_id: str | None = None, max_pending: int = 100) -> RunCore:
    """A run's state alone (no Tracker, no writer), of a task of the DAILY stage."""
    return RunCore(
        run_id=run_id or str(uuid.uuid4()),
        task_name=task_name,
        task_stage="DAILY",
        total_subtasks=None,
        context={"hostname": "h", "process_id": 1},
        max_pending=max_pending,
    )


def snapshot(run_id: str, seq: int, status: str = "RUNNING", percent: float | None = None) -> Any:
    """A snapshot of a bare run (task DAILY_seq), as the writer would take it at ``seq``."""
    core = bare_run("DAILY_seq", run_id, max_pending=10)
    core.start_wall = 1_700_000_000.0
    core.status = status
    core.overall_explicit = percent
    core.seq = seq - 1
    if status in TERMINAL:
        core.end_mono = core.start_mono + 1
    return core.snapshot(now_wall=1_700_000_000.0 + seq)


@contextmanager
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung database host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
