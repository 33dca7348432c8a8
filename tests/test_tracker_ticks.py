"""Progress ticks: a snapshot that only moved progress updates a few columns of rows the writer
wrote before, and the rows end up exactly as whole writes would leave them."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

import tracker
from tests.tracker_support import fetch_run, fetch_subtasks, make_tracker
from tracker._db.conninfo import make_conninfo
from tracker._model.state import RunCore, Snapshot


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
    if isinstance(stored, datetime):
        return stored == datetime.fromisoformat(expected)
    if isinstance(stored, Decimal):
        return stored == Decimal(str(expected))
    if isinstance(stored, uuid.UUID):
        return str(stored) == expected
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


def _ticked(t: tracker.Tracker) -> int:
    return t.writer.ticked


def _ticking(t: tracker.Tracker, name: str) -> tuple[tracker.Run, tracker.Subtask]:
    """A run inside a subtask of 100 items, 3 done, its last writes progress ticks."""
    run = t.run(name, total_subtasks=1)
    st = run.subtask("work", items_total=100)
    for _ in range(3):
        st.advance()
        assert t.flush(10)
    assert _ticked(t) > 0
    return run, st


def test_ticks_leave_every_row_as_the_newest_whole_snapshot(db_dsn, db, tmp_path, snapshots):
    rng = random.Random(8)  # noqa: S311 - a reproducible scenario, not a secret
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        runs = [t.run(f"DAILY_ticks_{i}", total_subtasks=4) for i in range(3)]
        open_subs: dict[str, list[tracker.Subtask]] = {r.run_id: [] for r in runs}
        for step in range(120):
            run = rng.choice(runs)
            subs = open_subs[run.run_id]
            action = rng.random()
            if not subs or action < 0.08:
                subs.append(run.subtask(f"step {step}", items_total=rng.choice([None, 50, 10**9])))
            elif action < 0.6:
                rng.choice(subs).advance(rng.randint(1, 3))
            elif action < 0.68:
                rng.choice(subs).update(message=rng.choice(["loading", "NULL", 'a "quoted", b']))
            elif action < 0.74:
                rng.choice(subs).update(total=rng.randint(60, 90))
            elif action < 0.8:
                run.message(f"overall {step}")
            elif action < 0.86:
                subs.pop().__exit__(None, None, None)
            if rng.random() < 0.3:
                assert t.flush(10)
                for r in runs:
                    _assert_rows_are_the_newest_snapshots(db, r.run_id, snapshots)
        assert t.flush(10)
        assert _ticked(t) > 20, "progress-only changes should have gone as ticks"
        for r in runs:
            _assert_rows_are_the_newest_snapshots(db, r.run_id, snapshots)
        runs[0].finish()
        runs[1].fail("boom")
        assert t.flush(10)
        for r in runs:
            _assert_rows_are_the_newest_snapshots(db, r.run_id, snapshots)
        assert (t.writer.rejected, t.writer.spooled) == (0, 0)
    finally:
        t.shutdown(5)


@pytest.mark.parametrize("link", ["wire", "psycopg"])
def test_a_tick_that_misses_its_subtask_row_is_written_whole(db_dsn, db, tmp_path, snapshots, link):
    # A setting only libpq handles makes the writer connect through psycopg.
    dsn = db_dsn if link == "wire" else make_conninfo(db_dsn, target_session_attrs="read-write")
    t = make_tracker(dsn, tmp_path / "spool")
    try:
        run, st = _ticking(t, "DAILY_missed")
        assert type(t.writer._store._link).__name__.lower().startswith(link)
        db.execute("DELETE FROM pipeline_subtask WHERE run_id = %s", (run.run_id,))
        st.advance()
        assert t.flush(10)
        ticked = _ticked(t)
        (sub,) = fetch_subtasks(db, run.run_id)
        assert (sub["subtask_name"], sub["items_complete"], sub["items_total"]) == ("work", 4, 100)
        _assert_rows_are_the_newest_snapshots(db, run.run_id, snapshots)
        # That run is written whole from now on.
        st.advance()
        assert t.flush(10)
        assert _ticked(t) == ticked
        assert fetch_subtasks(db, run.run_id)[0]["items_complete"] == 5
        assert t.writer.rejected == 0
    finally:
        t.shutdown(5)


def test_a_run_declared_lost_while_alive_keeps_its_final_state_until_it_ends(db_dsn, db, tmp_path):
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run, st = _ticking(t, "DAILY_zombie")
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
        assert row["subtask_items_complete"] == 3
        st.__exit__(None, None, None)
        run.finish()
        assert t.flush(10)
        row = fetch_run(db, run.run_id)
        assert (row["execution_status"], row["overall_percent_complete"]) == ("FINISHED", 100)
        assert t.writer.rejected == 0
    finally:
        t.shutdown(5)
