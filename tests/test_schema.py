"""The schema rejects what it must, with clear errors, and its derived structures stay right."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import errors

START = datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc)


def insert_run(db, **columns):
    row = {
        "run_id": uuid.uuid4(),
        "task_name": "DAILY_01_BDC_Locations",
        "hostname": "etl-1",
        "process_id": 4242,
        "execution_start": START,
        "execution_status": "RUNNING",
    }
    row.update(columns)
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO pipeline_status ({names}) VALUES ({marks})", list(row.values()))
    return row["run_id"]


def test_a_well_formed_run_is_accepted(db):
    run_id = insert_run(db, overall_percent_complete=100, subtask_percent_complete=0)
    assert db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone() == ("RUNNING",)


@pytest.mark.parametrize("status", ["DONE", "running", "", "FINISHED "])
def test_unknown_run_status_is_rejected(db, status):
    with pytest.raises(errors.CheckViolation, match="chk_status"):
        insert_run(db, execution_status=status)


def test_unknown_subtask_status_is_rejected(db):
    with pytest.raises(errors.CheckViolation, match="chk_subtask_status"):
        insert_run(db, subtask_status="PAUSED")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("overall_percent_complete", 100.01),
        ("overall_percent_complete", -0.01),
        ("subtask_percent_complete", 250),
        ("subtask_percent_complete", -1),
    ],
)
def test_percent_outside_0_to_100_is_rejected(db, column, value):
    with pytest.raises(errors.CheckViolation, match="percent"):
        insert_run(db, **{column: value})


def test_nan_percent_is_rejected(db):
    # NaN sorts above every number in PostgreSQL, so the range check catches it.
    with pytest.raises(errors.CheckViolation):
        insert_run(db, overall_percent_complete=float("nan"))


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("subtask_items_total", -1),
        ("subtask_items_complete", -5),
        ("total_subtasks", -1),
        ("memory_mb", -1),
        ("seq", -1),
        ("trace_id", "not-a-trace-id"),
    ],
)
def test_negative_counts_and_bad_trace_ids_are_rejected(db, column, value):
    with pytest.raises(errors.CheckViolation):
        insert_run(db, **{column: value})


def test_end_before_start_is_rejected(db):
    with pytest.raises(errors.CheckViolation, match="chk_end_after_start"):
        insert_run(db, execution_end=START - timedelta(seconds=1))


def test_wrong_types_are_rejected(db):
    with pytest.raises(errors.InvalidTextRepresentation):
        insert_run(db, process_id="four thousand")
    with pytest.raises(errors.CheckViolation, match="chk_environment_object"):
        insert_run(db, environment=psycopg.types.json.Jsonb(["not", "an", "object"]))


def test_text_with_a_nul_byte_is_rejected_before_it_reaches_the_server(db):
    with pytest.raises(psycopg.DataError, match="NUL"):
        insert_run(db, task_name="DAILY\x00_evil")


def test_values_longer_than_their_column_are_rejected(db):
    with pytest.raises(errors.StringDataRightTruncation):
        insert_run(db, task_name="T" * 256)
    insert_run(db, task_name="T" * 255)
    insert_run(db, error_detail="x" * 1_000_000)  # TEXT columns take large tracebacks


def test_subtask_rows_check_their_status_and_nesting(db):
    run_id = insert_run(db)
    subtask = "INSERT INTO pipeline_subtask (run_id, subtask_index, parent_index, subtask_name, subtask_status, started_at) VALUES (%s, %s, %s, %s, %s, %s)"
    db.execute(subtask, (run_id, 1, None, "outer", "RUNNING", START))
    db.execute(subtask, (run_id, 2, 1, "inner", "COMPLETED", START))
    with pytest.raises(errors.CheckViolation, match="chk_subtask_row_status"):
        db.execute(subtask, (run_id, 3, 1, "x", "DONE", START))
    with pytest.raises(errors.CheckViolation, match="chk_parent_before_child"):
        db.execute(subtask, (run_id, 4, 4, "self-parent", "RUNNING", START))
    with pytest.raises(errors.ForeignKeyViolation):
        db.execute(subtask, (uuid.uuid4(), 1, None, "orphan", "RUNNING", START))


def test_history_rejects_rows_outside_any_partition_with_a_clear_error(db):
    with pytest.raises(errors.CheckViolation, match="no partition of relation"):
        db.execute(
            "INSERT INTO pipeline_status_history (execution_id, run_id, task_name, hostname,"
            " process_id, execution_start, execution_status) VALUES (1, %s, 't', 'h', 1, %s, 'FINISHED')",
            (uuid.uuid4(), START),
        )


def test_ensure_history_partition_creates_monthly_partitions_once(db):
    name = db.execute("SELECT ensure_history_partition(%s)", (START,)).fetchone()
    assert name == ("pipeline_status_history_202603",)
    assert db.execute("SELECT ensure_history_partition(%s)", (START,)).fetchone() == name
    db.execute(
        "INSERT INTO pipeline_status_history (execution_id, run_id, task_name, hostname,"
        " process_id, execution_start, execution_status) VALUES (1, %s, 't', 'h', 1, %s, 'FINISHED')",
        (uuid.uuid4(), START),
    )
    db.execute(
        "INSERT INTO pipeline_subtask_history (run_id, subtask_index, subtask_name,"
        " subtask_status, started_at, execution_start) VALUES (%s, 1, 's', 'COMPLETED', %s, %s)",
        (uuid.uuid4(), START, START),
    )
    bounds = db.execute(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = %s", name
    ).fetchone()
    assert bounds is not None
    assert "2026-03-01 00:00:00+00" in str(bounds[0])
    assert "2026-04-01 00:00:00+00" in str(bounds[0])


def move_to_history(db, run_id):
    db.execute(
        "SELECT ensure_history_partition(execution_start) FROM pipeline_status WHERE run_id = %s",
        (run_id,),
    )
    db.execute(
        "INSERT INTO pipeline_status_history SELECT * FROM pipeline_status WHERE run_id = %s",
        (run_id,),
    )
    db.execute("DELETE FROM pipeline_status WHERE run_id = %s", (run_id,))


def test_latest_run_view_returns_the_newest_run_of_each_task(db):
    insert_run(db, task_name="A", execution_start=START)
    newest_a = insert_run(db, task_name="A", execution_start=START + timedelta(days=1))
    insert_run(db, task_name="A", execution_start=START - timedelta(days=1))  # late insert
    only_b = insert_run(db, task_name="B")
    rows = dict(db.execute("SELECT task_name, run_id FROM pipeline_latest_run").fetchall())
    assert rows == {"A": newest_a, "B": only_b}


def test_latest_run_view_still_finds_an_archived_latest_run(db):
    run_id = insert_run(
        db,
        task_name="ANNUAL_DEC_01",
        execution_status="FINISHED",
        execution_end=START + timedelta(hours=1),
    )
    move_to_history(db, run_id)
    assert db.execute("SELECT run_id FROM pipeline_latest_run").fetchall() == [(run_id,)]
    assert db.execute("SELECT count(*) FROM pipeline_runs").fetchone() == (1,)


def test_outcome_counters_count_each_run_once_and_survive_archiving(db):
    first = insert_run(db, task_name="A")
    db.execute(
        "UPDATE pipeline_status SET execution_status = 'FINISHED', seq = 2 WHERE run_id = %s",
        (first,),
    )
    db.execute("UPDATE pipeline_status SET seq = 3 WHERE run_id = %s", (first,))
    db.execute("UPDATE pipeline_status SET execution_status = 'FAILED' WHERE run_id = %s", (first,))
    insert_run(db, task_name="A", execution_status="FAILED", execution_start=START + timedelta(1))
    insert_run(db, task_name="A", execution_status="RUNNING", execution_start=START + timedelta(2))
    counts = dict(
        db.execute(
            "SELECT execution_status, runs FROM pipeline_task_outcomes WHERE task_name = 'A'"
        ).fetchall()
    )
    assert counts == {"FINISHED": 1, "FAILED": 1}
    move_to_history(db, first)
    assert db.execute("SELECT sum(runs) FROM pipeline_task_outcomes").fetchone() == (2,)


def test_a_runs_task_name_and_start_cannot_change(db):
    run_id = insert_run(db)
    with pytest.raises(errors.CheckViolation, match="cannot change"):
        db.execute("UPDATE pipeline_status SET task_name = 'other' WHERE run_id = %s", (run_id,))
    with pytest.raises(errors.CheckViolation, match="cannot change"):
        db.execute(
            "UPDATE pipeline_status SET execution_start = now() WHERE run_id = %s", (run_id,)
        )
    db.execute("UPDATE pipeline_status SET task_name = task_name WHERE run_id = %s", (run_id,))


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "SELECT * FROM pipeline_status WHERE execution_status IN ('STARTED', 'RUNNING')",
            "idx_pipeline_status_active",
        ),
        (
            "SELECT * FROM pipeline_status WHERE execution_start >= now() - interval '1 day'"
            " ORDER BY execution_start",
            "idx_pipeline_status_start",
        ),
        (
            "SELECT * FROM pipeline_status WHERE task_name = 'A' ORDER BY execution_start DESC LIMIT 10",
            "idx_pipeline_status_task_start",
        ),
        ("SELECT * FROM pipeline_latest_run", "pipeline_status_run_id_key"),
    ],
)
def test_the_common_questions_are_served_by_indexes(db, query, index):
    db.execute("SET enable_seqscan = off")
    plan = "\n".join(str(r[0]) for r in db.execute(f"EXPLAIN {query}").fetchall())
    assert index in plan
