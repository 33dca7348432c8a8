"""The writer's store on psycopg: rows exactly as the newest snapshots, whatever happens to the
rows or the connection meanwhile; bounded statements; prepared statements that can be turned off."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.tracker_support import (
    bare_run,
    fetch_run,
    fetch_subtasks,
    make_tracker,
    proxy_for,
    snapshot,
    spool_files,
)
from tracker._model.snapshot import Snapshot
from tracker._model.state import RunCore
from tracker._model.subtask import SubtaskCore
from tracker._record import store as store_module
from tracker._record.store import Store, Unavailable
from tracker._record.writer import Writer
from tracker._settings import TrackerSettings


@pytest.fixture
def snapshots(monkeypatch: pytest.MonkeyPatch) -> list[Snapshot]:
    """Every snapshot the runs hand out: the newest of each row is what the table must hold."""
    taken: list[Snapshot] = []
    original = RunCore.snapshot

    def recording(self: RunCore, now_wall: float | None = None) -> Snapshot:
        snap = original(self, now_wall)
        taken.append(snap)
        return snap

    monkeypatch.setattr(RunCore, "snapshot", recording)
    return taken


def _same(stored: Any, expected: Any) -> bool:
    if stored is None or expected is None:
        return stored is None and expected is None
    if isinstance(stored, Decimal):
        return stored == Decimal(str(expected)).quantize(stored)
    if isinstance(stored, uuid.UUID):
        return str(stored) == expected
    if isinstance(stored, datetime):
        return stored == expected
    return bool(stored == expected)


def _assert_rows_are_the_newest_snapshots(db: Any, run_id: str, taken: list[Snapshot]) -> None:
    mine = [s for s in taken if s.run_id == run_id]
    newest = max(mine, key=lambda s: s.seq).status_row
    row = fetch_run(db, run_id)
    wrong = {
        c: (row[c], v) for c, v in newest.items() if c != "environment" and not _same(row[c], v)
    }
    assert not wrong, f"status row differs from snapshot {newest['seq']}: {wrong}"
    expected: dict[int, dict[str, Any]] = {}
    for snap in sorted(mine, key=lambda s: s.seq):
        for sub in snap.subtask_rows:
            expected[sub["subtask_index"]] = sub
    stored = {r["subtask_index"]: r for r in fetch_subtasks(db, run_id)}
    assert stored.keys() == expected.keys()
    for index, sub in expected.items():
        wrong = {c: (stored[index][c], v) for c, v in sub.items() if not _same(stored[index][c], v)}
        assert not wrong, f"subtask {index} differs: {wrong}"


def test_rows_are_the_newest_snapshots_whatever_the_calls(db_dsn, db, tmp_path, snapshots):
    rng = random.Random(20261207)  # noqa: S311 - a reproducible mix of calls
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_mix", total_subtasks=6)
        for step in range(6):
            with run.subtask(f"step {step}", items_total=rng.choice([None, 5, 40])) as st:
                for _ in range(rng.randint(1, 12)):
                    choice = rng.random()
                    if choice < 0.6:
                        st.advance(rng.randint(1, 3))
                    elif choice < 0.8:
                        st.update(message=f"at {rng.randint(0, 99)} é ✓")
                    else:
                        run.message(f"overall {step}")
                    if rng.random() < 0.4:
                        assert t.flush(10)
            assert t.flush(10)
            _assert_rows_are_the_newest_snapshots(db, run.run_id, snapshots)
        run.finish()
        assert t.flush(10)
        _assert_rows_are_the_newest_snapshots(db, run.run_id, snapshots)
        assert t.writer.rejected == 0
    finally:
        t.shutdown(5)


def test_a_row_deleted_under_a_running_run_is_written_again_in_full(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_deleted", total_subtasks=2)
        st = run.subtask("first", items_total=10)
        st.advance()
        assert t.flush(10)
        st.advance()
        assert t.flush(10)
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


def test_a_run_declared_lost_while_alive_keeps_its_final_state_until_it_ends(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_zombie", total_subtasks=1)
        st = run.subtask("work", items_total=100)
        st.advance()
        assert t.flush(10)
        # What the reaper does to a run whose heartbeat stopped (the process was paused).
        db.execute(
            "UPDATE pipeline_status SET execution_status = 'FAILED', seq = seq + 1,"
            " error_message = 'lost: no heartbeat' WHERE run_id = %s",
            (run.run_id,),
        )
        for _ in range(3):
            st.advance()
            assert t.flush(10)
        row = fetch_run(db, run.run_id)
        assert (row["execution_status"], row["error_message"]) == ("FAILED", "lost: no heartbeat")
        assert row["subtask_items_complete"] == 1  # the final state holds, progress and all
        st.__exit__(None, None, None)
        run.finish()
        assert t.flush(10)
        row = fetch_run(db, run.run_id)
        assert (row["execution_status"], row["overall_percent_complete"]) == ("FINISHED", 100)
        assert t.writer.rejected == 0
    finally:
        t.shutdown(5)


def _kill_writer_backends(db: Any) -> None:
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'pipetrack' AND pid <> pg_backend_pid()"
        " AND datname = current_database()"
    )


def _nine_runs() -> tuple[list[str], list[list[Snapshot]]]:
    runs = [str(uuid.uuid4()) for _ in range(9)]
    return runs, [[snapshot(r, 3, "RUNNING", 30.0) for r in runs[i : i + 3]] for i in (0, 3, 6)]


def _stored(db: Any, runs: list[str]) -> tuple[int, int, int]:
    return db.execute(
        "SELECT count(*), min(seq), max(seq) FROM pipeline_status WHERE run_id = ANY(%s::uuid[])",
        (runs,),
    ).fetchone()


def test_a_backend_killed_mid_batch_is_written_again_on_a_new_connection(db_dsn, db, tmp_path):
    runs, batches = _nine_runs()
    writer = Writer(TrackerSettings(dsn=db_dsn, spool_dir=tmp_path / "spool"))

    def killed_after_the_first():
        yield batches[0]
        # The writer's backend dies while the first batch is in the server's hands.
        _kill_writer_backends(db)
        yield batches[1]
        yield batches[2]

    try:
        writer.delivery.deliver(killed_after_the_first())
        assert (writer.written, writer.spooled, writer.rejected) == (9, 0, 0)
    finally:
        writer.shutdown(5)
    assert _stored(db, runs) == (9, 3, 3)


def test_batches_in_flight_when_the_database_goes_away_are_spooled_and_replayed_once(
    db_dsn, db, tmp_path
):
    runs, batches = _nine_runs()
    with proxy_for(db_dsn) as proxy:
        writer = Writer(TrackerSettings(dsn=proxy.dsn, spool_dir=tmp_path / "spool"))

        def cut_after_the_first():
            yield batches[0]
            # The connection breaks mid-transaction (the writer's sends meet a broken pipe)
            # and the database stays unreachable.
            proxy.stop()
            yield batches[1]
            yield batches[2]

        try:
            writer.delivery.deliver(cut_after_the_first())
            # Nothing of the transaction was committed: every snapshot went to the spool.
            assert (writer.written, writer.spooled) == (0, 9)
            assert _stored(db, runs)[0] == 0
            assert len(spool_files(tmp_path / "spool")) == 1
            # The database answers again: the spool replays, and every run is there, once.
            proxy.start()
            writer.delivery._retry_at = 0.0
            writer.delivery.deliver(iter(()))
        finally:
            writer.shutdown(5)
    assert not spool_files(tmp_path / "spool")
    assert _stored(db, runs) == (9, 3, 3)


def test_a_dead_connection_between_cycles_costs_nothing_but_a_reconnect(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_reconnect")
        assert t.flush(10)
        _kill_writer_backends(db)
        run.message("after the kill")
        assert t.flush(10)
        run.finish()
        assert t.flush(10)
        assert fetch_run(db, run.run_id)["execution_status"] == "FINISHED"
        assert t.writer.rejected == 0
    finally:
        t.shutdown(5)


def test_a_write_blocked_by_a_lock_gives_up_at_the_statement_timeout_and_is_spooled(
    db_dsn, db_target, db, tmp_path, monkeypatch
):
    monkeypatch.setattr(store_module, "STATEMENT_TIMEOUT", 0.5)
    run_id = str(uuid.uuid4())
    store = Store(db_dsn)
    try:
        store.write(snapshot(run_id, 1))
        release = threading.Event()
        holding = threading.Event()

        def hold_the_row() -> None:
            with psycopg.connect(db_dsn) as other:
                other.execute(
                    "SELECT FROM pipetrack.pipeline_status WHERE run_id = %s FOR UPDATE", (run_id,)
                )
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold_the_row)
        holder.start()
        try:
            assert holding.wait(30)
            with pytest.raises(Unavailable, match="statement timeout"):
                store.write(snapshot(run_id, 2))
        finally:
            release.set()
            holder.join(30)
        store.write(snapshot(run_id, 2))
        assert fetch_run(db, run_id)["seq"] == 2
    finally:
        store.close()


@pytest.mark.parametrize("prepare", [True, False], ids=["prepared", "unprepared"])
def test_prepared_statements_can_be_turned_off_for_a_transaction_pooler(db_dsn, db, prepare):
    run_ids = [str(uuid.uuid4()) for _ in range(3)]
    store = Store(db_dsn, prepare=prepare)
    try:
        for seq in (1, 2, 3):
            store.write_many([snapshot(r, seq) for r in run_ids])
        conn = store._conn
        assert conn is not None
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    finally:
        store.close()
    assert (prepared[0] > 0) is prepare
    assert db.execute(
        "SELECT count(*), sum(seq) FROM pipeline_status WHERE run_id = ANY(%s::uuid[])",
        (run_ids,),
    ).fetchone() == (3, 9)


def test_the_writer_needs_no_search_path_and_bounds_unacknowledged_sends(db_dsn, db):
    store = Store(db_dsn)
    try:
        store.write(snapshot(str(uuid.uuid4()), 1))
        conn = store._conn
        assert conn is not None
        path = conn.execute("SHOW search_path").fetchone()
        options = {o.keyword: o.val for o in conn.pgconn.info}
    finally:
        store.close()
    assert "pipetrack" not in str(path)  # the statements name the schema themselves
    expected = str(int(store_module.STATEMENT_TIMEOUT * 1000)).encode()
    assert options[b"tcp_user_timeout"] == expected


def test_prepare_off_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("PIPETRACK_PREPARE", "off")
    assert TrackerSettings().prepare is False
    monkeypatch.setenv("PIPETRACK_PREPARE", "on")
    assert TrackerSettings().prepare is True
    monkeypatch.setenv("PIPETRACK_PREPARE", "sometimes")
    assert TrackerSettings().prepare is True  # a typo is logged and the default kept


def _idle_run(tmp_path: Any, name: str) -> tuple[Any, Any]:
    """A run whose snapshots only the test takes (its tracker's writer is shut down at once)."""
    t = make_tracker("postgresql://pipetrack@127.0.0.1:9/none", tmp_path / "spool")
    assert t.writer.shutdown(5)
    run = t.run(name, total_subtasks=1)
    return run, run.subtask("load", items_total=100)


def _statement_kinds(store: Store, snap: Snapshot) -> list[str]:
    """How the store would write ``snap`` now: upsert, state or progress, one per statement."""
    from tracker._record.statements import batch_statements

    return [
        "progress" if "stored_seq" in s.sql else "upsert" if "INSERT" in s.sql else "state"
        for s in batch_statements([snap], store._known)
    ]


def test_a_progress_update_carries_what_a_spooled_snapshot_changed(db_dsn, db, tmp_path):
    # Snapshot B (a new message) never reached the database (spooled); C only counted an item
    # since B. C is held against what the database holds (A), not against B: its message goes.
    run, sub = _idle_run(tmp_path, "DAILY_progress_after_spool")
    store = Store(db_dsn)
    try:
        store.write(run.snapshot())  # A
        store.write(run.snapshot())  # A': the run's row is now known to the store
        sub.update(message="merging")
        run.snapshot()  # B: spooled, say
        sub.advance()
        c = run.snapshot()
        assert _statement_kinds(store, c) == ["state", "state"]  # not a progress update
        store.write(c)
    finally:
        store.close()
        run.finish()
    row = fetch_run(db, run.run_id)
    assert (row["subtask_progress_message"], row["subtask_items_complete"], row["seq"]) == (
        "merging",
        1,
        c.seq,
    )
    assert fetch_subtasks(db, run.run_id)[0]["message"] == "merging"


def test_a_row_someone_else_wrote_misses_the_progress_update_and_is_written_whole(
    db_dsn, db, tmp_path
):
    run, sub = _idle_run(tmp_path, "DAILY_progress_missed")
    store = Store(db_dsn)
    try:
        store.write(run.snapshot())
        store.write(run.snapshot())
        # Another writer (a replay, by hand) changed both rows under a newer seq than stored.
        db.execute(
            "UPDATE pipeline_status SET subtask_progress_message = 'theirs', seq = seq + 1"
            " WHERE run_id = %s",
            (run.run_id,),
        )
        db.execute(
            "UPDATE pipeline_subtask SET message = 'theirs', seq = seq + 1 WHERE run_id = %s",
            (run.run_id,),
        )
        run.snapshot()
        for _ in range(3):
            sub.advance()
        newest = run.snapshot()
        assert _statement_kinds(store, newest) == ["progress", "progress"]  # missed, then whole
        store.write(newest)
    finally:
        store.close()
        run.finish()
    row = fetch_run(db, run.run_id)
    assert (row["subtask_progress_message"], row["subtask_items_complete"], row["seq"]) == (
        None,
        3,
        newest.seq,
    )
    (subtask,) = fetch_subtasks(db, run.run_id)
    assert (subtask["message"], subtask["items_complete"], subtask["seq"]) == (
        None,
        3,
        newest.seq,
    )


@pytest.mark.parametrize(
    ("ending", "left_open_as"), [("CANCELLED", "FAILED"), ("FINISHED", "COMPLETED")]
)
def test_a_subtask_whose_closing_row_was_lost_is_closed_by_the_runs_final_row(
    db_dsn, db, ending, left_open_as
):
    # A run of two steps, both written RUNNING; the snapshot with the second's end never reaches
    # the database (refused, or a spool line cut short); the run's final snapshot follows.
    run = bare_run("DAILY_lost_close")
    first = run.enter(SubtaskCore, "first", None)
    second = run.enter(SubtaskCore, "second", None)
    store = Store(db_dsn)
    try:
        store.write(run.snapshot())
        run.close(second, "COMPLETED")
        run.snapshot()  # lost
        run.end(ending)
        final = run.snapshot()
        assert [row[1] for row in final.subtasks] == [first.index]
        store.write(final)
    finally:
        store.close()
    status = fetch_run(db, run.run_id)
    rows = {row["subtask_name"]: row for row in fetch_subtasks(db, run.run_id)}
    assert rows["first"]["subtask_status"] == ("COMPLETED" if ending == "FINISHED" else "FAILED")
    assert rows["first"]["seq"] == final.seq
    assert rows["second"]["subtask_status"] == left_open_as
    assert rows["second"]["ended_at"] == status["execution_end"]
    assert rows["second"]["seq"] < final.seq  # closed by the database, not rewritten
