"""SECURITY DEFINER functions cannot be hijacked: a writer login that shadows the tables they
write with temporary objects of its own never runs code as their owner (issue 19, finding 1).

The attack: an unqualified table name in a definer function whose search_path lacks pg_temp is
looked up in the caller's temporary schema first. A temp table of that name, with a trigger whose
function runs ALTER ROLE ... SUPERUSER, then runs as the function's owner. Migration 0009 pins
``search_path = pipetrack, pg_temp`` (pg_temp last) on every such function; these tests run the
attack as a real login that is a member of sql/roles.sql's pipetrack_writer, with TEMP on the
database (PostgreSQL grants it to PUBLIC), against every definer function.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from tests.fix_db import create_database, drop_database, dsn_for
from tests.secrets import DSN_PASSWORD
from tests.tracker_support import make_tracker
from tracker._db import migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget

ROLES_SQL = migrate.sql_dir() / "roles.sql"
FINAL = ("FINISHED", "FAILED", "CANCELLED")

# What the attacker's code does once it runs: note whose rights it has, and, if those are a
# superuser's, make the attacking login a superuser. Callable from a trigger or from a query.
PAYLOAD = """
CREATE TABLE pg_temp.hijacked (ran_as name, at_definer text);
GRANT ALL ON pg_temp.hijacked TO PUBLIC;
CREATE FUNCTION pg_temp.payload(target text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.hijacked VALUES (current_user, target);
    BEGIN
        EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;  -- the owner is no superuser; the hijack itself is recorded above
    END;
END;
$$;
CREATE FUNCTION pg_temp.payload_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.payload(TG_TABLE_NAME);
    RETURN NEW;
END;
$$;
"""

# A temporary stand-in for each table a SECURITY DEFINER function of the schema names, shaped so
# that function's statement succeeds against it (ON CONFLICT needs the same unique key).
SHADOWS = {
    # pipeline_status_track_latest (0004): after every insert into pipeline_status
    "pipeline_task_latest": """
        CREATE TEMP TABLE pipeline_task_latest (
            task_name text PRIMARY KEY, run_id uuid, execution_start timestamptz);
        CREATE TRIGGER hijack BEFORE INSERT OR UPDATE ON pg_temp.pipeline_task_latest
            FOR EACH ROW EXECUTE FUNCTION pg_temp.payload_trigger();
    """,
    # pipeline_status_count_outcome (0004): a run inserted or updated into a final status
    "pipeline_task_outcomes": """
        CREATE TEMP TABLE pipeline_task_outcomes (
            task_name text, execution_status text, runs bigint, last_change timestamptz,
            PRIMARY KEY (task_name, execution_status));
        CREATE TRIGGER hijack BEFORE INSERT OR UPDATE ON pg_temp.pipeline_task_outcomes
            FOR EACH ROW EXECUTE FUNCTION pg_temp.payload_trigger();
    """,
    # pipeline_status_track_last_outcome (0005): the same events
    "pipeline_task_last_outcome": """
        CREATE TEMP TABLE pipeline_task_last_outcome (
            task_name text, execution_status text, run_id uuid, execution_start timestamptz,
            execution_end timestamptz, recent_durations float8[],
            PRIMARY KEY (task_name, execution_status));
        CREATE TRIGGER hijack BEFORE INSERT OR UPDATE ON pg_temp.pipeline_task_last_outcome
            FOR EACH ROW EXECUTE FUNCTION pg_temp.payload_trigger();
    """,
    # pipeline_status_skip_archived (0006): only reads, before every insert into pipeline_status;
    # a view over a set-returning function runs code on a read just as a trigger does on a write
    "pipeline_status_history": """
        CREATE FUNCTION pg_temp.history_rows() RETURNS TABLE (run_id uuid, execution_start timestamptz)
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_temp.payload('pipeline_status_history');
        END;
        $$;
        CREATE TEMP VIEW pipeline_status_history AS SELECT * FROM pg_temp.history_rows();
    """,
}

READ_ONLY_SHADOWS = {"pipeline_status_history"}


@dataclass
class Writer:
    name: str
    dsn: str


def _create_writer_login(admin: psycopg.Connection[tuple[object, ...]], dsn: str) -> Writer:
    name = f"pipetrack_atk_{uuid.uuid4().hex[:10]}"
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {} IN ROLE pipetrack_writer").format(
            sql.Identifier(name), sql.Literal(DSN_PASSWORD)
        )
    )
    return Writer(name, make_conninfo(dsn, user=name, password=DSN_PASSWORD))


def _drop_login(admin: psycopg.Connection[tuple[object, ...]], writer: Writer) -> None:
    # Whatever happened, the login never outlives the test (and is no superuser while it lives).
    admin.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(writer.name)))
    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(writer.name)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(writer.name)))


@pytest.fixture
def writer(db, db_dsn) -> Iterator[Writer]:
    """A login role that is a member of pipetrack_writer and nothing more."""
    db.execute(ROLES_SQL.read_bytes())
    login = _create_writer_login(db, db_dsn)
    try:
        yield login
    finally:
        _drop_login(db, login)


def is_superuser(admin: psycopg.Connection[tuple[object, ...]], role: str) -> bool:
    row = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    assert row is not None
    return bool(row[0])


def owner_is_superuser(admin: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = admin.execute(
        "SELECT bool_and(r.rolsuper) FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
        " WHERE p.pronamespace = 'pipetrack'::regnamespace AND p.prosecdef"
    ).fetchone()
    return bool(row and row[0])


@dataclass
class Attack:
    hijacked: list[tuple[object, ...]]  # (whose rights, which shadow) each time the payload ran
    diverted: dict[str, int]  # rows each stand-in received instead of the real table
    runs: dict[str, uuid.UUID]


def write_runs(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, uuid.UUID]:
    """Write runs the ordinary way, as a tracked script, `pipetrack run`, the reaper and a
    replayed spool do, so that every trigger of pipeline_status fires."""
    runs = {"running": uuid.uuid4(), "direct": uuid.uuid4()}
    # 1. a run starts (BEFORE INSERT skip_archived, AFTER INSERT track_latest)
    conn.execute(
        "INSERT INTO pipetrack.pipeline_status (run_id, task_name, hostname, process_id,"
        " execution_start, execution_status) VALUES (%s, 'DAILY_attack', 'h', 1,"
        " now() - interval '1 minute', 'RUNNING')",
        (runs["running"],),
    )
    # 2. it records a subtask and progress
    conn.execute(
        "INSERT INTO pipetrack.pipeline_subtask (run_id, subtask_index, subtask_name,"
        " subtask_status, started_at) VALUES (%s, 1, 'load', 'RUNNING', now())",
        (runs["running"],),
    )
    conn.execute(
        "UPDATE pipetrack.pipeline_status SET overall_percent_complete = 50, seq = 1"
        " WHERE run_id = %s",
        (runs["running"],),
    )
    # 3. it ends (AFTER UPDATE count_outcome and track_last_outcome)
    conn.execute(
        "UPDATE pipetrack.pipeline_status SET execution_status = 'FINISHED',"
        " execution_end = now(), seq = 2 WHERE run_id = %s",
        (runs["running"],),
    )
    # 4. a run arrives already final (a replayed spool, `pipetrack run` of a quick child):
    #    every INSERT trigger at once
    conn.execute(
        "INSERT INTO pipetrack.pipeline_status (run_id, task_name, hostname, process_id,"
        " execution_start, execution_end, execution_status) VALUES (%s, 'DAILY_attack', 'h',"
        " 2, now() - interval '30 seconds', now(), 'FAILED')",
        (runs["direct"],),
    )
    return runs


def attack(writer: Writer, shadowed: list[str]) -> Attack:
    """As the writer login: plant the payload and the shadows, then write runs."""
    with psycopg.connect(writer.dsn, autocommit=True) as conn:
        # The worst case for the schema: the attacker may create temporary objects.
        assert conn.execute(
            "SELECT has_database_privilege(current_database(), 'TEMP')"
        ).fetchone() == (True,)
        conn.execute(PAYLOAD.encode())
        for table in shadowed:
            conn.execute(SHADOWS[table].encode())
        runs = write_runs(conn)
        hijacked = conn.execute("SELECT ran_as, at_definer FROM pg_temp.hijacked").fetchall()
        diverted = {}
        for table in shadowed:
            if table in READ_ONLY_SHADOWS:
                continue  # reading the view would run the payload
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM pg_temp.{}").format(sql.Identifier(table))
            ).fetchone()
            diverted[table] = int(str(count[0])) if count else -1
    return Attack(hijacked, diverted, runs)


def assert_rows_landed(
    admin: psycopg.Connection[tuple[object, ...]], runs: dict[str, uuid.UUID]
) -> None:
    assert admin.execute(
        "SELECT run_id, execution_status FROM pipetrack.pipeline_status ORDER BY process_id"
    ).fetchall() == [(runs["running"], "FINISHED"), (runs["direct"], "FAILED")]
    assert admin.execute(
        "SELECT run_id, subtask_name FROM pipetrack.pipeline_subtask"
    ).fetchall() == [(runs["running"], "load")]
    assert admin.execute(
        "SELECT task_name, run_id FROM pipetrack.pipeline_task_latest"
    ).fetchall() == [("DAILY_attack", runs["direct"])]
    assert admin.execute(
        "SELECT execution_status, runs FROM pipetrack.pipeline_task_outcomes ORDER BY 1"
    ).fetchall() == [("FAILED", 1), ("FINISHED", 1)]
    assert admin.execute(
        "SELECT execution_status, run_id FROM pipetrack.pipeline_task_last_outcome ORDER BY 1"
    ).fetchall() == [("FAILED", runs["direct"]), ("FINISHED", runs["running"])]


def definer_tables(admin: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    """Every table or view of the schema named in the body of one of its definer functions."""
    bodies = [
        str(src)
        for (src,) in admin.execute(
            "SELECT prosrc FROM pg_proc"
            " WHERE pronamespace = 'pipetrack'::regnamespace AND prosecdef"
        ).fetchall()
    ]
    relations = [
        str(name)
        for (name,) in admin.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'pipetrack'::regnamespace"
            " AND relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT relispartition"
        ).fetchall()
    ]
    return {r for r in relations if any(re.search(rf"(?<![\w$]){r}(?![\w$])", b) for b in bodies)}


def test_the_shadows_cover_every_table_a_definer_function_names(db):
    # A new definer function that names another table needs a shadow here, or the attack
    # test below would not try it.
    assert definer_tables(db) <= set(SHADOWS)


@pytest.mark.parametrize(
    "shadowed", [[t] for t in SHADOWS] + [list(SHADOWS)], ids=[*SHADOWS, "all"]
)
def test_a_writer_login_shadowing_a_definer_table_gains_nothing_and_its_rows_land(
    db, writer, shadowed
):
    assert not is_superuser(db, writer.name)
    result = attack(writer, shadowed)
    assert not is_superuser(db, writer.name)
    assert result.hijacked == []
    assert result.diverted == {t: 0 for t in shadowed if t not in READ_ONLY_SHADOWS}
    assert_rows_landed(db, result.runs)


def pinned_search_paths(
    admin: psycopg.Connection[tuple[object, ...]],
) -> dict[str, list[str] | None]:
    """Each SECURITY DEFINER function of the schema, and the search_path it sets (None: none)."""
    found: dict[str, list[str] | None] = {}
    for name, config in admin.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p"
        " WHERE p.pronamespace = 'pipetrack'::regnamespace AND p.prosecdef ORDER BY 1"
    ).fetchall():
        settings = [str(s) for s in (config or [])]
        paths = [s.split("=", 1)[1] for s in settings if s.startswith("search_path=")]
        found[str(name)] = (
            [part.strip().strip('"') for part in paths[0].split(",")] if paths else None
        )
    return found


def test_every_definer_function_pins_its_search_path_with_pg_temp_last(db):
    pinned = pinned_search_paths(db)
    # The four trigger functions that keep the derived tables (0004, 0005, 0006), at least.
    assert {
        "pipeline_status_track_latest()",
        "pipeline_status_count_outcome()",
        "pipeline_status_track_last_outcome()",
        "pipeline_status_skip_archived()",
    } <= set(pinned)
    for function, path in pinned.items():
        assert path is not None, f"{function} sets no search_path"
        assert path[-1] == "pg_temp", f"{function}: search_path {path} must end in pg_temp"
        # Nothing before it that an untrusted role could create objects in.
        assert "pipetrack" in path, function
        assert set(path[:-1]) <= {"pipetrack", "pg_catalog"}, f"{function}: {path}"


def test_the_migrations_alone_leave_no_function_executable_by_public(db):
    # Installs that never run sql/roles.sql get the same: migration 0009 revokes it.
    assert (
        db.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p"
            " WHERE p.pronamespace = 'pipetrack'::regnamespace"
            " AND has_function_privilege('public', p.oid, 'EXECUTE')"
        ).fetchall()
        == []
    )


def test_no_function_of_the_schema_is_executable_by_public(db, writer):
    rows = db.execute(
        "SELECT p.oid::regprocedure::text,"
        "       has_function_privilege('public', p.oid, 'EXECUTE'),"
        "       has_function_privilege(%s, p.oid, 'EXECUTE'),"
        "       has_function_privilege('pipetrack_reader', p.oid, 'EXECUTE')"
        " FROM pg_proc p WHERE p.pronamespace = 'pipetrack'::regnamespace",
        (writer.name,),
    ).fetchall()
    assert rows
    assert [r for r in rows if any(r[1:])] == []


def test_triggers_fire_for_a_writer_without_execute_on_their_functions(db, writer):
    # PostgreSQL checks EXECUTE on a trigger function when the trigger is created, not when it
    # fires: revoking it from PUBLIC costs the writer nothing.
    assert db.execute(
        "SELECT bool_or(has_function_privilege(%s, p.oid, 'EXECUTE')) FROM pg_proc p"
        " WHERE p.pronamespace = 'pipetrack'::regnamespace",
        (writer.name,),
    ).fetchone() == (False,)
    with psycopg.connect(writer.dsn, autocommit=True) as conn:
        runs = write_runs(conn)
    assert_rows_landed(db, runs)


def test_pipetrack_needs_no_temp_on_the_database(db, writer, tmp_path):
    # The fix does not depend on TEMP (the attack tests above run with it). A database that is
    # pipetrack's alone may still revoke it from PUBLIC: the writer works the same, through the
    # library's own connection as well as plain SQL.
    db.execute(
        sql.SQL("REVOKE TEMP ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(str(db.info.dbname))
        )
    )
    with psycopg.connect(writer.dsn, autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TEMP TABLE pipeline_task_latest (task_name text)")
        runs = write_runs(conn)
    assert_rows_landed(db, runs)

    instance = make_tracker(writer.dsn, tmp_path / "spool")
    try:
        run = instance.run("DAILY_no_temp", total_subtasks=1)
        with run.subtask("only", items_total=1) as step:
            step.advance(1)
        run.finish("done")
        assert instance.flush(10)
    finally:
        instance.shutdown(5)
    assert db.execute(
        "SELECT s.execution_status, o.runs FROM pipeline_status s"
        " JOIN pipeline_task_outcomes o USING (task_name, execution_status)"
        " WHERE s.run_id = %s",
        (run.run_id,),
    ).fetchone() == ("FINISHED", 1)
    assert not list((tmp_path / "spool").glob("*"))  # written, not spooled


@pytest.mark.parametrize(
    "function",
    [
        "pipeline_status_track_latest",
        "pipeline_status_count_outcome",
        "pipeline_status_track_last_outcome",
        "pipeline_status_skip_archived",
    ],
)
def test_a_writer_cannot_attach_a_definer_function_to_a_table_of_its_own(db, writer, function):
    # Otherwise a writer could feed it rows of its choosing (forged counters, a forged latest
    # run) without a run ever being recorded.
    with psycopg.connect(writer.dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE fake (LIKE pipetrack.pipeline_status)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER forge AFTER INSERT ON pg_temp.fake"
                    " FOR EACH ROW EXECUTE FUNCTION pipetrack.{}()"
                ).format(sql.Identifier(function))
            )


def test_the_attack_escalated_before_0009_and_upgrading_an_existing_install_stops_it(
    admin_dsn, tmp_path, monkeypatch
):
    """An install migrated up to 0008 is vulnerable (the attack really makes the login a
    superuser); `pipetrack db upgrade` to 0009 closes it for that same database."""
    before = tmp_path / "sql"
    before.mkdir()
    for migration in migrate.shipped_migrations():
        if migration.version <= 8:
            (before / f"{migration.label}.sql").write_text(migration.sql, "utf-8")
    name = f"pipetrack_e_{uuid.uuid4().hex[:12]}"
    create_database(admin_dsn, name)
    dsn = dsn_for(admin_dsn, name)
    try:
        with connect(DatabaseTarget(conninfo=dsn, source="test")) as admin:
            with monkeypatch.context() as patched:
                patched.setattr(migrate, "sql_dir", lambda: before)
                assert [m.version for m in migrate.upgrade(admin)] == list(range(1, 9))
            admin.execute(ROLES_SQL.read_bytes())
            if not owner_is_superuser(admin):
                pytest.skip("the test DSN is no superuser: the escalation has nothing to gain")
            first = _create_writer_login(admin, dsn)
            try:
                result = attack(first, ["pipeline_task_latest"])
                # the finding, reproduced: the payload ran as the owner, the login is superuser,
                # and the real table missed the rows
                assert result.hijacked
                assert {row[1] for row in result.hijacked} == {"pipeline_task_latest"}
                assert is_superuser(admin, first.name)
                assert result.diverted == {"pipeline_task_latest": 1}
                assert admin.execute(
                    "SELECT count(*) FROM pipetrack.pipeline_task_latest"
                ).fetchone() == (0,)
            finally:
                _drop_login(admin, first)

            admin.execute("TRUNCATE pipetrack.pipeline_status CASCADE")
            admin.execute(
                "TRUNCATE pipetrack.pipeline_task_latest, pipetrack.pipeline_task_outcomes,"
                " pipetrack.pipeline_task_last_outcome"
            )
            assert [m.version for m in migrate.upgrade(admin)][:1] == [9]
            second = _create_writer_login(admin, dsn)
            try:
                result = attack(second, list(SHADOWS))
                assert result.hijacked == []
                assert not is_superuser(admin, second.name)
                assert_rows_landed(admin, result.runs)
            finally:
                _drop_login(admin, second)
    finally:
        drop_database(admin_dsn, name)
