"""Two-level progress, checked against hand-computed values: units, nesting, overrides, and the
original design's worked example (an outer genter around 2 subtasks x 56 states)."""

from __future__ import annotations

import pytest

import tracker
from tests.tracker_support import default_tracker_on, fetch_run, fetch_subtasks, pct
from tracker import (
    genter,
    gexit,
    gmessage,
    track_finish,
    track_init,
    track_status,
    track_task_progress,
)


@pytest.fixture
def spool_dir(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def tracked(db_dsn, spool_dir):
    with default_tracker_on(db_dsn, spool_dir) as instance:
        yield instance


def current(t, db, run_id):
    assert t.flush(10)
    return fetch_run(db, run_id)


def test_original_worked_example_of_56_states(tracked, db):
    state_codes = [f"S{i:02d}" for i in range(1, 57)]
    rows = 1000  # noqa: F841 - read by the {rows} field below
    run_id = track_init("DAILY_01_BDC_Locations.R", total_tasks=len(state_codes) * 2)
    genter("processing state location data")
    row = current(tracked, db, run_id)
    # Only the outer subtask is open: it is the (provisional) first unit, nothing done yet.
    assert (row["current_subtask"], row["overall_percent_complete"]) == (1, pct(0))
    for i, state_code in enumerate(state_codes, 1):  # noqa: B007 - read by {state_code}
        genter("loading file for state '{state_code}'")
        gexit()
        if i == 1:
            row = current(tracked, db, run_id)
            # 1 unit of 112 done; the outer subtask stopped counting when it got children.
            assert row["overall_percent_complete"] == pct(100 * 1 / 112)  # 0.89
            assert row["current_subtask"] == 1
        genter("writing data to database")
        track_task_progress(i, len(state_codes), "Writing {state_code}: {rows} rows")
        if i == 12:
            row = current(tracked, db, run_id)
            # 23 units done (11 states x 2 + loading of state 12), writing 12 of 56 items.
            assert row["overall_percent_complete"] == pct(100 * (23 + 12 / 56) / 112)  # 20.73
            assert row["overall_percent_complete"] == pct(20.73)
            assert row["current_subtask"] == 24
            assert row["subtask_name"] == "writing data to database"
            assert row["subtask_status"] == "RUNNING"
            assert row["subtask_percent_complete"] == pct(21.43)
            assert (row["subtask_items_complete"], row["subtask_items_total"]) == (12, 56)
            assert row["subtask_progress_message"] == "Writing S12: 1000 rows"
        gexit()
    row = current(tracked, db, run_id)
    assert row["overall_percent_complete"] == pct(100)
    assert row["current_subtask"] == 112
    assert row["execution_status"] == "RUNNING"
    n_states = len(state_codes)  # noqa: F841 - read by {n_states}
    track_finish("Successfully processed {n_states} states")
    row = current(tracked, db, run_id)
    assert row["execution_status"] == "FINISHED"
    assert row["overall_progress_message"] == "Successfully processed 56 states"
    subtasks = fetch_subtasks(db, run_id)
    assert len(subtasks) == 113
    assert subtasks[0]["subtask_name"] == "processing state location data"
    assert subtasks[0]["subtask_status"] == "COMPLETED"
    assert subtasks[0]["parent_index"] is None
    assert subtasks[1]["subtask_name"] == "loading file for state 'S01'"
    assert subtasks[-1]["subtask_name"] == "writing data to database"
    assert {s["parent_index"] for s in subtasks[1:]} == {1}
    assert all(s["subtask_status"] == "COMPLETED" for s in subtasks)


def test_finish_message_with_a_missing_name_raises_in_strict_mode(tracked):
    track_init("DAILY_interp")
    with pytest.raises(tracker.InvalidValue, match="interpolate"):
        track_finish("processed {n_states} states")


def test_finish_message_that_is_no_template_is_stored_as_written(tracked, db):
    # glue would evaluate the expression; Python text never runs code, so it stays as it is.
    run_id = track_init("DAILY_interp_expr")
    track_finish("processed {len(x)} states")
    assert current(tracked, db, run_id)["overall_progress_message"] == ("processed {len(x)} states")


def test_nested_subtasks_count_only_leaves_as_units(tracked, db):
    with tracker.run("DAILY_nested", total_subtasks=3) as run:
        with run.subtask("A"):
            pass
        assert current(tracked, db, run.run_id)["overall_percent_complete"] == pct(100 / 3)
        with run.subtask("B") as b:
            row = current(tracked, db, run.run_id)
            assert (row["current_subtask"], row["overall_percent_complete"]) == (2, pct(33.33))
            with run.subtask("B1", items_total=4) as b1:
                b1.advance()
                row = current(tracked, db, run.run_id)
                assert row["overall_percent_complete"] == pct(100 * 1.25 / 3)  # 41.67
                assert row["current_subtask"] == 2
                assert row["subtask_percent_complete"] == pct(25)
            assert current(tracked, db, run.run_id)["overall_percent_complete"] == pct(66.67)
            with run.subtask("B2"):
                assert current(tracked, db, run.run_id)["current_subtask"] == 3
            assert current(tracked, db, run.run_id)["overall_percent_complete"] == pct(100)
            assert b.status == "RUNNING"
    subtasks = fetch_subtasks(db, run.run_id)
    assert [(s["subtask_name"], s["parent_index"]) for s in subtasks] == [
        ("A", None),
        ("B", None),
        ("B1", 2),
        ("B2", 2),
    ]


def test_overall_never_shows_an_unfinished_subtask_as_done(tracked, db):
    with tracker.run("DAILY_unfinished", total_subtasks=2) as run:
        with run.subtask("only", items_total=10) as st:
            st.advance(10)
            row = current(tracked, db, run.run_id)
            # Entering a subtask is not finishing it (defect 6 of the original design).
            assert row["overall_percent_complete"] == pct(50)
            assert row["subtask_percent_complete"] == pct(100)
        with run.subtask("second"):
            assert current(tracked, db, run.run_id)["overall_percent_complete"] == pct(50)


def test_without_total_subtasks_overall_is_unknown_until_finished(tracked, db):
    with tracker.run("DAILY_no_total") as run, run.subtask("x", items_total=2) as st:
        st.advance()
        assert current(tracked, db, run.run_id)["overall_percent_complete"] is None
    assert current(tracked, db, run.run_id)["overall_percent_complete"] == pct(100)


def test_explicit_overall_percent_overrides_until_the_next_boundary(tracked, db):
    run_id = track_init("DAILY_override", total_subtasks=4)
    genter("first")
    track_status(overall_percent=42.5, overall_message="custom figure")
    row = current(tracked, db, run_id)
    assert row["overall_percent_complete"] == pct(42.5)
    assert row["overall_progress_message"] == "custom figure"
    gexit()
    assert current(tracked, db, run_id)["overall_percent_complete"] == pct(25)


def test_items_over_total_never_exceed_100_in_the_derived_figure(db_dsn, db, spool_dir):
    from tests.tracker_support import make_tracker

    t = make_tracker(db_dsn, spool_dir, strict=False)
    try:
        with t.run("DAILY_over", total_subtasks=2) as run, run.subtask("x", items_total=8) as st:
            st.advance(10)
            assert t.flush(10)
            row = fetch_run(db, run.run_id)
            assert row["subtask_items_complete"] == 10
            assert row["subtask_percent_complete"] == pct(100)
            assert row["overall_percent_complete"] == pct(50)
    finally:
        t.shutdown(5)


def test_explicit_subtask_percent_and_items_via_track_status(tracked, db):
    run_id = track_init("DAILY_status_fields", total_subtasks=2)
    genter("loading")
    track_status(subtask_items_total=200, subtask_items_complete=50, subtask_message="a quarter")
    row = current(tracked, db, run_id)
    assert row["subtask_percent_complete"] == pct(25)
    assert row["overall_percent_complete"] == pct(12.5)
    assert row["subtask_progress_message"] == "a quarter"
    track_status(subtask_percent=60)
    row = current(tracked, db, run_id)
    assert row["subtask_percent_complete"] == pct(60)
    assert row["overall_percent_complete"] == pct(30)


def test_manual_subtask_numbering_without_genter(tracked, db):
    """The original design's track_status(current_subtask=…) style, with no genter at all."""
    run_id = track_init(script_name="ANNUAL_DEC_manual", total_tasks=5, category="ANNUAL_DEC")
    track_status(current_subtask=3, subtask_name="step 3", subtask_status="RUNNING")
    track_task_progress(1, 2)
    row = current(tracked, db, run_id)
    assert row["current_subtask"] == 3
    assert row["subtask_name"] == "step 3"
    assert row["task_stage"] == "ANNUAL_DEC"
    # Steps 1-2 done, step 3 half done: (2 + 0.5) / 5.
    assert row["overall_percent_complete"] == pct(50)
    track_status(current_subtask=3, subtask_status="COMPLETED")
    row = current(tracked, db, run_id)
    assert row["overall_percent_complete"] == pct(60)
    assert row["subtask_status"] == "COMPLETED"
    assert fetch_subtasks(db, run_id) == []


def test_progress_without_any_subtask_goes_to_the_run_row(tracked, db):
    run_id = track_init("DAILY_plain_loop", total_subtasks=1)
    for i in range(1, 5):
        track_task_progress(i, 8, "item {i}")
    row = current(tracked, db, run_id)
    assert row["execution_status"] == "RUNNING"
    assert (row["subtask_items_complete"], row["subtask_items_total"]) == (4, 8)
    assert row["overall_percent_complete"] == pct(50)
    assert row["subtask_progress_message"] == "item 4"


def test_genter_interpolates_names_and_format_specs(tracked, db):
    count = 1234567  # noqa: F841 (read by the {…} fields below)
    share = 0.25  # noqa: F841
    run_id = track_init("DAILY_glue")
    genter("loading {count:,} rows ({share:.0%})")
    gmessage("{{literal}} braces and {count}")
    row = current(tracked, db, run_id)
    assert row["subtask_name"] == "loading 1,234,567 rows (25%)"
    assert row["subtask_progress_message"] == "{literal} braces and 1234567"


@pytest.mark.parametrize(
    "text",
    [
        "loading data_{os.environ[PIPETRACK_TEST_SECRET]}.csv",
        "{row_obj.__class__.__mro__}",
        "{files[0]}",
        "{count!r}",
        "{count:{width}}",
        "{}",
        '{"json": 1}',
        "unmatched { brace",
    ],
)
def test_text_that_is_not_a_plain_name_template_is_kept_as_written(tracked, db, monkeypatch, text):
    # An f-string may already have put a file name holding braces into the text: interpolating
    # it again must not reach into objects or the environment.
    monkeypatch.setenv("PIPETRACK_TEST_SECRET", "s3cr3t-value")
    import os  # noqa: F401 (the names the texts above refer to exist in this scope)

    row_obj = object()  # noqa: F841
    files = ["alaska.csv"]  # noqa: F841
    count, width = 7, 5  # noqa: F841
    run_id = track_init("DAILY_glue_data")
    genter(text)
    gmessage(f"message {text}")
    row = current(tracked, db, run_id)
    assert row["subtask_name"] == text
    assert row["subtask_progress_message"] == f"message {text}"
    assert "s3cr3t" not in repr(row)


def test_first_genter_starts_a_run_named_after_the_script(tracked, db):
    from tracker._runtime.context import default_task_name

    genter("step one")
    run = tracker.current_run()
    assert run is not None
    assert run.task_name == default_task_name()
    gexit()
    row = current(tracked, db, run.run_id)
    assert row["execution_status"] == "RUNNING"
    assert row["subtask_status"] == "COMPLETED"


def test_genter_prints_console_lines(db_dsn, spool_dir, capsys):
    from tests.tracker_support import make_tracker
    from tracker._runtime import trackers

    t = make_tracker(db_dsn, spool_dir, console=True)
    previous = trackers.set_default(t)
    try:
        genter("outer")
        genter("inner")
        gmessage("note")
        gexit()
        gexit()
    finally:
        t.shutdown(5)
        trackers.set_default(previous)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in lines[:3]] == ["> outer", "  > inner", "    note"]
    assert lines[3].split("] ", 1)[1].startswith("  < inner (")
    assert lines[4].split("] ", 1)[1].startswith("< outer (")


def test_parallel_workers_each_count_their_own_subtask(tracked, db):
    import threading

    with tracker.run("DAILY_parallel", total_subtasks=4) as run:
        outer = run.subtask("all states")
        barrier = threading.Barrier(4)
        done = threading.Event()

        def work(n):
            with run.subtask(f"state {n}", items_total=4) as st:
                st.advance(n)
                barrier.wait()
                done.wait(10)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        import time

        deadline = time.monotonic() + 10
        while len(run.subtasks_open) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        row = current(tracked, db, run.run_id)
        # Four open units with 0, 1, 2, 3 of 4 items: (0 + .25 + .5 + .75) / 4.
        assert row["overall_percent_complete"] == pct(37.5)
        assert row["current_subtask"] == 4
        done.set()
        for t in threads:
            t.join()
        outer.close()
    subtasks = fetch_subtasks(db, run.run_id)
    assert {s["parent_index"] for s in subtasks[1:]} == {1}
    assert sorted(s["items_complete"] for s in subtasks[1:]) == [0, 1, 2, 3]
