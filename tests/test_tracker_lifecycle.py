"""How runs end, each path in a real child process: exit, exception, signals, errors, twice."""

from __future__ import annotations

import signal

import pytest

from tests.tracker_support import (
    child_env,
    fetch_run,
    fetch_subtasks,
    read_line,
    run_script,
    start_script,
)


@pytest.fixture
def env(db_dsn, tmp_path):
    return child_env(db_dsn, tmp_path / "data")


def ran(env, mode, *, returncode):
    result = run_script("lifecycle.py", env, mode)
    assert result.returncode == returncode, result.stderr
    assert result.stdout.startswith("READY "), result.stderr
    return result.stdout.split()[1], result


def test_normal_exit_without_finish_marks_run_finished(env, db):
    run_id, _ = ran(env, "normal", returncode=0)
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FINISHED"
    assert row["execution_end"] is not None
    assert row["overall_percent_complete"] == 100
    assert row["memory_mb"] > 0
    assert [s["subtask_status"] for s in fetch_subtasks(db, run_id)] == ["COMPLETED"] * 2


def test_uncaught_exception_marks_run_failed_with_traceback(env, db):
    run_id, result = ran(env, "exception", returncode=1)
    # The previous excepthook still printed the traceback.
    assert "ValueError: bad state file DE" in result.stderr
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FAILED"
    assert row["error_message"] == "ValueError: bad state file DE"
    assert "Traceback (most recent call last)" in row["error_detail"]
    assert "load_state" in row["error_detail"]
    assert row["exit_code"] == 1
    assert row["execution_end"] is not None
    assert fetch_subtasks(db, run_id)[0]["subtask_status"] == "FAILED"


@pytest.mark.parametrize(
    ("mode", "signum"), [("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT)]
)
def test_signal_marks_run_cancelled_and_keeps_the_exit_status(env, db, mode, signum):
    process = start_script("lifecycle.py", env, mode)
    try:
        run_id = read_line(process).split()[1]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    # Without pipetrack, both signals end a Python process by the signal itself (SIGINT through
    # an unhandled KeyboardInterrupt), which the parent sees as -signum.
    assert process.returncode == -signum, stderr
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "CANCELLED"
    assert row["execution_end"] is not None
    assert row["execution_end"] >= row["execution_start"]
    assert row["exit_code"] == 128 + signum
    assert row["error_message"] == f"{signal.Signals(signum).name} received"
    (sub,) = fetch_subtasks(db, run_id)
    assert sub["subtask_status"] == "FAILED"
    assert sub["items_complete"] > 0


def test_scripts_own_signal_handler_still_runs(env, db):
    process = start_script("lifecycle.py", env, "handler")
    try:
        run_id = read_line(process).split()[1]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 7, stderr
    assert "own handler ran" in stdout
    assert fetch_run(db, run_id)["execution_status"] == "CANCELLED"


def test_explicit_error_stays_failed_after_a_clean_exit(env, db):
    run_id, _ = ran(env, "error", returncode=0)
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FAILED"
    assert row["error_message"] == "could not load Delaware"
    assert row["error_detail"] == "file missing: DE.csv"
    assert row["execution_end"] is not None


def test_second_finish_is_a_warned_no_op(env, db):
    run_id, result = ran(env, "finish_twice", returncode=0)
    assert "already ended as FINISHED; finish() ignored" in result.stderr
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FINISHED"
    assert row["overall_progress_message"] == "first"


def test_uncaught_exception_in_a_thread_marks_run_failed(env, db):
    run_id, result = ran(env, "thread_exception", returncode=0)
    assert "RuntimeError: worker died" in result.stderr
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FAILED"
    assert row["error_message"] == "RuntimeError: worker died"
    assert "(in thread loader)" in row["error_detail"]


def test_sys_exit_with_a_code_inside_a_run_marks_it_failed_with_that_code(env, db):
    run_id, _ = ran(env, "sys_exit", returncode=3)
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FAILED"
    assert row["exit_code"] == 3


def test_first_script_without_any_database_uses_the_embedded_server(tmp_path):
    from psycopg.rows import dict_row

    from tracker._db import embedded
    from tracker._db.connect import connect
    from tracker._db.dsn import DatabaseTarget

    data = tmp_path / "data"
    # Cold start: initdb and migrations happen on the writer thread; allow them time at exit.
    env = child_env(None, data, PIPETRACK_EXIT_TIMEOUT="120")
    try:
        run_id, _ = ran(env, "embedded", returncode=0)
        uri = embedded.ensure_running(data / "postgres")
        with connect(DatabaseTarget(conninfo=uri, source="test")) as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT execution_status, overall_percent_complete FROM pipeline_status"
                    " WHERE run_id = %s",
                    (run_id,),
                )
                .fetchone()
            )
        assert row == {"execution_status": "FINISHED", "overall_percent_complete": 100}
        assert not list((data / "spool").glob("*.jsonl"))
    finally:
        embedded.stop(data / "postgres")
