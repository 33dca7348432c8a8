"""A snapshot after nothing but counts moved reuses the last one's state and rows, with the
progress columns read again (``RunCore.snapshot``, ``SubtaskCore.moved_row``). That shortcut is
right only if every other change marks the run: these tests hold each snapshot, after any mix of
public calls, against a full reading of every column."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracker
from tests.tracker_support import make_tracker
from tracker._model.columns import SUBTASK_COLUMNS
from tracker._model.state import _STATE_VALUES
from tracker._model.subtask import _ROW_VALUES, SubtaskCore
from tracker._runtime import trackers

# Nothing listens there: the writer is shut down before the first run, so the test alone takes
# the snapshots, and nothing is written or spooled.
_NOWHERE = "postgresql://pipetrack@127.0.0.1:9/none?connect_timeout=1"

calls = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(1, 3)),
        st.tuples(st.just("enter"), st.none() | st.integers(0, 50)),
        st.tuples(st.just("exit"), st.sampled_from(["COMPLETED", "FAILED"])),
        st.tuples(st.just("set count"), st.integers(0, 40)),
        st.tuples(st.just("set total"), st.integers(40, 60)),
        st.tuples(st.just("subtask message"), st.text(max_size=5)),
        st.tuples(st.just("run message"), st.text(max_size=5)),
        st.tuples(st.just("percent"), st.floats(0, 100)),
        st.tuples(st.just("count"), st.integers(1, 5)),
        st.tuples(st.just("track_task_progress"), st.integers(0, 40)),
        st.tuples(st.just("snapshot"), st.none()),
        st.tuples(st.just("snapshot"), st.none()),
    ),
    max_size=40,
)


@pytest.fixture
def idle_tracker(tmp_path: Path) -> Iterator[tracker.Tracker]:
    instance = make_tracker(_NOWHERE, tmp_path / "spool")
    assert instance.writer.shutdown(5)  # no thread: snapshots are the test's alone
    previous = trackers.set_default(instance)
    try:
        yield instance
    finally:
        trackers.set_default(previous)


def _assert_snapshot_is_a_full_reading(run: Any, subtasks: dict[int, SubtaskCore]) -> None:
    snap = run.snapshot()
    assert snap.state == _STATE_VALUES(run)
    for row in snap.subtasks:
        index = row[1]
        sub = run.implicit if index == 0 else subtasks[index]
        assert row == _ROW_VALUES(sub), f"subtask {index}"


def _play(run: Any, call: tuple[str, Any], subtasks: dict[int, SubtaskCore]) -> None:
    action, value = call
    open_ = [s for s in subtasks.values() if not s.closed]
    innermost = open_[-1] if open_ else None
    if action == "advance" and innermost is not None:
        total = innermost.items_total
        if total is None or innermost.items_complete + value <= total:
            innermost.advance(value)
    elif action == "enter" and len(open_) < 3:
        sub = run.subtask(f"step {len(subtasks)}", items_total=value)
        subtasks[sub.index] = sub
    elif action == "exit" and innermost is not None:
        innermost.close(value)
    elif action == "set count" and innermost is not None:
        total = innermost.items_total
        innermost.update(value if total is None else min(value, total))
    elif action == "set total" and innermost is not None:
        innermost.update(total=max(value, innermost.items_complete))
    elif action == "subtask message" and innermost is not None:
        innermost.update(message=value)
    elif action == "run message":
        run.message(value)
    elif action == "percent":
        run.set_progress(value)
    elif action == "count":
        run.count("rows", value)
    elif action == "track_task_progress" and innermost is None:
        tracker.track_task_progress(value, 40)
    elif action == "snapshot":
        _assert_snapshot_is_a_full_reading(run, subtasks)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=calls)
def test_every_snapshot_is_a_full_reading_whatever_the_calls(idle_tracker, calls):
    run = idle_tracker.run("DAILY_snapshots", total_subtasks=4)
    subtasks: dict[int, SubtaskCore] = {}
    try:
        _assert_snapshot_is_a_full_reading(run, subtasks)
        for call in calls:
            _play(run, call, subtasks)
        _assert_snapshot_is_a_full_reading(run, subtasks)
        run.finish()
        _assert_snapshot_is_a_full_reading(run, subtasks)
    finally:
        if not run.terminal:
            run.fail("test")


def test_a_loop_of_items_reuses_the_last_state_and_rows(idle_tracker):
    # The shortcut is taken (not only harmless): the state's unchanged columns are the very
    # objects of the last snapshot, and the subtask row is the last one with two values put in.
    run = idle_tracker.run("DAILY_loop", total_subtasks=1)
    sub = run.subtask("load", items_total=100)
    sub.update(message="reading")
    first = run.snapshot()
    sub.advance()
    second = run.snapshot()
    assert second.seq == first.seq + 1
    assert second.state[0] is first.state[0] or second.state[0] == first.state[0]
    (before,), (after,) = first.subtasks, second.subtasks
    changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a is not b}
    names = [c.name for c in SUBTASK_COLUMNS]
    assert {names[i] for i in changed} == {"items_complete", "seq"}
    assert second.status_row["subtask_items_complete"] == 1
    assert second.status_row["subtask_percent_complete"] == 1.0
    assert second.status_row["subtask_progress_message"] == "reading"
    run.finish()


def test_an_item_counted_while_a_snapshot_is_taken_is_in_the_next_one(idle_tracker):
    # The flags are cleared before the counts are read: an item landing in between marks the
    # run again, so the writer's next cycle writes it (never left for the heartbeat).
    run = idle_tracker.run("DAILY_race", total_subtasks=1)
    sub = run.subtask("load", items_total=None)
    original = SubtaskCore.freeze

    def freeze_after_an_item(self: SubtaskCore) -> None:
        if self is sub:
            next(self._ticks)  # what advance() does, lock-free, from another thread
            self._run._moved = True
        original(self)

    run.snapshot()
    SubtaskCore.freeze = freeze_after_an_item  # type: ignore[method-assign]
    try:
        run.snapshot()
    finally:
        SubtaskCore.freeze = original  # type: ignore[method-assign]
    assert run._moved
    assert run.snapshot().status_row["subtask_items_complete"] == 1
    run.finish()
