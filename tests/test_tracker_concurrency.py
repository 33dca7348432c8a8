"""Concurrency: threads sharing a run, and many processes tracking at once."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import tracker
from tests.tracker_support import SCRIPTS, child_env, default_tracker_on, fetch_run, fetch_subtasks


@pytest.fixture(params=["strict", "lenient"])
def mode(request, db_dsn, tmp_path):
    with default_tracker_on(db_dsn, tmp_path / "spool", strict=request.param == "strict") as t:
        yield t


def test_threads_advancing_one_subtask_lose_no_items(mode, db):
    threads, per_thread = 8, 5000
    run = tracker.run("DAILY_threads", total_subtasks=1)
    st = run.subtask("shared", items_total=threads * per_thread)
    start = threading.Barrier(threads)

    def work():
        start.wait()
        for _ in range(per_thread):
            st.advance()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    st.close()
    assert mode.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["subtask_items_complete"] == threads * per_thread
    assert row["overall_percent_complete"] == 100


def test_threads_using_genter_and_gexit_keep_their_own_nesting(mode, db):
    run_id = tracker.track_init("DAILY_thread_genter")
    tracker.genter("all workers")
    start = threading.Barrier(4)
    errors = []

    def work(k):
        try:
            start.wait()
            for i in range(25):
                tracker.genter(f"worker {k} item {i}")
                tracker.genter(f"worker {k} item {i} detail")
                tracker.track_task_progress(1, 1)
                tracker.gexit()
                tracker.gexit()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    tracker.gexit()
    tracker.track_finish()
    assert not errors
    assert mode.flush(10)
    subtasks = fetch_subtasks(db, run_id)
    assert len(subtasks) == 1 + 4 * 25 * 2
    assert all(s["subtask_status"] == "COMPLETED" for s in subtasks)
    by_index = {s["subtask_index"]: s for s in subtasks}
    for s in subtasks[1:]:
        parent = by_index[s["parent_index"]]
        if s["subtask_name"].endswith("detail"):
            assert parent["subtask_name"] == s["subtask_name"].removesuffix(" detail")
        else:
            assert parent["subtask_name"] == "all workers"


def test_fifty_processes_tracking_at_once_write_every_row_exactly(db_dsn, db, tmp_path):
    # The exit wait is bounded (5 s by default) and 50 interpreters starting on a shared machine
    # can take longer to connect; this test is about exact rows, so allow them the time.
    env = child_env(db_dsn, tmp_path / "data", PIPETRACK_EXIT_TIMEOUT="120")
    processes = {
        n: subprocess.Popen(
            [sys.executable, str(SCRIPTS / "worker.py"), str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(1, 51)
    }
    run_ids = {}
    for n, process in processes.items():
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        run_ids[n] = out.strip()
    count = db.execute("SELECT count(*) FROM pipeline_status").fetchone()
    assert count == (50,)
    for n, run_id in run_ids.items():
        row = fetch_run(db, run_id)
        assert row["task_name"] == f"DAILY_worker_{n:03d}"
        assert row["execution_status"] == "FINISHED"
        assert row["overall_percent_complete"] == 100
        assert row["current_subtask"] == 2
        assert row["overall_progress_message"] == f"worker {n} done"
        assert (row["subtask_items_complete"], row["subtask_items_total"]) == (n, n)
        assert row["subtask_progress_message"] == f"wrote {n}"
        subtasks = fetch_subtasks(db, run_id)
        assert [
            (s["subtask_name"], s["items_complete"], s["subtask_status"]) for s in subtasks
        ] == [
            ("load", n, "COMPLETED"),
            (f"write {n} rows", n, "COMPLETED"),
        ]
    assert not list((tmp_path / "data" / "spool").glob("*.jsonl"))
