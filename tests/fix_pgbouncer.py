"""pytest plugin: Debian's PgBouncer in front of the session's PostgreSQL 15 (tests/fix_pg15.py).

``pgbouncer(**settings)`` starts one for the test: ``pool_mode = transaction``, a pool of
``default_pool_size`` server connections per database and user (10 unless given), clients
authenticated with SCRAM from an ``auth_file`` that holds the app role's SCRAM secret as the
server stores it (PgBouncer then logs in to the server with the client's own SCRAM keys), and
an admin console (``show("POOLS")``). Any database of the primary is reachable under its own
name. ``restart()`` stops it and starts it again on the same port mid-test; every PgBouncer the
test started is stopped and reaped at its end. Without the program the tests skip, unless
PIPETRACK_REQUIRE_PGBOUNCER=1.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests import debian_pg
from tests.debian_pg import APP_ROLE, Primary
from tests.fix_pg15 import REQUIRE_PGBOUNCER_VAR
from tests.prom_helpers import free_port
from tests.secrets import register_password

ADMIN_USER = "pipetrack_pgb_admin"
START_TIMEOUT = 60.0


def pgbouncer_program() -> str | None:
    # Debian installs it in /usr/sbin, which an ordinary user's PATH may lack.
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def _quoted(text: str) -> str:
    """A field of an auth_file: in double quotes, a double quote doubled."""
    return '"' + text.replace('"', '""') + '"'


class Bouncer:
    """One PgBouncer process (restartable) and its configuration in a private folder."""

    def __init__(self, program: str, primary: Primary, settings: dict[str, object]) -> None:
        self.primary = primary
        self.run_as = primary.cluster.run_as
        self.folder = debian_pg.private_folder("pipetrack-pgbouncer-", self.run_as)
        self.port = free_port()
        self.admin_password = f"pgb-admin-{secrets.token_hex(12)}"
        register_password(self.admin_password)
        self._program = program
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.settings: dict[str, object] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",  # TCP only: the default /tmp would clash between tests
            "auth_type": "scram-sha-256",
            "auth_file": self.folder / "userlist.txt",
            "admin_users": ADMIN_USER,
            "pool_mode": "transaction",
            "default_pool_size": 10,
            "max_client_conn": 1000,
            # A restarted server is retried after 1 s, not 15: tests restart servers.
            "server_login_retry": 1,
            **settings,
        }
        self._write_config()

    @property
    def log_file(self) -> Path:
        return self.folder / "pgbouncer.log"

    def dsn(self, dbname: str, **extra: Any) -> str:
        """The app role through PgBouncer, with its password."""
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname,
            user=APP_ROLE,
            password=self.primary.app_password,
            **extra,
        )

    def admin_dsn(self) -> str:
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            dbname="pgbouncer",
            user=ADMIN_USER,
            password=self.admin_password,
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (POOLS, SERVERS, CLIENTS, STATS ...)."""
        if not what.isalpha():
            raise ValueError(f"not a SHOW command: {what!r}")
        # The console speaks the simple protocol only: nothing prepared.
        with psycopg.connect(self.admin_dsn(), autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [column.name for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pool(self, dbname: str) -> dict[str, Any] | None:
        """The app role's pool for ``dbname`` in SHOW POOLS, None before its first client."""
        for row in self.show("POOLS"):
            if row["database"] == dbname and row["user"] == APP_ROLE:
                return row
        return None

    def _write_config(self) -> None:
        ini = self.folder / "pgbouncer.ini"
        cluster = self.primary.cluster
        lines = [
            "[databases]",
            # Every database of the primary under its own name, over TCP with SCRAM.
            f"* = host=127.0.0.1 port={cluster.port}",
            "[pgbouncer]",
            *(f"{name} = {value}" for name, value in self.settings.items()),
        ]
        ini.write_text("\n".join(lines) + "\n")
        users = self.folder / "userlist.txt"
        users.write_text(
            f"{_quoted(APP_ROLE)} {_quoted(self.primary.scram_secret())}\n"
            f"{_quoted(ADMIN_USER)} {_quoted(self.admin_password)}\n"
        )
        for path in (ini, users):
            path.chmod(0o600)
            if self.run_as:
                shutil.chown(path, self.run_as, self.run_as)

    def start(self) -> None:
        """Start it (in the foreground: its own child, reaped by ``stop``) and wait until it
        answers on the admin console."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("PgBouncer is already running")
        self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            [self._program, str(self.folder / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            user=self.run_as,
        )
        debian_pg.wait_until_accepting(
            self.admin_dsn(), timeout=START_TIMEOUT, what=f"PgBouncer on port {self.port}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Immediate shutdown (SIGTERM; SIGKILL for a crash), and reap the process."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(sig)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def pgbouncer(request: pytest.FixtureRequest) -> Iterator[Callable[..., Bouncer]]:
    """``pgbouncer(**settings)``: a started PgBouncer; settings go to its [pgbouncer] section."""
    program = pgbouncer_program()
    if program is None:
        debian_pg.require("PgBouncer", env_vars=(REQUIRE_PGBOUNCER_VAR,), install="pgbouncer")
    # Only now: without PgBouncer, no server is started for nothing.
    pg15_primary: Primary = request.getfixturevalue("pg15_primary")
    with contextlib.ExitStack() as started:

        def make(**settings: object) -> Bouncer:
            bouncer = Bouncer(program, pg15_primary, settings)
            started.callback(bouncer.close)
            bouncer.start()
            return bouncer

        yield make
