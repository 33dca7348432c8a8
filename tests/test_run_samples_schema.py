"""Migration 0010: resource samples, run and subtask totals, work counts; their rules, rights,
history and retention."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tracker._db import migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker._ops.archive import archive, drop_partitions

NOW = datetime.now(timezone.utc)
SAMPLE_COLUMNS = {
    "run_id": "uuid",
    "sampled_at": "timestamp with time zone",
    "subtask_index": "integer",
    "processes": "integer",
    "rss_bytes": "bigint",
    "cpu_percent": "double precision",
    "cpu_seconds": "double precision",
    "disk_read_bytes": "bigint",
    "disk_write_bytes": "bigint",
    "tcp_received_bytes": "bigint",
    "tcp_sent_bytes": "bigint",
    "db_connections": "integer",
    "other_connections": "integer",
    "open_fds": "integer",
}
RUN_TOTALS = {
    "cpu_seconds": "double precision",
    "disk_read_bytes": "bigint",
    "disk_write_bytes": "bigint",
    "tcp_received_bytes": "bigint",
    "tcp_sent_bytes": "bigint",
    "counts": "jsonb",
}
SUBTASK_TOTALS = {"peak_rss_bytes": "bigint", **RUN_TOTALS}


def columns(db, table):
    return dict(
        db.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        ).fetchall()
    )


def insert_run(db, *, status="RUNNING", start=None, end=None, **extra):
    run_id = uuid.uuid4()
    row = {
        "run_id": run_id,
        "task_name": "DAILY_01",
        "hostname": "h",
        "process_id": 1,
        "execution_start": start or NOW - timedelta(hours=1),
        "execution_end": end,
        "execution_status": status,
        **extra,
    }
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO pipeline_status ({names}) VALUES ({marks})", list(row.values()))
    return run_id


def insert_sample(db, run_id, at, **figures):
    row = {"run_id": run_id, "sampled_at": at, **figures}
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO pipeline_run_sample ({names}) VALUES ({marks})", list(row.values()))


def test_a_fresh_database_gets_the_samples_table_and_the_new_columns(db):
    assert columns(db, "pipeline_run_sample") == SAMPLE_COLUMNS
    assert columns(db, "pipeline_run_sample_history") == {
        **SAMPLE_COLUMNS,
        "execution_start": "timestamp with time zone",
    }
    for table, added in [
        ("pipeline_status", RUN_TOTALS),
        ("pipeline_status_history", RUN_TOTALS),
        ("pipeline_subtask", SUBTASK_TOTALS),
        ("pipeline_subtask_history", SUBTASK_TOTALS),
        ("pipeline_runs", RUN_TOTALS),
        ("pipeline_latest_run", RUN_TOTALS),
    ]:
        have = columns(db, table)
        assert {name: have.get(name) for name in added} == added, table
    # The archiver copies runs with SELECT *: the hot and history tables must stay aligned.
    assert list(columns(db, "pipeline_status")) == list(columns(db, "pipeline_status_history"))
    assert list(columns(db, "pipeline_run_samples")) == list(SAMPLE_COLUMNS)


def test_upgrading_an_existing_database_keeps_its_runs_and_history(
    admin_dsn, tmp_path, monkeypatch
):
    from tests.fix_db import create_database, drop_database, dsn_for

    before = tmp_path / "sql"
    before.mkdir()
    for migration in migrate.shipped_migrations():
        if migration.version <= 9:
            (before / f"{migration.label}.sql").write_text(migration.sql, "utf-8")
    name = f"pipetrack_e_{uuid.uuid4().hex[:12]}"
    create_database(admin_dsn, name)
    try:
        with connect(DatabaseTarget(conninfo=dsn_for(admin_dsn, name), source="test")) as db:
            with monkeypatch.context() as patched:
                patched.setattr(migrate, "sql_dir", lambda: before)
                assert [m.version for m in migrate.upgrade(db)] == list(range(1, 10))
            old_start = datetime(2025, 11, 20, tzinfo=timezone.utc)
            archived = insert_run(
                db, status="FINISHED", start=old_start, end=old_start + timedelta(hours=1)
            )
            db.execute(
                "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name,"
                " subtask_status, started_at) VALUES (%s, 1, 'old step', 'COMPLETED', %s)",
                (archived, old_start),
            )
            assert archive(db, timedelta(days=30)).runs == 1
            hot = insert_run(db)

            assert [m.version for m in migrate.upgrade(db)] == [10]

            assert db.execute("SELECT run_id, counts FROM pipeline_runs ORDER BY 1").fetchall() == [
                (r, None) for r in sorted([archived, hot])
            ]
            assert db.execute(
                "SELECT subtask_name, cpu_seconds FROM pipeline_subtask_history"
            ).fetchall() == [("old step", None)]
            # The month archived before 0010 has its sample partition, so retention drops it.
            partitions = db.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE 'pipeline_%_history_202511'"
                " ORDER BY 1"
            ).fetchall()
            assert partitions == [
                ("pipeline_run_sample_history_202511",),
                ("pipeline_status_history_202511",),
                ("pipeline_subtask_history_202511",),
            ]
            insert_sample(db, hot, NOW, rss_bytes=1, cpu_seconds=0.5)
            assert migrate.upgrade(db) == []
    finally:
        drop_database(admin_dsn, name)


def test_a_well_formed_sample_is_accepted_and_a_second_at_the_same_time_is_refused(db):
    run_id = insert_run(db)
    figures = {
        "subtask_index": 2,
        "processes": 3,
        "rss_bytes": 2**40,
        "cpu_percent": 250.5,
        "cpu_seconds": 12.25,
        "disk_read_bytes": 2**62,
        "disk_write_bytes": 0,
        "tcp_received_bytes": 20 * 2**20,
        "tcp_sent_bytes": 512,
        "db_connections": 3,
        "other_connections": 1,
        "open_fds": 17,
    }
    insert_sample(db, run_id, NOW, **figures)
    insert_sample(db, run_id, NOW + timedelta(seconds=10))  # every figure may be unknown
    with pytest.raises(errors.UniqueViolation):
        insert_sample(db, run_id, NOW)
    stored = db.execute(
        "SELECT * FROM pipeline_run_sample WHERE sampled_at = %s", (NOW,)
    ).fetchone()
    assert stored[2:] == tuple(figures.values())


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("subtask_index", 0, "chk_sample_subtask_index"),
        ("processes", -1, "chk_sample_counts"),
        ("rss_bytes", -1, "chk_sample_counts"),
        ("disk_read_bytes", -1, "chk_sample_counts"),
        ("disk_write_bytes", -5, "chk_sample_counts"),
        ("tcp_received_bytes", -1, "chk_sample_counts"),
        ("tcp_sent_bytes", -1, "chk_sample_counts"),
        ("db_connections", -1, "chk_sample_counts"),
        ("other_connections", -1, "chk_sample_counts"),
        ("open_fds", -1, "chk_sample_counts"),
        ("cpu_percent", -0.5, "chk_sample_cpu"),
        ("cpu_percent", float("nan"), "chk_sample_cpu"),
        ("cpu_percent", float("inf"), "chk_sample_cpu"),
        ("cpu_seconds", float("nan"), "chk_sample_cpu"),
        ("cpu_seconds", -1.0, "chk_sample_cpu"),
    ],
)
def test_a_sample_with_an_impossible_figure_is_refused(db, column, value, constraint):
    run_id = insert_run(db)
    with pytest.raises(errors.CheckViolation, match=constraint):
        insert_sample(db, run_id, NOW, **{column: value})


def test_a_sample_of_an_unknown_run_is_refused(db):
    with pytest.raises(errors.ForeignKeyViolation):
        insert_sample(db, uuid.uuid4(), NOW)


def test_a_sample_too_big_for_its_column_is_refused(db):
    run_id = insert_run(db)
    with pytest.raises(errors.NumericValueOutOfRange):
        insert_sample(db, run_id, NOW, disk_read_bytes=2**63)


GOOD_COUNTS = [
    {},
    {"rows_written": 0},
    {"rows_written": 9223372036854775807},
    {f"name_{i}": i for i in range(32)},
    {"x" * 200: 1},
    {"lignes écrites 行": 3, "with space and\nnewline": 4},
    {"float_but_integral": 5.0},
]
BAD_COUNTS = [
    ([1, 2], "an array"),
    ("rows", "a string"),
    (5, "a number"),
    ({f"name_{i}": i for i in range(33)}, "33 names"),
    ({"rows": -1}, "a negative count"),
    ({"rows": 1.5}, "a fraction"),
    ({"rows": "12"}, "a count as text"),
    ({"rows": None}, "null"),
    ({"rows": True}, "a boolean"),
    ({"rows": {"a": 1}}, "an object"),
    ({"rows": 9223372036854775808}, "2**63"),
    ({"rows": 10**30}, "10**30"),
    ({"": 1}, "an empty name"),
    ({"x" * 201: 1}, "a 201-character name"),
]


@pytest.mark.parametrize("counts", GOOD_COUNTS)
def test_counts_of_up_to_32_names_of_whole_non_negative_numbers_are_accepted(db, counts):
    run_id = insert_run(db, counts=Jsonb(counts))
    db.execute(
        "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
        " started_at, counts) VALUES (%s, 1, 's', 'RUNNING', now(), %s)",
        (run_id, Jsonb(counts)),
    )
    assert db.execute(
        "SELECT s.counts = st.counts FROM pipeline_status s JOIN pipeline_subtask st USING (run_id)"
    ).fetchone() == (True,)


@pytest.mark.parametrize(("counts", "what"), BAD_COUNTS, ids=[what for _, what in BAD_COUNTS])
def test_counts_that_break_the_rules_are_refused_on_runs_and_subtasks(db, counts, what):
    with pytest.raises(errors.CheckViolation, match="chk_run_counts"):
        insert_run(db, counts=Jsonb(counts))
    run_id = insert_run(db)
    with pytest.raises(errors.CheckViolation, match="chk_subtask_counts"):
        db.execute(
            "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
            " started_at, counts) VALUES (%s, 1, 's', 'RUNNING', now(), %s)",
            (run_id, Jsonb(counts)),
        )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("disk_read_bytes", -1),
        ("disk_write_bytes", -1),
        ("tcp_received_bytes", -1),
        ("tcp_sent_bytes", -1),
        ("cpu_seconds", float("nan")),
        ("cpu_seconds", float("inf")),
        ("cpu_seconds", -0.1),
        ("peak_rss_bytes", -1),
    ],
)
def test_negative_or_non_finite_totals_are_refused(db, column, value):
    run_id = insert_run(db)
    with pytest.raises(errors.CheckViolation, match="chk_subtask_totals"):
        db.execute(
            f"INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
            f" started_at, {column}) VALUES (%s, 1, 's', 'RUNNING', now(), %s)",
            (run_id, value),
        )
    if column != "peak_rss_bytes":  # the run's peak is peak_memory_mb, from 0001
        with pytest.raises(errors.CheckViolation, match="chk_run_totals"):
            insert_run(db, **{column: value})


def test_archiving_moves_samples_and_totals_with_their_run_and_retention_drops_them(db):
    start = datetime(2026, 1, 10, tzinfo=timezone.utc)
    old = insert_run(
        db,
        status="FINISHED",
        start=start,
        end=start + timedelta(hours=2),
        cpu_seconds=42.5,
        disk_write_bytes=64 * 2**20,
        counts=Jsonb({"rows_written": 1000}),
    )
    db.execute(
        "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
        " started_at, ended_at, cpu_seconds, peak_rss_bytes, disk_read_bytes, counts)"
        " VALUES (%s, 1, 'Merging', 'COMPLETED', %s, %s, 40.0, %s, 7, %s)",
        (old, start, start + timedelta(hours=1), 14 * 2**30, Jsonb({"rows_merged": 10})),
    )
    for minute in range(6):
        insert_sample(db, old, start + timedelta(minutes=minute), rss_bytes=minute, cpu_seconds=1.0)
    recent = insert_run(db)
    insert_sample(db, recent, NOW, rss_bytes=1)

    result = archive(db, timedelta(days=30))

    assert (result.runs, result.subtasks, result.samples) == (1, 1, 6)
    assert db.execute("SELECT run_id, count(*) FROM pipeline_run_sample GROUP BY 1").fetchall() == [
        (recent, 1)
    ]
    assert db.execute(
        "SELECT count(*), min(execution_start) FROM pipeline_run_sample_history_202601"
    ).fetchone() == (6, start)
    assert db.execute(
        "SELECT run_id, count(*) FROM pipeline_run_samples GROUP BY 1 ORDER BY 2"
    ).fetchall() == [(recent, 1), (old, 6)]
    assert db.execute(
        "SELECT cpu_seconds, disk_write_bytes, counts FROM pipeline_status_history"
    ).fetchone() == (42.5, 64 * 2**20, {"rows_written": 1000})
    assert db.execute(
        "SELECT subtask_name, cpu_seconds, peak_rss_bytes, disk_read_bytes, counts,"
        " execution_start FROM pipeline_subtask_history"
    ).fetchone() == ("Merging", 40.0, 14 * 2**30, 7, {"rows_merged": 10}, start)

    dropped = drop_partitions(db, timedelta(days=1), now=datetime(2026, 3, 1, tzinfo=timezone.utc))
    assert "pipeline_run_sample_history_202601" in dropped
    assert db.execute("SELECT count(*) FROM pipeline_run_samples").fetchone() == (1,)


def test_deleting_a_run_deletes_its_samples(db):
    run_id = insert_run(db)
    insert_sample(db, run_id, NOW)
    db.execute("DELETE FROM pipeline_status WHERE run_id = %s", (run_id,))
    assert db.execute("SELECT count(*) FROM pipeline_run_sample").fetchone() == (0,)


@pytest.fixture
def roles_db(db):
    from tracker._db.migrate import sql_dir

    db.execute((sql_dir() / "roles.sql").read_bytes())
    yield db
    db.execute("RESET ROLE")


def test_the_writer_inserts_samples_but_cannot_change_or_delete_them(roles_db):
    run_id = insert_run(roles_db)
    roles_db.execute("SET ROLE pipetrack_writer")
    insert_sample(roles_db, run_id, NOW, rss_bytes=5)
    roles_db.execute(
        "UPDATE pipeline_status SET counts = %s, disk_read_bytes = 1 WHERE run_id = %s",
        (Jsonb({"rows": 2}), run_id),
    )
    for statement in (
        "UPDATE pipeline_run_sample SET rss_bytes = 0",
        "DELETE FROM pipeline_run_sample",
        "TRUNCATE pipeline_run_sample",
        "INSERT INTO pipeline_run_sample_history (run_id, sampled_at, execution_start)"
        " VALUES (gen_random_uuid(), now(), now())",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            roles_db.execute(statement)
    roles_db.execute("RESET ROLE")
    roles_db.execute("SET ROLE pipetrack_reader")
    assert roles_db.execute("SELECT rss_bytes FROM pipeline_run_samples").fetchall() == [(5,)]
    with pytest.raises(errors.InsufficientPrivilege):
        insert_sample(roles_db, run_id, NOW + timedelta(seconds=1))
