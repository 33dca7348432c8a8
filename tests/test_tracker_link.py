"""The writer's connection: the small wire client (no psycopg in a tracked process), psycopg
where only libpq will do, slim rows for stored runs, and batches in flight when the
connection drops."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.tracker_support import fetch_run, fetch_subtasks, make_tracker, snapshot, spool_files
from tracker._db.conninfo import make_conninfo
from tracker._record.store import Store
from tracker._record.writer import Writer
from tracker._settings import Settings

TRACKED = """
import sys
import tracker
t = tracker.Tracker(dsn=sys.argv[1], lifecycle=False, console=False)
with t.run("DAILY_light", total_subtasks=1) as run:
    with run.subtask("one", items_total=3) as st:
        st.advance(3)
assert t.flush(30)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "psycopg_binary", "ssl"))
print(run.run_id, ",".join(heavy) or "-")
t.shutdown(10)
"""


def test_a_tracked_process_writes_without_loading_psycopg_or_ssl(db_dsn, db, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", TRACKED, db_dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PIPETRACK_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    run_id, heavy = done.stdout.split()
    assert heavy == "-"
    assert fetch_run(db, run_id)["execution_status"] == "FINISHED"
    assert fetch_subtasks(db, run_id)[0]["items_complete"] == 3


def test_settings_only_libpq_handles_are_written_through_psycopg(db_dsn, db, caplog):
    caplog.set_level("DEBUG", logger="tracker")
    dsn = make_conninfo(db_dsn, target_session_attrs="read-write")
    run_id = str(uuid.uuid4())
    store = Store(dsn)
    try:
        store.write(snapshot(run_id, 1, "RUNNING", 40.0))
        link = type(store._link).__name__
    finally:
        store.close()
    assert link == "PsycopgLink"
    assert "connecting with psycopg: target_session_attrs" in caplog.text
    assert fetch_run(db, run_id)["overall_percent_complete"] == 40


def test_a_row_deleted_under_a_running_run_is_written_again_in_full(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_deleted", total_subtasks=2)
        st = run.subtask("first", items_total=10)
        st.advance()
        assert t.flush(10)
        st.advance()
        assert t.flush(10)  # by now the writer sends this run's identity columns as NULL
        db.execute("DELETE FROM pipeline_subtask WHERE run_id = %s", (run.run_id,))
        db.execute("DELETE FROM pipeline_status WHERE run_id = %s", (run.run_id,))
        st.advance()
        assert t.flush(10)
        row = fetch_run(db, run.run_id)
        assert (row["task_name"], row["task_stage"], row["subtask_items_complete"]) == (
            "DAILY_deleted",
            "DAILY",
            3,
        )
        assert row["hostname"]
        assert row["environment"] is not None
        assert t.writer.rejected == 0
    finally:
        t.shutdown(5)


def test_a_trace_id_set_after_the_first_write_reaches_the_row(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_traced")
        assert t.flush(10)
        run.set_trace_id("0123456789abcdef0123456789abcdef")
        assert t.flush(10)
        assert fetch_run(db, run.run_id)["trace_id"] == "0123456789abcdef0123456789abcdef"
    finally:
        t.shutdown(5)


def test_batches_in_flight_when_the_connection_drops_are_written_or_spooled(db_dsn, db, tmp_path):
    runs = [str(uuid.uuid4()) for _ in range(9)]
    batches = [[snapshot(r, 3, "RUNNING", 30.0) for r in runs[i : i + 3]] for i in (0, 3, 6)]
    writer = Writer(Settings(dsn=db_dsn, spool_dir=tmp_path / "spool"))

    def cut_after_first():
        yield batches[0]
        # The writer's connection ends while the first batch may still be in flight.
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pipetrack' AND pid <> pg_backend_pid()"
        )
        yield batches[1]
        yield batches[2]

    try:
        writer._export(cut_after_first())
        assert writer.written + writer.spooled == 9
        assert writer.spooled > 0
        # The database answers again: the spool replays, and every run is there, once.
        writer._retry_at = 0.0
        writer._export(iter(()))
    finally:
        writer.shutdown(5)
    assert not spool_files(tmp_path / "spool")
    stored = db.execute(
        "SELECT count(*), min(seq), max(seq) FROM pipeline_status WHERE run_id = ANY(%s::uuid[])",
        (runs,),
    ).fetchone()
    assert stored == (9, 3, 3)
