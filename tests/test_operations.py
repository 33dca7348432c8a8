"""Archiving, partition retention, the reaper, and the schema rules that protect final states."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import psutil
import pytest

from tracker._ops.archive import archive, drop_partitions
from tracker._ops.reaper import reap_if_leader, reap_once

NOW = datetime.now(timezone.utc)


def insert_run(
    db,
    *,
    task="DAILY_01",
    status="RUNNING",
    start=None,
    end=None,
    pid=4242,
    host="elsewhere",
    last_update=None,
    seq=1,
):
    run_id = uuid.uuid4()
    start = start or NOW - timedelta(hours=1)
    db.execute(
        "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id, execution_start,"
        " execution_end, execution_status, last_update, seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            run_id,
            task,
            host,
            pid,
            start,
            end,
            status,
            last_update or datetime.now(timezone.utc),
            seq,
        ),
    )
    return run_id


def add_subtasks(db, run_id, count):
    for index in range(1, count + 1):
        db.execute(
            "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
            " started_at) VALUES (%s, %s, %s, 'COMPLETED', now() - interval '40 days')",
            (run_id, index, f"step {index}"),
        )


def count(db, relation):
    return db.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]


def test_archive_moves_old_finished_runs_and_their_subtasks_in_batches(db):
    old = []
    for days in (40, 45, 70):  # two months of history
        start = NOW - timedelta(days=days)
        run_id = insert_run(db, status="FINISHED", start=start, end=start + timedelta(hours=1))
        add_subtasks(db, run_id, 3)
        old.append(run_id)
    recent = insert_run(db, status="FINISHED", start=NOW - timedelta(days=2), end=NOW)
    running = insert_run(db, start=NOW - timedelta(days=90))
    outcomes_before = db.execute("SELECT sum(runs) FROM pipeline_task_outcomes").fetchone()

    result = archive(db, timedelta(days=30), batch_size=2)

    assert (result.runs, result.subtasks, result.batches) == (3, 9, 2)
    remaining = {r[0] for r in db.execute("SELECT run_id FROM pipeline_status")}
    assert remaining == {recent, running}
    assert {r[0] for r in db.execute("SELECT run_id FROM pipeline_status_history")} == set(old)
    assert count(db, "pipeline_subtask_history") == 9
    assert count(db, "pipeline_subtask") == 0
    assert count(db, "pipeline_runs") == 5
    # Counters stay monotonic across the move.
    assert db.execute("SELECT sum(runs) FROM pipeline_task_outcomes").fetchone() == outcomes_before
    assert archive(db, timedelta(days=30)).runs == 0


def test_a_late_replay_of_an_archived_run_does_not_recreate_it(db):
    start = NOW - timedelta(days=40)
    run_id = insert_run(db, status="FINISHED", start=start, end=start + timedelta(minutes=5))
    archive(db, timedelta(days=30))
    db.execute(
        "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id, execution_start,"
        " execution_status, seq) VALUES (%s, 'DAILY_01', 'h', 1, %s, 'RUNNING', 1)"
        " ON CONFLICT (run_id) DO UPDATE SET seq = EXCLUDED.seq",
        (run_id, start),
    )
    assert count(db, "pipeline_status") == 0
    assert count(db, "pipeline_runs") == 1


def test_drop_partitions_removes_only_whole_months_past_the_cutoff(db):
    for month in ("2026-01-15", "2026-02-15", "2026-03-15"):
        db.execute("SELECT ensure_history_partition(%s)", (month,))
    dropped = drop_partitions(db, timedelta(days=30), now=datetime(2026, 4, 1, tzinfo=timezone.utc))
    assert dropped == [
        "pipeline_run_sample_history_202601",
        "pipeline_run_sample_history_202602",
        "pipeline_status_history_202601",
        "pipeline_status_history_202602",
        "pipeline_subtask_history_202601",
        "pipeline_subtask_history_202602",
    ]
    left = db.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'pipeline_status_history_2%'"
    ).fetchall()
    assert left == [("pipeline_status_history_202603",)]


def test_a_final_state_is_never_made_active_again(db):
    run_id = insert_run(db, status="FAILED", end=NOW, seq=5)
    db.execute(
        "UPDATE pipeline_status SET execution_status = 'RUNNING', seq = 6 WHERE run_id = %s",
        (run_id,),
    )
    assert db.execute(
        "SELECT execution_status, seq FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone() == ("FAILED", 5)
    # A run that really finished after being declared lost keeps its real outcome.
    db.execute(
        "UPDATE pipeline_status SET execution_status = 'FINISHED', seq = 7 WHERE run_id = %s",
        (run_id,),
    )
    assert db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone() == ("FINISHED",)


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_reaper_fails_silent_runs_whose_process_is_gone_and_says_why(db):
    here = os.uname().nodename
    silent = NOW - timedelta(minutes=5)
    lost = insert_run(db, host=here, pid=dead_pid(), last_update=silent)
    db.execute(
        "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
        " started_at) VALUES (%s, 1, 'loading', 'RUNNING', %s)",
        (lost, NOW - timedelta(minutes=30)),
    )
    remote = insert_run(db, host="other-host", last_update=silent)
    fresh = insert_run(db, host=here, pid=dead_pid(), last_update=datetime.now(timezone.utc))

    reaped = reap_once(db, stale_after=timedelta(minutes=1), hostname=here)

    assert {r.run_id for r in reaped} == {lost, remote}
    status, reason, end = db.execute(
        "SELECT execution_status, error_message, execution_end FROM pipeline_status"
        " WHERE run_id = %s",
        (lost,),
    ).fetchone()
    assert status == "FAILED"
    assert reason.startswith("lost: no heartbeat for ")
    assert "is gone" in reason
    assert end == silent
    assert db.execute(
        "SELECT subtask_status FROM pipeline_subtask WHERE run_id = %s", (lost,)
    ).fetchone() == ("FAILED",)
    assert "cannot check process" in next(r.reason for r in reaped if r.run_id == remote)
    assert db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (fresh,)
    ).fetchone() == ("RUNNING",)


def test_reaper_never_reaps_a_silent_run_whose_process_is_alive(db):
    here = os.uname().nodename
    # The run started after this process did, as a real run would have.
    start = datetime.fromtimestamp(psutil.Process().create_time(), timezone.utc) + timedelta(5)
    paused = insert_run(
        db, host=here, pid=os.getpid(), start=start, last_update=NOW - timedelta(hours=1)
    )
    assert reap_once(db, stale_after=timedelta(minutes=1), hostname=here) == []
    assert db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (paused,)
    ).fetchone() == ("RUNNING",)


def test_reaper_treats_a_reused_pid_as_gone(db):
    here = os.uname().nodename
    # The run started an hour before the process now holding its pid: the pid was reused.
    started = datetime.fromtimestamp(psutil.Process().create_time(), timezone.utc)
    reused = insert_run(
        db,
        host=here,
        pid=os.getpid(),
        start=started - timedelta(hours=1),
        last_update=NOW - timedelta(minutes=5),
    )
    reaped = reap_once(db, stale_after=timedelta(minutes=1), hostname=here)
    assert [r.run_id for r in reaped] == [reused]


def test_a_run_that_writes_while_being_reaped_keeps_what_it_wrote(db):
    run_id = insert_run(db, last_update=NOW - timedelta(minutes=5), seq=3)
    # The run finishes between the reaper's look and its update: the compare-and-set on seq fails.
    db.execute(
        "UPDATE pipeline_status SET execution_status = 'FINISHED', execution_end = now(), seq = 4,"
        " last_update = %s WHERE run_id = %s",
        (NOW - timedelta(minutes=5), run_id),
    )
    db.execute(
        "UPDATE pipeline_status SET execution_status = 'RUNNING' WHERE run_id = %s", (run_id,)
    )  # skipped: final states stay final
    assert reap_once(db, stale_after=timedelta(minutes=1)) == []
    assert db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone() == ("FINISHED",)


def test_only_one_reaper_acts_at_a_time(db, db_target):
    from tracker._db.connect import connect
    from tracker._ops.reaper import REAPER_LOCK_KEY

    insert_run(db, last_update=NOW - timedelta(minutes=5))
    with connect(db_target) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (REAPER_LOCK_KEY,))
        assert reap_if_leader(db, stale_after=timedelta(minutes=1)) is None
        other.execute("SELECT pg_advisory_unlock(%s)", (REAPER_LOCK_KEY,))
    reaped = reap_if_leader(db, stale_after=timedelta(minutes=1))
    assert reaped is not None
    assert len(reaped) == 1


@pytest.mark.parametrize("batch_size", [0, -1])
def test_archive_rejects_a_batch_size_below_one(db, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        archive(db, timedelta(days=1), batch_size=batch_size)
