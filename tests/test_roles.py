"""sql/roles.sql: the writer writes runs and nothing else; the reader only reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import errors

from tracker._db.migrate import sql_dir


@pytest.fixture
def roles_db(db) -> Iterator[object]:
    db.execute((sql_dir() / "roles.sql").read_bytes())
    db.execute((sql_dir() / "roles.sql").read_bytes())  # idempotent
    yield db
    db.execute("RESET ROLE")


def insert_run(db):
    run_id = uuid.uuid4()
    db.execute(
        "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id, execution_start,"
        " execution_status) VALUES (%s, 'DAILY_x', 'h', 1, now(), 'RUNNING')",
        (run_id,),
    )
    return run_id


def test_writer_records_runs_and_the_triggers_still_maintain_their_tables(roles_db):
    roles_db.execute("SET ROLE pipetrack_writer")
    run_id = insert_run(roles_db)
    roles_db.execute(
        "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
        " started_at) VALUES (%s, 1, 's', 'RUNNING', now())",
        (run_id,),
    )
    roles_db.execute(
        "UPDATE pipeline_status SET execution_status = 'FINISHED', execution_end = now()"
        " WHERE run_id = %s",
        (run_id,),
    )
    roles_db.execute("RESET ROLE")
    assert roles_db.execute("SELECT run_id FROM pipeline_task_latest").fetchall() == [(run_id,)]
    assert roles_db.execute("SELECT runs FROM pipeline_task_outcomes").fetchall() == [(1,)]


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE pipeline_status",
        "ALTER TABLE pipeline_status ADD COLUMN x int",
        "TRUNCATE pipeline_status",
        "DELETE FROM pipeline_status",
        "INSERT INTO pipeline_task_latest VALUES ('t', gen_random_uuid(), now())",
        "UPDATE pipeline_task_outcomes SET runs = 0",
        "CREATE TABLE pipetrack.sneaky (id int)",
        "DROP VIEW pipeline_latest_run",
    ],
)
def test_writer_cannot_drop_alter_delete_or_touch_derived_tables(roles_db, statement):
    roles_db.execute("SET ROLE pipetrack_writer")
    with pytest.raises(errors.InsufficientPrivilege):
        roles_db.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id, execution_start,"
        " execution_status) VALUES (gen_random_uuid(), 't', 'h', 1, now(), 'RUNNING')",
        "UPDATE pipeline_status SET seq = seq + 1",
        "DELETE FROM pipeline_subtask",
        "DROP TABLE pipeline_subtask",
        "SELECT ensure_history_partition(now())",
    ],
)
def test_reader_cannot_write(roles_db, statement):
    roles_db.execute("SET ROLE pipetrack_reader")
    with pytest.raises(errors.InsufficientPrivilege):
        roles_db.execute(statement)


def test_reader_reads_every_table_and_view_including_new_history_partitions(roles_db):
    insert_run(roles_db)
    roles_db.execute("SELECT ensure_history_partition('2026-01-15')")
    roles_db.execute("SET ROLE pipetrack_reader")
    for relation in (
        "pipeline_status",
        "pipeline_subtask",
        "pipeline_status_history",
        "pipeline_status_history_202601",
        "pipeline_task_latest",
        "pipeline_task_outcomes",
        "pipeline_latest_run",
        "pipeline_runs",
        "schema_migrations",
    ):
        roles_db.execute(f"SELECT count(*) FROM {relation}")
    assert roles_db.execute("SELECT count(*) FROM pipeline_latest_run").fetchone() == (1,)
