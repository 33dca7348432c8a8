"""The writer and the spool: never lose a status, never regress a row, never wait unbounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from tests.tracker_support import (
    child_env,
    fetch_run,
    fetch_subtasks,
    make_tracker,
    proxy_for,
    run_script,
    snapshot,
    spool_files,
    wait_for,
)
from tracker._model.state import RunCore, Snapshot, SubtaskCore
from tracker._record.spool import Spool
from tracker._record.store import Store


def status_of(db, run_id):
    row = db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone()
    return row[0] if row else None


def test_database_outage_mid_run_spools_then_replays_in_order(db_dsn, db, tmp_path, caplog):
    spool = tmp_path / "spool"
    with proxy_for(db_dsn) as proxy:
        t = make_tracker(proxy.dsn, spool)
        try:
            run = t.run("DAILY_outage", total_subtasks=3)
            with run.subtask("before", items_total=2) as st:
                st.advance(2)
            assert t.flush(10)
            assert fetch_run(db, run.run_id)["current_subtask"] == 1

            proxy.stop()
            with run.subtask("during", items_total=5) as st:
                st.advance(5)
            assert t.flush(10)
            wait_for(lambda: spool_files(spool), what="a spool file")
            run.subtask("after")
            run.finish("all done")
            assert t.flush(10)
            # The database still has the state from before the outage.
            assert fetch_run(db, run.run_id)["execution_status"] == "RUNNING"

            proxy.start()
            wait_for(lambda: status_of(db, run.run_id) == "FINISHED", what="the replay")
            wait_for(lambda: not spool_files(spool), what="the spool to empty")
        finally:
            t.shutdown(5)
    row = fetch_run(db, run.run_id)
    assert row["overall_progress_message"] == "all done"
    assert row["overall_percent_complete"] == 100
    assert row["current_subtask"] == 3
    subtasks = fetch_subtasks(db, run.run_id)
    assert [(s["subtask_name"], s["subtask_status"]) for s in subtasks] == [
        ("before", "COMPLETED"),
        ("during", "COMPLETED"),
        ("after", "COMPLETED"),
    ]
    assert subtasks[1]["items_complete"] == 5
    assert "spooling" in caplog.text


def test_process_ending_while_database_is_down_leaves_final_state_for_the_next(
    db_dsn, db, tmp_path
):
    data = tmp_path / "data"
    with proxy_for(db_dsn) as proxy:
        dsn = proxy.dsn
        proxy.stop()
        env = child_env(dsn, data)
        first = run_script("lifecycle.py", env, "normal")
        assert first.returncode == 0, first.stderr
        run_id = first.stdout.split()[1]
        (left,) = spool_files(data / "spool")
        lines = left.read_text().splitlines()
        assert json.loads(lines[0])["pipetrack_spool"] == 1
        assert json.loads(lines[-1])["run"]["execution_status"] == "FINISHED"
        assert status_of(db, run_id) is None

        proxy.start()
        second = run_script("lifecycle.py", env, "finish_twice")
        assert second.returncode == 0, second.stderr
    assert status_of(db, run_id) == "FINISHED"
    assert [s["subtask_status"] for s in fetch_subtasks(db, run_id)] == ["COMPLETED"] * 2
    assert not spool_files(data / "spool")


def pipetrack(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_spool_commands_show_and_replay_what_is_waiting(db_dsn, db, tmp_path):
    data = tmp_path / "data"
    with proxy_for(db_dsn) as proxy:
        dsn = proxy.dsn
        proxy.stop()
        env = child_env(dsn, data)
        result = run_script("lifecycle.py", env, "error")
        run_id = result.stdout.split()[1]

        status = pipetrack("spool", "status", env=env)
        assert status.returncode == 1, status.stderr
        assert "1 run(s)" in status.stdout
        assert "waiting to be written" in status.stdout

        down = pipetrack("spool", "replay", "--dsn", dsn, env=env)
        assert down.returncode == 3, down.stdout + down.stderr

        proxy.start()
        replay = pipetrack("spool", "replay", "--dsn", dsn, env=env)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "from 1 file(s)" in replay.stdout
    assert status_of(db, run_id) == "FAILED"
    after = pipetrack("spool", "status", env=env)
    assert after.returncode == 0
    assert "empty" in after.stdout


def test_an_older_snapshot_never_regresses_a_newer_row(db_dsn, db):
    run_id = str(uuid.uuid4())
    store = Store(db_dsn)
    try:
        store.write(snapshot(run_id, 5, "FINISHED", 100.0))
        store.write(snapshot(run_id, 3, "RUNNING", 10.0))
        store.write(snapshot(run_id, 5, "RUNNING", 20.0))
    finally:
        store.close()
    row = fetch_run(db, run_id)
    assert (row["seq"], row["execution_status"], row["overall_percent_complete"]) == (
        5,
        "FINISHED",
        100,
    )


def test_one_batch_writes_many_runs_each_at_its_newest_seq(db_dsn, db):
    runs = [str(uuid.uuid4()) for _ in range(3)]
    batch = [
        snapshot(runs[0], 2, "RUNNING", 20.0),
        snapshot(runs[1], 1, "RUNNING", 5.0),
        snapshot(runs[0], 4, "FINISHED", 100.0),
        snapshot(runs[0], 3, "RUNNING", 30.0),
        snapshot(runs[2], 7, "FAILED", 70.0),
    ]
    store = Store(db_dsn)
    try:
        store.write_many(batch)
    finally:
        store.close()
    got = {r: fetch_run(db, r) for r in runs}
    assert [(got[r]["seq"], got[r]["execution_status"]) for r in runs] == [
        (4, "FINISHED"),
        (1, "RUNNING"),
        (7, "FAILED"),
    ]
    assert got[runs[0]]["overall_percent_complete"] == 100


def test_a_batch_the_database_refuses_is_written_but_for_the_refused_snapshot(
    db_dsn, db, tmp_path, caplog
):
    from tracker._record.store import Rejected
    from tracker._record.writer import Writer
    from tracker._settings import TrackerSettings

    good = [str(uuid.uuid4()) for _ in range(2)]
    bad = str(uuid.uuid4())
    refused = snapshot(bad, 1, "RUNNING", 150.0)  # past the table's CHECK
    batch = [snapshot(good[0], 1, "RUNNING", 10.0), refused, snapshot(good[1], 1, "RUNNING", 30.0)]

    store = Store(db_dsn)
    try:
        # All or nothing as one transaction ...
        with pytest.raises(Rejected, match="overall_percent"):
            store.write_many(batch)
        assert db.execute("SELECT count(*) FROM pipeline_status").fetchone()[0] == 0
    finally:
        store.close()

    # ... so the writer retries the snapshots one by one and drops only the refused one.
    writer = Writer(TrackerSettings(dsn=db_dsn, spool_dir=tmp_path / "spool", strict=False))
    try:
        writer.delivery.deliver(iter([batch]))
    finally:
        writer.shutdown(5)
    assert (writer.written, writer.rejected) == (2, 1)
    assert {r: status_of(db, r) for r in [*good, bad]} == {
        good[0]: "RUNNING",
        good[1]: "RUNNING",
        bad: None,
    }
    assert f"rejected the status of run {bad}" in caplog.text
    assert not spool_files(tmp_path / "spool")


def test_spool_cap_drops_progress_but_keeps_final_states(tmp_path, caplog):
    spool = Spool(tmp_path / "spool", max_bytes=3000)
    run_id = str(uuid.uuid4())
    kept = spool.append("k", [snapshot(run_id, seq) for seq in range(1, 40)])
    assert 0 < kept < 39
    assert spool.dropped == 39 - kept
    assert "dropped 1 snapshot(s) so far" in caplog.text
    assert spool.append("k", [snapshot(run_id, 40, "FAILED")]) == 1
    spool.rotate()
    (path,) = spool_files(tmp_path / "spool")
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["run"]["execution_status"] == "FAILED"


def test_bad_lines_and_foreign_targets_do_not_block_a_replay(db_dsn, db, tmp_path, caplog):
    directory = tmp_path / "spool"
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    spool = Spool(directory, max_bytes=10**6)
    store = Store(db_dsn)
    key = store.resolve()
    given = snapshot(str(uuid.uuid4()), 1)
    # A process id the schema rejects for good.
    bad = Snapshot.from_row({**given.status_row, "process_id": -1}, given.subtask_rows)
    spool.append(key, [bad, snapshot(mine, 1, "FINISHED")])
    spool.rotate()
    with (spool_files(directory)[0]).open("a") as handle:
        handle.write('{"run": {"run_id": "trunc')  # a process killed mid-write
    other = Spool(directory, max_bytes=10**6)
    other.append("postgresql host=elsewhere", [snapshot(theirs, 1)])
    other.rotate()
    try:
        result = spool.replay(key, store.write)
    finally:
        store.close()
    assert (result.replayed, result.rejected, result.corrupt) == (1, 1, 1)
    assert status_of(db, mine) == "FINISHED"
    assert status_of(db, theirs) is None
    assert len(spool_files(directory)) == 1  # the other database's file stays
    # The file with the torn line is set aside for someone to look at, its good lines written.
    assert len(list(directory.glob("*.jsonl.corrupt"))) == 1
    assert "1 unreadable line(s) skipped, the rest replayed" in caplog.text


def test_missing_tables_warn_to_upgrade_and_spool_until_then(empty_db_dsn, tmp_path, caplog):
    from tracker._db import migrate
    from tracker._db.connect import connect
    from tracker._db.dsn import DatabaseTarget

    t = make_tracker(empty_db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_no_schema")
        run.finish()
        assert t.flush(10)
        assert "run `pipetrack db upgrade`" in caplog.text
        assert spool_files(tmp_path / "spool")
        target = DatabaseTarget(conninfo=empty_db_dsn, source="test")
        with connect(target) as conn:
            migrate.upgrade(conn)

            def written():
                return conn.execute(
                    "SELECT execution_status FROM pipeline_status WHERE run_id = %s",
                    (run.run_id,),
                ).fetchone()

            assert wait_for(written, what="the replay after the upgrade") == ("FINISHED",)
    finally:
        t.shutdown(5)
    assert caplog.text.count("run `pipetrack db upgrade`") == 1


def test_exit_wait_is_bounded_and_spools_when_the_database_hangs(db_dsn, db, tmp_path):
    spool = tmp_path / "spool"
    with proxy_for(db_dsn) as proxy:
        proxy.blackhole = True
        t = make_tracker(proxy.dsn, spool)
        run = t.run("DAILY_hang")
        run.subtask("stuck")
        assert t.flush(0.2) is False
        started = time.monotonic()
        assert t.shutdown(0.5) is False
        assert time.monotonic() - started < 3
        (path,) = spool_files(spool)
        last = json.loads(path.read_text().splitlines()[-1])
        assert last["run"]["execution_status"] == "FINISHED"
        assert last["run"]["run_id"] == run.run_id
        proxy.blackhole = False
        replayed = Spool(spool, max_bytes=10**6)
        store = Store(proxy.dsn)
        try:
            wait_for(
                lambda: replayed.replay(store.resolve(), store.write).files_done, what="replay"
            )
        finally:
            store.close()
    assert status_of(db, run.run_id) == "FINISHED"


def test_pending_subtask_rows_are_bounded_with_a_drop_counter():
    core = RunCore(
        run_id=str(uuid.uuid4()),
        task_name="DAILY_bound",
        task_stage="DAILY",
        total_subtasks=None,
        context={},
        max_pending=5,
    )
    for i in range(20):
        sub = core.enter(SubtaskCore, f"s{i}", None)
        core.close(sub, "COMPLETED")
    assert core.dropped_rows == 15
    snap: Snapshot = core.snapshot()
    assert [r["subtask_name"] for r in snap.subtask_rows] == [f"s{i}" for i in range(15, 20)]


def test_the_bound_never_drops_the_final_row_of_a_subtask_written_while_open():
    # The signal stress test found these left RUNNING: written open, then dropped once closed.
    core = RunCore(
        run_id=str(uuid.uuid4()),
        task_name="DAILY_bound_written",
        task_stage="DAILY",
        total_subtasks=None,
        context={},
        max_pending=5,
    )
    outer = core.enter(SubtaskCore, "outer", None)
    early = core.enter(SubtaskCore, "early", None)
    core.snapshot()  # both written as RUNNING
    core.close(early, "COMPLETED")
    for i in range(20):
        sub = core.enter(SubtaskCore, f"s{i}", None)
        core.close(sub, "COMPLETED")
    core.close(outer, "COMPLETED")
    rows = {r["subtask_name"]: r["subtask_status"] for r in core.snapshot().subtask_rows}
    assert rows["early"] == rows["outer"] == "COMPLETED"
    assert len(rows) == 5
    assert core.dropped_rows == 17


def test_writer_survives_a_rejected_snapshot_and_keeps_writing(db_dsn, db, tmp_path, caplog):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        broken = t.run("DAILY_rejected")
        broken.set_identity(process_id=-5)  # violates chk_process_id: the database refuses it
        fine = t.run("DAILY_fine")
        fine.finish()
        assert t.flush(10)
        assert status_of(db, fine.run_id) == "FINISHED"
        assert status_of(db, broken.run_id) is None
        assert "rejected the status" in caplog.text
        assert t.writer.alive
    finally:
        t.shutdown(5)


def test_a_flush_with_nothing_to_write_returns_true():
    from tracker import Tracker

    t = Tracker(lifecycle=False)
    assert t.flush(0.1) is True
    assert t.shutdown(0.1) is True
