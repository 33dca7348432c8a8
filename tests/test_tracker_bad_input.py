"""Every bad input of the issue's list, in strict mode (raises) and lenient mode (warns, sanitizes,
and the row is still written)."""

from __future__ import annotations

import logging
import math
import numbers
from fractions import Fraction

import pytest

import tracker
from tests.tracker_support import default_tracker_on, fetch_run, fetch_subtasks, pct
from tracker._model.text import TEXT_MAX, TRUNCATED


@pytest.fixture(params=["strict", "lenient"])
def mode(request, db_dsn, tmp_path):
    strict = request.param == "strict"
    with default_tracker_on(db_dsn, tmp_path / "spool", strict=strict) as instance:
        yield instance


def written(t, db, run):
    assert t.flush(10)
    return fetch_run(db, run.run_id)


def expect(t, error, caplog, warning):
    """Strict: the call raises ``error``. Lenient: it logs ``warning`` and carries on."""

    class Check:
        def __enter__(self):
            if t.strict:
                self._raises = pytest.raises(error)
                return self._raises.__enter__()
            return None

        def __exit__(self, *exc):
            if t.strict:
                return self._raises.__exit__(*exc)
            assert warning in caplog.text
            return False

    return Check()


@pytest.mark.parametrize(
    ("value", "lenient_result", "warning"),
    [
        (150, 100, "outside 0-100; clamped to 100"),
        (-5, 0, "outside 0-100; clamped to 0"),
        (math.nan, 10, "is not a finite number; ignored"),
        (math.inf, 10, "is not a finite number; ignored"),
        (-math.inf, 10, "is not a finite number; ignored"),
        ("42.5", 42.5, "is a string; read as 42.5"),
        ("half", 10, "is not a number; ignored"),
        (True, 10, "is a bool, not a number"),
        ([50], 10, "must be a number, got list"),
        pytest.param(10**400, 10, "is not a finite number; ignored", id="10**400"),
        pytest.param(-(10**400), 10, "is not a finite number; ignored", id="-10**400"),
        pytest.param(Fraction(10**400, 3), 10, "is not a finite number; ignored", id="fraction"),
    ],
)
def test_bad_overall_percent(mode, db, caplog, value, lenient_result, warning):  # noqa: PLR0917 - fixtures and parameters
    run = tracker.run("DAILY_bad_percent")
    run.set_progress(10)
    with expect(mode, tracker.InvalidValue, caplog, warning):
        tracker.track_status(overall_percent=value)
    expected = 10 if mode.strict else lenient_result
    assert written(mode, db, run)["overall_percent_complete"] == pct(expected)


def test_bad_subtask_percent(mode, db, caplog):
    run = tracker.run("DAILY_bad_sub_percent")
    st = run.subtask("x")
    with expect(mode, tracker.InvalidValue, caplog, "outside 0-100"):
        st.update(percent=101)
    row = written(mode, db, run)
    assert row["subtask_percent_complete"] == (None if mode.strict else pct(100))


def test_negative_items(mode, db, caplog):
    run = tracker.run("DAILY_negative")
    st = run.subtask("x", items_total=10)
    st.advance(3)
    with expect(mode, tracker.InvalidValue, caplog, "n=-2 is negative"):
        st.advance(-2)
    with expect(mode, tracker.InvalidValue, caplog, "items_complete=-1 is negative; set to 0"):
        tracker.track_task_progress(-1, 10)
    row = written(mode, db, run)
    assert row["subtask_items_complete"] == (3 if mode.strict else 0)


def test_complete_over_total(mode, db, caplog):
    run = tracker.run("DAILY_over_total", total_subtasks=1)
    st = run.subtask("x", items_total=4)
    with expect(mode, tracker.InvalidValue, caplog, "5 items complete exceeds the total 4"):
        st.advance(5)
    with expect(mode, tracker.InvalidValue, caplog, "exceeds the total 4"):
        tracker.track_task_progress(7, 4)
    row = written(mode, db, run)
    if mode.strict:
        assert row["subtask_items_complete"] == 0
    else:
        assert row["subtask_items_complete"] == 7
        assert row["subtask_percent_complete"] == pct(100)
        assert row["overall_percent_complete"] == pct(100)


def test_total_zero_is_an_empty_batch_not_an_error(mode, db):
    run = tracker.run("DAILY_total_zero", total_subtasks=2)
    tracker.genter("nothing to load")
    tracker.track_task_progress(0, 0)
    row = written(mode, db, run)
    assert (row["subtask_items_complete"], row["subtask_items_total"]) == (0, 0)
    assert row["subtask_percent_complete"] == pct(0)
    assert row["overall_percent_complete"] == pct(0)
    tracker.gexit()
    assert list(tracker.progress([], "empty")) == []
    assert written(mode, db, run)["overall_percent_complete"] == pct(100)


def test_nul_bytes_are_stripped(mode, db, caplog):
    run = tracker.run("DAILY_nul\x00name")
    run.subtask("sub\x00task")
    run.message("a\x00b")
    row = written(mode, db, run)
    assert row["task_name"] == "DAILY_nulname"
    assert row["subtask_name"] == "subtask"
    assert row["overall_progress_message"] == "ab"
    assert "NUL bytes removed" in caplog.text


def test_invalid_surrogates_are_replaced(mode, db, caplog):
    run = tracker.run("DAILY_surrogate")
    run.message("caf\udce9 au lait")
    with run.subtask("\ud800 lone"):
        pass
    row = written(mode, db, run)
    assert row["overall_progress_message"] == "caf\ufffd au lait"
    assert fetch_subtasks(db, run.run_id)[0]["subtask_name"] == "\ufffd lone"
    assert "invalid surrogates replaced" in caplog.text


def test_a_1_mb_message_is_truncated_with_a_marker(mode, db, caplog):
    run = tracker.run("DAILY_huge")
    run.message("x" * 1_000_000)
    st = run.subtask("y")
    tracker.gmessage("z" * 1_000_000)
    tracker.track_error("e" * 1_000_000, "d" * 1_000_000)
    row = written(mode, db, run)
    for column in (
        "overall_progress_message",
        "subtask_progress_message",
        "error_message",
        "error_detail",
    ):
        assert len(row[column]) == TEXT_MAX
        assert row[column].endswith(TRUNCATED)
    assert st.message is not None
    assert "1000000 characters truncated to 65536" in caplog.text


def test_values_longer_than_their_column_are_truncated_never_a_failed_write(mode, db):
    run = tracker.run("DAILY_" + "n" * 400, stage="S" * 80, task_type="python-long-type")
    with run.subtask("s" * 700):
        pass
    row = written(mode, db, run)
    assert len(row["task_name"]) == 255
    assert row["task_name"].endswith(TRUNCATED)
    assert len(row["task_stage"]) == 50
    assert len(row["task_type"]) == 10
    assert row["task_type"] == "python-lo…"
    subtask = fetch_subtasks(db, run.run_id)[0]["subtask_name"]
    assert len(subtask) == 500
    assert subtask.endswith(TRUNCATED)


def test_non_string_messages(mode, db, caplog):
    run = tracker.run("DAILY_non_string")
    with expect(mode, tracker.InvalidValue, caplog, "message must be a str, got int"):
        run.message(42)
    with expect(mode, tracker.InvalidValue, caplog, "message must be a str, got dict"):
        tracker.gmessage({"state": "DE"})
    row = written(mode, db, run)
    assert row["overall_progress_message"] == (None if mode.strict else "{'state': 'DE'}")


class _BrokenStr(str):
    """A str whose __str__ and __repr__ raise (as a careless subclass can)."""

    __slots__ = ()

    def __str__(self) -> str:
        raise RuntimeError("no __str__")

    def __repr__(self) -> str:
        raise RuntimeError("no __repr__")


class _BrokenNumber(numbers.Real):
    """A number whose __float__ and __repr__ raise."""

    def __float__(self) -> float:
        raise RuntimeError("no __float__")

    def __repr__(self) -> str:
        raise RuntimeError("no __repr__")


for _name in (
    "__abs__",
    "__add__",
    "__ceil__",
    "__eq__",
    "__floor__",
    "__floordiv__",
    "__le__",
    "__lt__",
    "__mod__",
    "__mul__",
    "__neg__",
    "__pos__",
    "__pow__",
    "__radd__",
    "__rfloordiv__",
    "__rmod__",
    "__rmul__",
    "__round__",
    "__rpow__",
    "__rtruediv__",
    "__truediv__",
    "__trunc__",
):
    setattr(_BrokenNumber, _name, lambda *_: NotImplemented)
_BrokenNumber.__abstractmethods__ = frozenset()


def test_a_str_subclass_whose_str_raises_is_stored_by_its_characters(mode, db, caplog):
    run = tracker.run("DAILY_broken_str")
    caplog.set_level(logging.WARNING, logger="tracker")
    tracker.gmessage(_BrokenStr("loading Delaware"))
    tracker.genter(_BrokenStr("step one"))
    row = written(mode, db, run)
    assert row["overall_progress_message"] == "loading Delaware"
    assert row["subtask_name"] == "step one"
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_numbers_that_cannot_be_read_warn_in_one_line(mode, db, caplog):
    run = tracker.run("DAILY_broken_number")
    run.set_progress(10)
    with expect(mode, tracker.InvalidValue, caplog, "cannot be read as a number; ignored"):
        tracker.track_status(overall_percent=_BrokenNumber())
    assert written(mode, db, run)["overall_percent_complete"] == pct(10)
    tracker.track_finish()
    # A new run: warnings of one kind are rate-limited per run.
    run = tracker.run("DAILY_broken_number_text")
    run.set_progress(10)
    with expect(mode, tracker.InvalidValue, caplog, "is not a number; ignored"):
        tracker.track_status(overall_percent=_BrokenStr("half"))
    assert written(mode, db, run)["overall_percent_complete"] == pct(10)
    assert "<unprintable" in caplog.text or mode.strict
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("status", ["DONE", "PAUSED", "", None, 3])
def test_unknown_status_names(mode, db, caplog, status):
    run = tracker.run("DAILY_unknown_status")
    with expect(mode, tracker.InvalidStatus, caplog, "is not one of STARTED, RUNNING"):
        tracker.track_status(status=status)
    with expect(mode, tracker.InvalidStatus, caplog, "is not one of NOT_STARTED"):
        tracker.track_status("STARTED", subtask_status="SKIPPED")
    assert written(mode, db, run)["execution_status"] == "STARTED"


def test_status_names_are_case_insensitive(mode, db):
    run = tracker.run("DAILY_case")
    tracker.track_status(status=" finished ")
    assert written(mode, db, run)["execution_status"] == "FINISHED"


def test_gexit_without_genter(mode, caplog):
    tracker.track_init("DAILY_gexit_alone")
    with expect(mode, tracker.SubtaskOrderError, caplog, "gexit() without a matching genter()"):
        tracker.gexit()


def test_gexit_with_no_run_at_all(mode, caplog):
    with expect(mode, tracker.SubtaskOrderError, caplog, "gexit() without a matching genter()"):
        tracker.gexit()


def test_module_calls_before_any_run(mode, caplog):
    with expect(mode, tracker.NoActiveRun, caplog, "no run is being tracked"):
        tracker.track_task_progress(1, 2)
    with expect(mode, tracker.NoActiveRun, caplog, "no run is being tracked"):
        tracker.track_finish()


def test_calls_after_finish_change_nothing(mode, db, caplog):
    run_id = tracker.track_init("DAILY_after_finish", total_subtasks=2)
    tracker.genter("one")
    tracker.track_finish("done")
    run = tracker.current_run()
    before = written(mode, db, run)
    with expect(mode, tracker.RunClosed, caplog, "already ended as FINISHED"):
        tracker.genter("two")
    with expect(mode, tracker.RunClosed, caplog, "already ended as FINISHED"):
        tracker.track_task_progress(5, 10)
    with expect(mode, tracker.RunClosed, caplog, "already ended as FINISHED"):
        tracker.track_error("late failure")
    with expect(mode, tracker.RunClosed, caplog, "already ended as FINISHED"):
        tracker.track_status("RUNNING", overall_percent=3)
    with expect(mode, tracker.RunClosed, caplog, "already ended as FINISHED"):
        run.subtask("three").advance()
    after = written(mode, db, run)
    assert after["run_id"] == before["run_id"]
    assert after["execution_status"] == "FINISHED"
    assert after["error_message"] is None
    assert after["overall_percent_complete"] == pct(100)
    assert [s["subtask_name"] for s in fetch_subtasks(db, run_id)] == ["one"]


def test_second_finish_warns_even_in_strict_mode(mode, caplog):
    run = tracker.run("DAILY_twice")
    assert run.finish() is True
    assert run.finish() is False
    assert "finish() ignored" in caplog.text


def test_subtask_closed_with_children_open(mode, db, caplog):
    run = tracker.run("DAILY_order")
    outer = run.subtask("outer")
    inner = run.subtask("inner")
    with expect(mode, tracker.SubtaskOrderError, caplog, "ended while 'inner' inside it were open"):
        outer.close()
    assert inner.closed is not mode.strict
    assert outer.closed is not mode.strict


def test_task_name_with_quotes_newlines_and_sql_is_stored_verbatim(mode, db):
    name = 'DAILY_x\'; DROP TABLE pipeline_status; --\n"quoted" \\ $1 %s'
    run = tracker.run(name)
    run.subtask("'); DELETE FROM pipeline_subtask; --")
    row = written(mode, db, run)
    assert row["task_name"] == name
    assert row["task_stage"] == "DAILY"
    assert (
        fetch_subtasks(db, run.run_id)[0]["subtask_name"] == "'); DELETE FROM pipeline_subtask; --"
    )


def test_bad_task_name_types(mode, db, caplog):
    with expect(mode, tracker.InvalidValue, caplog, "task_name must be a str"):
        tracker.run(12345)
    with expect(mode, tracker.InvalidValue, caplog, "is empty; using the script's name"):
        tracker.run("   ")


def test_bad_counts(mode, caplog):
    run = tracker.run("DAILY_counts")
    with expect(mode, tracker.InvalidValue, caplog, "is not a whole number"):
        run.subtask("a", items_total=2.5)
    with expect(mode, tracker.InvalidValue, caplog, "must be an integer, got NoneType"):
        run.subtask("b").advance(None)
    with expect(mode, tracker.InvalidValue, caplog, "does not fit a BIGINT"):
        run.subtask("c", items_total=2**70)


# Rows travel as PostgreSQL array literals; these are what such a literal gives meaning to.
ARRAY_SYNTAX = ["NULL", '"NULL"', "", " padded ", "{a,b}", "}", '"', "\\", '\\"', "a,b", "é ✓ 🚀"]


@pytest.mark.parametrize("text", ARRAY_SYNTAX)
def test_array_literal_syntax_in_every_text_column_is_stored_verbatim(mode, db, text):
    run = tracker.run(f"DAILY_{text}", stage="DAILY")
    run.message(text)
    with run.subtask(f"sub {text}") as st:
        st.update(message=text)
    run.fail(text, detail=text)
    row = written(mode, db, run)
    assert row["task_name"] == f"DAILY_{text}"
    assert (row["overall_progress_message"], row["error_message"], row["error_detail"]) == (
        text,
        text,
        text,
    )
    (sub,) = fetch_subtasks(db, run.run_id)
    assert (sub["subtask_name"], sub["message"]) == (f"sub {text}", text)
