"""The writer logs in as libpq does, whatever the connection settings say: each password
method, channel binding over TLS, certificate checks, .pgpass, service files, several hosts.

One throwaway server for the module (tests/login_server.py), the pipetrack schema migrated
into it; every test writes a status through the writer's store and reads it back as admin.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests import login_server
from tests.login_server import ROLES, MatrixServer
from tests.tracker_support import snapshot
from tracker._db import migrate
from tracker._record.store import Store, Unavailable


@pytest.fixture(scope="module")
def server() -> Iterator[MatrixServer]:
    matrix = login_server.start()
    try:
        with psycopg.connect(matrix.admin_dsn, autocommit=True) as conn:
            migrate.upgrade(conn)
            for role in ROLES:
                conn.execute(
                    sql.SQL(
                        "GRANT USAGE ON SCHEMA pipetrack TO {0};"
                        " GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA pipetrack TO {0}"
                    ).format(sql.Identifier(role))
                )
        yield matrix
    finally:
        try:
            matrix.stop()
        finally:
            shutil.rmtree(matrix.folder, ignore_errors=True)


@pytest.fixture
def no_libpq_files(tmp_path, monkeypatch):
    """A HOME without .pgpass or ~/.postgresql, so only what a test puts there counts."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("PGPASSFILE", "PGSERVICEFILE", "PGSSLROOTCERT", "PGSERVICE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def needs_tls(server):
    if not server.tls:
        message = "no PostgreSQL built with OpenSSL (Debian's postgresql package) installed"
        if os.environ.get("PIPETRACK_REQUIRE_TLS_SERVER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def dsn(server: MatrixServer, role: str, *, with_password: bool = True, **extra: str) -> str:
    given = {
        "host": "127.0.0.1",
        "port": str(server.port),
        "user": role,
        "dbname": "postgres",
        "connect_timeout": "10",
        "sslmode": "disable",
    }
    secret = ROLES[role][1]
    if with_password and secret:
        given["password"] = secret
    given.update(extra)
    return make_conninfo("", **given)


def written(server: MatrixServer, conninfo: str) -> str:
    """Write a status through the writer's store; the role the row was written as."""
    run_id = str(uuid.uuid4())
    store = Store(conninfo)
    try:
        store.write(snapshot(run_id, 1))
        conn = store._conn
        assert conn is not None
        row = conn.execute("SELECT current_user").fetchone()
    finally:
        store.close()
    with psycopg.connect(server.admin_dsn, autocommit=True) as admin:
        found = admin.execute(
            "SELECT seq FROM pipetrack.pipeline_status WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert found == (1,)
    return str(row[0]) if row else ""


@pytest.mark.parametrize("role", ["u_trust", "u_clear", "u_md5", "u_scram"])
def test_each_password_method_logs_in_and_writes(server, no_libpq_files, role):
    assert written(server, dsn(server, role)) == role


@pytest.mark.parametrize("role", ["u_clear", "u_md5", "u_scram"])
def test_a_wrong_password_leaves_the_database_unavailable_without_showing_it(
    server, no_libpq_files, role
):
    wrong = "Wr0ng-" + str(ROLES[role][1])
    store = Store(dsn(server, role, password=wrong))
    with pytest.raises(Unavailable) as caught:
        store.write(snapshot(str(uuid.uuid4()), 1))
    assert "password authentication failed" in str(caught.value)
    for secret in (wrong, str(ROLES[role][1])):
        assert secret not in str(caught.value)


def test_channel_binding_is_required_and_honoured_over_tls(server, no_libpq_files, needs_tls):
    bound = dsn(server, "u_scram", sslmode="require", channel_binding="require")
    assert written(server, bound) == "u_scram"
    # Without TLS there is nothing to bind to: libpq refuses rather than log in unbound.
    unbound = dsn(server, "u_scram", sslmode="disable", channel_binding="require")
    with pytest.raises(Unavailable, match="channel binding"):
        Store(unbound).write(snapshot(str(uuid.uuid4()), 1))


def test_verify_full_checks_the_certificate_against_the_given_ca(server, no_libpq_files, needs_tls):
    good = dsn(
        server, "u_scram", sslmode="verify-full", sslrootcert=str(server.ca_file), host="localhost"
    )
    assert written(server, good) == "u_scram"
    other = dsn(server, "u_scram", sslmode="verify-full", sslrootcert=str(server.other_ca_file))
    with pytest.raises(Unavailable, match="certificate verify failed"):
        Store(other).write(snapshot(str(uuid.uuid4()), 1))


def test_the_password_comes_from_pgpass(server, no_libpq_files):
    pgpass = no_libpq_files / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{server.port}:*:u_scram:{ROLES['u_scram'][1]}\n")
    pgpass.chmod(0o600)
    assert written(server, dsn(server, "u_scram", with_password=False)) == "u_scram"


def test_a_service_file_names_the_server(server, no_libpq_files, monkeypatch):
    services = no_libpq_files / "services.conf"
    services.write_text(
        "[pipetrack_logins]\n"
        f"host=127.0.0.1\nport={server.port}\nuser=u_md5\ndbname=postgres\n"
        f"password={ROLES['u_md5'][1]}\nsslmode=disable\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    assert written(server, "service=pipetrack_logins") == "u_md5"


def test_an_unreachable_first_host_is_skipped_as_libpq_does(server, no_libpq_files):
    sockets = Path(server.folder)
    hosts = make_conninfo(
        "",
        host=f"/nonexistent/pipetrack,{sockets}",
        port=f"{server.port},{server.port}",
        user="postgres",
        dbname="postgres",
        target_session_attrs="read-write",
    )
    assert written(server, hosts) == "postgres"
