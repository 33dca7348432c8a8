"""The small PostgreSQL client (tracker._db.wire) against the suite's server: batches,
transactions, every parameter type, errors, asynchronous messages, timeouts and lost sessions.
Authentication and TLS are in test_wire_auth.py."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker._db.conninfo import make_conninfo, parse_conninfo
from tracker._db.wire import (
    MAX_PREPARED,
    ServerError,
    WireConnection,
    WireUnavailable,
    WireUnsupported,
)
from tracker._db.wire_settings import resolve


def wire_params(dsn: str, **extra: str) -> dict[str, str]:
    return parse_conninfo(make_conninfo(dsn, **extra))


@pytest.fixture
def home(tmp_path):
    """An environment whose HOME has no .pgpass and no ~/.postgresql certificates."""
    return {"HOME": str(tmp_path)}


@pytest.fixture
def conn(db_dsn, home):
    with WireConnection.open(wire_params(db_dsn, connect_timeout="5"), environ=home) as conn:
        yield conn


def wait_until(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_batch_runs_in_one_round_trip_and_commits(conn, db):
    conn.execute(
        [
            ("CREATE TABLE public.wire_t (id int PRIMARY KEY, note text)", []),
            ("INSERT INTO public.wire_t VALUES ($1, $2)", [1, "one"]),
            ("INSERT INTO public.wire_t VALUES ($1, $2)", [2, "two"]),
            ("UPDATE public.wire_t SET note = $1 WHERE id = $2", ["TWO", 2]),
        ]
    )
    rows = db.execute("SELECT id, note FROM public.wire_t ORDER BY id").fetchall()
    assert rows == [(1, "one"), (2, "TWO")]


def test_a_batch_reports_how_many_rows_each_statement_changed_or_returned(conn, db):
    db.execute("CREATE TABLE public.wire_t (id int PRIMARY KEY, note text)")
    sent = conn.send(
        [
            ("INSERT INTO public.wire_t SELECT g, 'x' FROM generate_series(1, $1) AS g", [5]),
            ("UPDATE public.wire_t SET note = $1 WHERE id > $2", ["y", 3]),
            ("DELETE FROM public.wire_t WHERE id = $1", [99]),
            ("SELECT id FROM public.wire_t WHERE note = $1 ORDER BY id", ["y"]),
        ]
    )
    rows: list[tuple[str | None, ...]] = []
    counts: list[int] = []
    conn.receive(sent, rows=rows, counts=counts)
    assert counts == [5, 2, 0, 2]
    assert rows == [("4",), ("5",)]


@pytest.mark.parametrize(
    ("tag", "count"), [(b"UPDATE 250\x00", 250), (b"INSERT 0 3\x00", 3), (b"BEGIN\x00", 0)]
)
def test_a_command_tag_gives_its_row_count(tag, count):
    from tracker._db.wire_codec import command_count

    assert command_count(memoryview(tag)) == count


def test_an_error_in_the_third_statement_rolls_back_the_first_two(conn, db):
    db.execute("CREATE TABLE public.wire_t (id int PRIMARY KEY)")
    db.execute("INSERT INTO public.wire_t VALUES (100)")
    batch = [
        ("INSERT INTO public.wire_t VALUES ($1)", [1]),
        ("INSERT INTO public.wire_t VALUES ($1)", [2]),
        ("INSERT INTO public.wire_t VALUES ($1)", [100]),
        ("INSERT INTO public.wire_t VALUES ($1)", [3]),
    ]
    with pytest.raises(ServerError) as caught:
        conn.execute(batch)
    assert caught.value.sqlstate == "23505"
    assert db.execute("SELECT id FROM public.wire_t").fetchall() == [(100,)]
    # Usable afterwards, and the statements prepared before the error still work.
    conn.execute([("INSERT INTO public.wire_t VALUES ($1)", [1])])
    assert conn.query("SELECT count(*) FROM public.wire_t") == [("2",)]
    assert not conn.closed


@pytest.mark.parametrize(
    ("statements", "sqlstate"),
    [
        (
            [
                ("CREATE TABLE public.wire_t (id int PRIMARY KEY)", []),
                ("INSERT INTO public.wire_t VALUES ($1), ($1)", [1]),
            ],
            "23505",
        ),
        ([("SELECT $1::int", ["not a number"])], "22P02"),
        ([("SELECT * FROM public.no_such_table", [])], "42P01"),
        ([("SELEC 1", [])], "42601"),
        ([("SELECT 1/0", [])], "22012"),
    ],
)
def test_server_errors_carry_their_sqlstate_and_leave_the_connection_usable(
    conn, statements, sqlstate
):
    with pytest.raises(ServerError) as caught:
        conn.execute(statements)
    error = caught.value
    assert (error.sqlstate, error.severity) == (sqlstate, "ERROR")
    assert error.message
    assert conn.query("SELECT $1::text", ["still here"]) == [("still here",)]


def test_a_unique_violation_carries_its_detail(conn):
    with pytest.raises(ServerError) as caught:
        conn.execute(
            [
                ("CREATE TABLE public.wire_t (id int PRIMARY KEY)", []),
                ("INSERT INTO public.wire_t VALUES ($1), ($1)", [7]),
            ]
        )
    assert caught.value.detail == "Key (id)=(7) already exists."
    assert "duplicate key" in caught.value.message


UTC = datetime.timezone.utc
VALUES = [
    ("text", "plain"),
    ("text", 'it\'s "quoted" \\ back\\slash\n\r\ttabs ☃ 😀 \u200b'),
    ("text", ""),
    ("text", None),
    ("boolean", True),
    ("boolean", False),
    ("integer", -2147483648),
    ("bigint", 9223372036854775807),
    ("numeric", 10**40 + 1),
    ("double precision", 0.1),
    ("double precision", -1.5e-300),
    ("double precision", 1e308),
    ("real", 0.5),
    ("numeric", decimal.Decimal("12345.678900")),
    ("timestamptz", datetime.datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC)),
    (
        "timestamptz",
        datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
    ),
    ("timestamp", datetime.datetime(1999, 12, 31, 23, 59, 59, 999999)),
    ("date", datetime.date(2026, 2, 28)),
    ("time", datetime.time(13, 14, 15, 16)),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("jsonb", {"a": [1, 2.5, None, True, {"b": "c'\"\\"}], "é": {"nested": {"deep": []}}}),
    ("json", [{"k": "v"}, [], "😀"]),
    ("text[]", None),
]


@pytest.mark.parametrize(("sql_type", "value"), VALUES)
def test_every_parameter_type_round_trips(conn, db, sql_type, value):
    conn.execute(
        [
            (f"CREATE TABLE public.wire_t (v {sql_type})", []),
            ("INSERT INTO public.wire_t VALUES ($1)", [value]),
        ]
    )
    (stored,) = db.execute("SELECT v FROM public.wire_t").fetchone()
    if sql_type in ("json", "jsonb"):
        assert stored == json.loads(json.dumps(value))
    elif sql_type == "numeric" and isinstance(value, int):
        assert stored == decimal.Decimal(value)
    else:
        assert stored == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_reach_the_server_as_such(conn, value):
    ((text,),) = conn.query("SELECT $1::float8::text", [value])
    assert text == {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]


def test_strings_of_a_megabyte_round_trip_exactly(conn):
    big = ("0123456789abcdef'\\\n😀" * 60000)[:1_000_000]
    assert conn.query("SELECT $1::text, length($1::text)", [big]) == [(big, str(len(big)))]


def test_a_naive_datetime_means_the_server_time_zone_as_in_psycopg(db_dsn, home):
    params = wire_params(db_dsn, options="-c TimeZone=America/New_York")
    naive = datetime.datetime(2026, 7, 1, 8, 0, 0)
    with WireConnection.open(params, environ=home) as conn:
        ((text,),) = conn.query("SELECT ($1::timestamptz AT TIME ZONE 'UTC')::text", [naive])
    # 08:00 in New York (EDT, UTC-4) is 12:00 UTC.
    assert text == "2026-07-01 12:00:00"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("NUL \x00 inside", ValueError),
        ("lone surrogate \ud800", ValueError),
        (b"bytes", TypeError),
        (object(), TypeError),
        ((1, 2), TypeError),
    ],
)
def test_a_value_that_cannot_be_sent_fails_before_anything_is_sent(conn, db, value, error):
    conn.execute([("CREATE TABLE public.wire_t (v text)", [])])
    with pytest.raises(error):
        conn.execute(
            [
                ("INSERT INTO public.wire_t VALUES ($1)", ["first"]),
                ("INSERT INTO public.wire_t VALUES ($1)", [value]),
            ]
        )
    assert db.execute("SELECT count(*) FROM public.wire_t").fetchone() == (0,)
    assert conn.query("SELECT 1") == [("1",)]


def test_query_returns_text_rows_with_none_for_null(conn):
    rows = conn.query(
        "SELECT g, CASE WHEN g = 2 THEN NULL ELSE 'v' || g END FROM generate_series(1, $1) g",
        [3],
    )
    assert rows == [("1", "v1"), ("2", None), ("3", "v3")]
    assert conn.query("SELECT to_regclass($1) IS NOT NULL", ["pipetrack.no_such"]) == [("f",)]


def test_repeated_statements_are_prepared_once(conn):
    for number in range(20):
        conn.execute([("SELECT $1::int", [number]), ("SELECT $1::text", [str(number)])])
    prepared = conn.query("SELECT statement FROM pg_prepared_statements ORDER BY statement")
    assert prepared == [
        ("SELECT $1::int",),
        ("SELECT $1::text",),
        ("SELECT statement FROM pg_prepared_statements ORDER BY statement",),
    ]


def test_prepared_statements_are_capped_per_connection(conn):
    for number in range(MAX_PREPARED + 20):
        conn.execute([(f"SELECT {number} + $1::int", [1])])
    assert conn.query("SELECT $1::int + 1", [1]) == [("2",)]
    ((count,),) = conn.query("SELECT count(*) FROM pg_prepared_statements")
    assert int(count) == MAX_PREPARED


def test_a_cached_statement_whose_table_changed_shape_is_prepared_again(conn, db):
    db.execute("CREATE TABLE public.wire_t (a int)")
    db.execute("INSERT INTO public.wire_t VALUES (1)")
    assert conn.query("SELECT * FROM public.wire_t WHERE a = $1", [1]) == [("1",)]
    db.execute("ALTER TABLE public.wire_t ADD COLUMN b text DEFAULT 'x'")
    assert conn.query("SELECT * FROM public.wire_t WHERE a = $1", [1]) == [("1", "x")]


def test_notices_notifications_and_parameter_changes_are_taken_in_stride(conn, caplog):
    caplog.set_level("DEBUG", logger="tracker")
    conn.execute(
        [
            ("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$", []),
            ("LISTEN wire_channel", []),
            ("SELECT pg_notify('wire_channel', $1)", ["payload"]),
            ("SET application_name = 'renamed'", []),
        ]
    )
    assert conn.parameters["application_name"] == "renamed"
    assert any("hello from the server" in record.getMessage() for record in caplog.records)
    assert conn.query("SELECT 1") == [("1",)]


def test_copy_from_stdin_is_refused_and_the_connection_stays_usable(conn):
    conn.execute([("CREATE TEMP TABLE wire_copy (a int)", [])])
    with pytest.raises(ServerError) as caught:
        conn.execute([("COPY wire_copy FROM STDIN", [])])
    assert caught.value.sqlstate == "57014"
    assert conn.query("SELECT count(*) FROM wire_copy") == [("0",)]


def test_a_statement_past_its_timeout_is_cancelled_and_the_connection_closed(conn, db):
    ((pid,),) = conn.query("SELECT pg_backend_pid()")
    with pytest.raises(WireUnavailable, match="timed out"):
        conn.execute([("SELECT pg_sleep(60)", [])], timeout=0.5)
    assert conn.closed

    def sleep_ended() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND query LIKE '%%pg_sleep%%'"
            " AND state = 'active'",
            [int(pid)],
        ).fetchone()
        return row == (0,)

    wait_until(sleep_ended)


def test_a_terminated_session_is_unavailable_and_closed(conn, db):
    ((pid,),) = conn.query("SELECT pg_backend_pid()")
    db.execute("SELECT pg_terminate_backend(%s)", [int(pid)])
    with pytest.raises(WireUnavailable) as caught:
        conn.execute([("SELECT 1", [])])
    assert conn.closed
    assert caught.value.sqlstate in ("57P01", None)
    with pytest.raises(WireUnavailable, match="closed"):
        conn.query("SELECT 1")


def test_close_is_idempotent_and_the_context_manager_closes(db_dsn, home):
    with WireConnection.open(wire_params(db_dsn), environ=home) as conn:
        assert not conn.closed
    assert conn.closed
    conn.close()
    with pytest.raises(WireUnavailable):
        conn.execute([("SELECT 1", [])])


def test_options_and_application_name_reach_the_server(db_dsn, home):
    params = wire_params(
        db_dsn, options="-c search_path=pipetrack,public", application_name="wire test"
    )
    with WireConnection.open(params, environ=home) as conn:
        rows = conn.query(
            "SELECT current_setting('search_path'), current_setting('application_name')"
        )
        assert rows == [("pipetrack,public", "wire test")]
        assert conn.parameters["client_encoding"] == "UTF8"


def test_pg_environment_variables_fill_in_what_params_leave_out(db_dsn, home):
    given = parse_conninfo(db_dsn)
    env = dict(home)
    for key, var in (
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
        ("password", "PGPASSWORD"),
        ("sslmode", "PGSSLMODE"),
    ):
        if key in given:
            env[var] = given[key]
    env.update(PGAPPNAME="from env", PGOPTIONS="-c work_mem=8MB", PGTZ="Asia/Tokyo")
    with WireConnection.open({}, environ=env) as conn:
        rows = conn.query(
            "SELECT current_database(), current_setting('application_name'),"
            " current_setting('work_mem'), current_setting('TimeZone')"
        )
    assert rows == [(given["dbname"], "from env", "8MB", "Asia/Tokyo")]


def test_a_missing_database_is_unavailable_with_its_sqlstate(db_dsn, home):
    with pytest.raises(WireUnavailable) as caught:
        WireConnection.open(wire_params(db_dsn, dbname="no_such_db_here"), environ=home)
    assert caught.value.sqlstate == "3D000"


def test_nothing_listening_is_unavailable(home, tmp_path):
    with pytest.raises(WireUnavailable, match="cannot connect"):
        WireConnection.open({"host": str(tmp_path), "port": "5432"}, environ=home)
    with pytest.raises(WireUnavailable, match="cannot connect"):
        WireConnection.open({"host": "127.0.0.1", "port": str(unused_port())}, environ=home)


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"host": ""},
        {"host": "/run/a,/run/b"},
        {"host": "a,b"},
        {"host": "/run/pg", "port": "5432,5433"},
        {"host": "@abstract"},
        {"host": "/run/pg", "hostaddr": "127.0.0.1"},
        {"host": "/run/pg", "service": "prod"},
        {"host": "/run/pg", "target_session_attrs": "read-write"},
        {"host": "/run/pg", "gssencmode": "require"},
        {"host": "/run/pg", "channel_binding": "require"},
        {"host": "/run/pg", "require_auth": "scram-sha-256"},
        {"host": "/run/pg", "krbsrvname": "postgres"},
        {"host": "/run/pg", "sslmode": "sometimes"},
        {"host": "/run/pg", "sslrootcert": "system"},
        {"host": "/run/pg", "sslcrl": "/x.crl"},
        {"host": "/run/pg", "sslpassword": "x"},
        {"host": "/run/pg", "sslnegotiation": "direct"},
        {"host": "/run/pg", "client_encoding": "LATIN1"},
        {"host": "/run/pg", "port": "fifty"},
        {"host": "/run/pg", "connect_timeout": "soon"},
        {"host": "/run/pg", "replication": "database"},
        {"host": "/run/pg", "nosuchparameter": "1"},
        {"host": "/run/pg", "min_protocol_version": "3.2"},
    ],
)
def test_settings_only_libpq_handles_are_unsupported(params, home):
    with pytest.raises(WireUnsupported):
        WireConnection.open(params, environ=home)


@pytest.mark.parametrize(
    "env",
    [{"PGSERVICE": "prod"}, {"PGHOSTADDR": "127.0.0.1"}, {"PGTARGETSESSIONATTRS": "primary"}],
)
def test_environment_settings_only_libpq_handles_are_unsupported(env, home):
    with pytest.raises(WireUnsupported):
        WireConnection.open({"host": "/run/pg"}, environ={**home, **env})


def test_libpq_defaults_apply_when_nothing_else_says(home):
    settings = resolve({"host": "/run/pg", "connect_timeout": "1"}, environ=home)
    import pwd

    os_user = pwd.getpwuid(__import__("os").geteuid()).pw_name
    assert (settings.port, settings.user, settings.dbname) == (5432, os_user, os_user)
    assert settings.connect_timeout == 2.0  # libpq's minimum
    assert settings.sslmode == "prefer"
    assert settings.socket_path == "/run/pg/.s.PGSQL.5432"
    assert resolve({"host": "h"}, environ={**home, "PGREQUIRESSL": "1"}).sslmode == "require"
    assert resolve({"host": "h", "connect_timeout": "0"}, environ=home).connect_timeout is None


def test_importing_and_using_the_client_loads_no_ssl_psycopg_or_libcrypto(db_dsn, home):
    code = f"""
import re, sys
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
before = rss()
from tracker._db.conninfo import parse_conninfo
from tracker._db.wire import WireConnection
imported = rss()
params = parse_conninfo({make_conninfo(db_dsn, sslmode="disable")!r})
with WireConnection.open(params, environ={home!r}) as conn:
    conn.execute([("SELECT $1::jsonb", [{{"a": 1}}]), ("SELECT now()", [])])
used = rss()
heavy = sorted(m for m in ("ssl", "_ssl", "psycopg", "_hashlib", "hashlib") if m in sys.modules)
print(heavy, imported - before, used - before)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    heavy, *_ = result.stdout.rsplit("]", 1)
    assert heavy + "]" == "[]", result.stdout


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        (True, b"t"),
        (False, b"f"),
        (1, b"1"),
        (-0.0, b"-0.0"),
        (1e-7, b"1e-07"),
        (math.nan, b"NaN"),
        (-math.inf, b"-Infinity"),
        (decimal.Decimal("-Infinity"), b"-Infinity"),
        ("é", "é".encode()),
        ({"a": [1]}, b'{"a": [1]}'),
        (datetime.date(2026, 1, 2), b"2026-01-02"),
    ],
)
def test_parameters_are_sent_in_the_text_form_postgresql_reads(value, text):
    from tracker._db.wire import encode_param

    assert encode_param(value) == text


def test_a_revocation_list_in_home_is_left_to_libpq(tmp_path):
    (tmp_path / ".postgresql").mkdir()
    (tmp_path / ".postgresql" / "root.crl").write_text("")
    with pytest.raises(WireUnsupported, match="revocation"):
        WireConnection.open({"host": "db.example"}, environ={"HOME": str(tmp_path)})
    # Unix sockets never use TLS, and sslmode=disable never verifies: the list does not matter.
    assert resolve({"host": "/run/pg"}, {"HOME": str(tmp_path)})
    assert resolve({"host": "db.example", "sslmode": "disable"}, {"HOME": str(tmp_path)})


def test_a_user_name_with_a_nul_is_left_to_libpq(home):
    with pytest.raises(WireUnsupported):
        WireConnection.open({"host": "/run/pg", "user": "a\x00b"}, environ=home)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"])), max_size=4
    )
)
def test_any_text_and_json_round_trip_unchanged(conn, texts):
    statements = "SELECT " + ", ".join(f"${i}::text" for i in range(1, len(texts) + 1))
    if texts:
        assert conn.query(statements, texts) == [tuple(texts)]
    ((echoed,),) = conn.query("SELECT $1::jsonb::text", [{"texts": texts}])
    assert json.loads(echoed) == {"texts": texts}


def test_settings_and_connections_never_show_the_password(db_dsn, home):
    settings = resolve({"host": "/run/pg", "password": "s3cr3t-w0rd"}, environ=home)
    assert "s3cr3t" not in repr(settings)
    given = wire_params(db_dsn)
    with WireConnection.open(given, environ=home) as conn:
        assert repr(conn).startswith(f"<WireConnection {given['user']}@")
        if given.get("password"):
            assert given["password"] not in repr(conn)


def test_a_batch_whose_answers_overflow_the_socket_buffers_completes(conn):
    # 20k statements with a 1 kB row each: megabytes of answers while the batch is still sent.
    # Stuck, both ends would wait in send() forever; the timeout turns that into a failure.
    batch = [("SELECT repeat('x', 1000), $1::int", [number]) for number in range(20_000)]
    conn.execute(batch, timeout=60)
    conn.execute([("SELECT $1::text", ["y" * 100])] * 20_000, timeout=60)
    assert conn.query("SELECT 1") == [("1",)]


def test_pipelined_batches_are_separate_transactions_answered_in_order(conn, db):
    db.execute("CREATE TABLE public.wire_p (id int PRIMARY KEY, note text)")
    insert = "INSERT INTO public.wire_p VALUES ($1, $2)"
    first = conn.send([(insert, [1, "a"]), (insert, [2, "b"])])
    # The first statement of the second batch fails, so its Parse of the second is skipped.
    second = conn.send([(insert, [1, "again"]), ("UPDATE public.wire_p SET note = $1", ["x"])])
    third = conn.send([(insert, [3, "c"]), ("UPDATE public.wire_p SET note = $1", ["y"])])
    with pytest.raises(ValueError, match="order they were sent"):
        conn.receive(second)
    conn.receive(first)
    with pytest.raises(ServerError) as refused:
        conn.receive(second)
    assert refused.value.sqlstate == "23505"
    # The third batch does not count on the second's Parse of the UPDATE (which the server
    # skipped): it parsed the statement itself.
    conn.receive(third)
    assert conn.query("SELECT 1") == [("1",)]
    rows = db.execute("SELECT id, note FROM public.wire_p ORDER BY id").fetchall()
    assert rows == [(1, "y"), (2, "y"), (3, "y")]


def test_running_a_batch_while_another_awaits_its_answer_is_refused(conn):
    sent = conn.send([("SELECT 1", [])])
    with pytest.raises(ValueError, match="receive"):
        conn.execute([("SELECT 2", [])])
    conn.receive(sent)
    assert conn.query("SELECT 3") == [("3",)]
