"""Work counts (``run.count``, ``subtask.count``, ``tracker.gcount``, ``pipetrack count``, the
``count`` line, R's and sh's ``track_count``): exact sums in the record, bad input refused
clearly without breaking the pipeline, and an outage spooled and replayed exactly once."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest

import tracker
from tests.tracker_support import (
    SCRIPTS,
    default_tracker_on,
    fetch_run,
    fetch_subtasks,
    make_tracker,
    proxy_for,
    spool_files,
    wait_for,
)
from tracker._model.counts import MAX_NAMES
from tracker._record.spool import Spool
from tracker._record.store import Store

PIPETRACK = [sys.executable, "-m", "tracker"]
REQUIRE_R = os.environ.get("PIPETRACK_REQUIRE_R") == "1"  # read at import, as test_r_helper


@pytest.fixture(params=["strict", "lenient"])
def mode(request, db_dsn, tmp_path):
    strict = request.param == "strict"
    with default_tracker_on(db_dsn, tmp_path / "spool", strict=strict) as instance:
        yield instance


def test_counts_from_the_run_its_subtasks_and_gcount_add_up_exactly(mode, db):
    with tracker.run("DAILY_counts") as run:
        assert run.count("rows", 5)
        tracker.gcount("rows", 10)  # no subtask open: the run's
        with run.subtask("load") as load:
            load.count("rows", 3)
            tracker.gcount("files")  # the innermost subtask's, and so the run's
            tracker.gcount("rows", 2)
            with run.subtask("inner"):
                tracker.gcount("rows", 7)
            run.count("rows", 1)  # the run's alone
        run.count("empty", 0)
    assert mode.flush(10)
    assert fetch_run(db, run.run_id)["counts"] == {"rows": 28, "files": 1, "empty": 0}
    load_row, inner_row = fetch_subtasks(db, run.run_id)
    assert load_row["counts"] == {"rows": 5, "files": 1}  # not its child's 7
    assert inner_row["counts"] == {"rows": 7}


def test_a_run_and_a_subtask_that_count_nothing_store_null(mode, db):
    with tracker.run("DAILY_no_counts") as run, run.subtask("quiet"):
        pass
    assert mode.flush(10)
    assert fetch_run(db, run.run_id)["counts"] is None
    assert fetch_subtasks(db, run.run_id)[0]["counts"] is None


BAD_AMOUNTS = [
    pytest.param(math.nan, "is not a finite number", id="nan"),
    pytest.param(math.inf, "is not a finite number", id="inf"),
    pytest.param(-1, "is negative", id="negative"),
    pytest.param(2.5, "must be a whole number (int), not float", id="fraction"),
    pytest.param(3.0, "must be a whole number (int), not float", id="float"),
    pytest.param(10**30, "exceeds 9223372036854775807", id="10**30"),
    pytest.param(True, "is a bool, not a number", id="bool"),
    pytest.param("5", "must be a whole number (int), not str", id="str"),
    pytest.param(Fraction(7, 2), "must be a whole number (int), not Fraction", id="Fraction"),
    pytest.param(None, "must be a whole number (int), not NoneType", id="None"),
]


@pytest.mark.parametrize(("n", "message"), BAD_AMOUNTS)
def test_a_bad_amount_is_refused_whole_and_the_run_goes_on(mode, db, caplog, n, message):
    with tracker.run("DAILY_bad_amount") as run:
        run.count("rows", 4)
        if mode.strict:
            with pytest.raises(tracker.InvalidValue, match="not counted") as raised:
                run.count("rows", n)
            assert message in str(raised.value)
            assert raised.value.argument == "n"
        else:
            assert run.count("rows", n) is False
            assert message in caplog.text
        run.count("rows", 1)
    assert mode.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["execution_status"] == "FINISHED"
    assert row["counts"] == {"rows": 5}


BAD_NAMES = [
    pytest.param("x" * 10_000, "has 10000 characters; at most 200 are allowed", id="10kB"),
    pytest.param("x" * 201, "has 201 characters", id="201"),
    pytest.param("", "is empty", id="empty"),
    pytest.param("\x00\x01 ", "is empty", id="only-control"),
    pytest.param(None, "must be a str, not NoneType", id="None"),
    pytest.param(42, "must be a str, not int", id="int"),
    pytest.param(b"rows", "must be a str, not bytes", id="bytes"),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_a_bad_name_is_refused_and_the_run_goes_on(mode, db, caplog, name, message):
    with tracker.run("DAILY_bad_name") as run:
        if mode.strict:
            with pytest.raises(tracker.InvalidValue, match="not counted") as raised:
                run.count(name, 1)
            assert message in str(raised.value)
        else:
            assert run.count(name, 1) is False
            assert message in caplog.text
        run.count("rows", 2)
    assert mode.flush(10)
    assert fetch_run(db, run.run_id)["counts"] == {"rows": 2}


def test_a_name_with_nul_or_control_characters_is_cleaned_in_lenient_mode_refused_in_strict(
    mode, db, caplog
):
    with tracker.run("DAILY_nul_name") as run:
        if mode.strict:
            with pytest.raises(tracker.InvalidValue, match="control characters removed"):
                run.count("rows\x00written\n", 3)
        else:
            assert run.count("rows\x00written\n", 3)
            assert "counted as 'rowswritten'" in caplog.text
        run.count(" rowswritten ", 1)  # surrounding space is not part of a name
    assert mode.flush(10)
    expected = {"rowswritten": 1 if mode.strict else 4}
    assert fetch_run(db, run.run_id)["counts"] == expected


def test_the_33rd_name_is_refused_the_first_32_keep_counting(mode, db, caplog):
    with tracker.run("DAILY_many_names") as run, run.subtask("step") as step:
        for i in range(MAX_NAMES):
            step.count(f"name_{i:02d}", i)
        if mode.strict:
            with pytest.raises(tracker.InvalidValue, match="at most 32 count names"):
                step.count("one_too_many", 1)
        else:
            assert step.count("one_too_many", 1) is False
            assert "at most 32 count names" in caplog.text
        step.count("name_00", 5)  # a name it has still counts
    assert mode.flush(10)
    expected = {f"name_{i:02d}": i for i in range(MAX_NAMES)} | {"name_00": 5}
    assert fetch_run(db, run.run_id)["counts"] == expected
    assert fetch_subtasks(db, run.run_id)[0]["counts"] == expected


def test_a_count_past_the_largest_bigint_is_refused_not_wrapped(mode, db):
    with tracker.run("DAILY_overflow") as run:
        run.count("bytes", 2**63 - 1)
        if mode.strict:
            with pytest.raises(tracker.InvalidValue, match="exceeds"):
                run.count("bytes", 1)
        else:
            assert run.count("bytes", 1) is False
    assert mode.flush(10)
    assert fetch_run(db, run.run_id)["counts"] == {"bytes": 2**63 - 1}


def test_counting_on_an_ended_subtask_or_run_is_refused_as_any_call_after_the_end(mode, db):
    run = tracker.run("DAILY_late_count")
    with run.subtask("step") as step:
        step.count("rows", 1)
    if mode.strict:
        with pytest.raises(tracker.InvalidValue, match="subtask 'step': it already ended"):
            step.count("rows", 1)
    else:
        assert step.count("rows", 1) is False
    run.finish()
    if mode.strict:
        with pytest.raises(tracker.RunClosed, match="cannot count"):
            run.count("rows", 1)
    else:
        assert run.count("rows", 1) is False
    assert mode.flush(10)
    assert fetch_run(db, run.run_id)["counts"] == {"rows": 1}
    assert fetch_subtasks(db, run.run_id)[0]["counts"] == {"rows": 1}


def test_gcount_outside_any_run_says_so(mode):
    if mode.strict:
        with pytest.raises(tracker.NoActiveRun, match="gcount"):
            tracker.gcount("rows", 1)
    else:
        tracker.gcount("rows", 1)


def test_counts_across_an_outage_are_spooled_and_replayed_exactly_once(db_dsn, db, tmp_path):
    spool = tmp_path / "spool"
    with proxy_for(db_dsn) as proxy:
        t = make_tracker(proxy.dsn, spool)
        try:
            run = t.run("DAILY_count_outage")
            run.count("rows", 5)
            with run.subtask("before") as st:
                st.count("rows", 2)
            assert t.flush(10)
            assert fetch_run(db, run.run_id)["counts"] == {"rows": 7}

            proxy.stop()
            with run.subtask("during") as st:
                st.count("rows", 11)
                st.count("files", 3)
            run.count("rows", 13)
            run.finish()
            assert t.flush(10)
            assert t.writer.spooled > 0
        finally:
            t.shutdown(5)
        (spooled,) = spool_files(spool)
        kept = spool.parent / "kept.jsonl"
        shutil.copy(spooled, kept)
        lines = [json.loads(line) for line in spooled.read_text().splitlines()[1:]]
        spooled_samples = sum(len(line.get("samples", ())) for line in lines)
        assert spooled_samples >= 1  # at least the run's last sample waits in the spool
        before = db.execute(
            "SELECT count(*) FROM pipeline_run_sample WHERE run_id = %s", (run.run_id,)
        ).fetchone()[0]

        proxy.start()
        store = Store(proxy.dsn)
        try:
            replayer = Spool(spool, max_bytes=10**8)
            assert replayer.replay(store.resolve(), store.write).files_done == 1
            # The same file once more (a replay cut short after writing, say): nothing doubles.
            shutil.copy(kept, spooled)
            assert replayer.replay(store.resolve(), store.write).files_done == 1
        finally:
            store.close()
    row = fetch_run(db, run.run_id)
    assert row["execution_status"] == "FINISHED"
    assert row["counts"] == {"rows": 31, "files": 3}
    before_row, during_row = fetch_subtasks(db, run.run_id)
    assert before_row["counts"] == {"rows": 2}
    assert during_row["counts"] == {"rows": 11, "files": 3}
    after = db.execute(
        "SELECT count(*) FROM pipeline_run_sample WHERE run_id = %s", (run.run_id,)
    ).fetchone()[0]
    assert after == before + spooled_samples


@pytest.fixture(scope="module")
def rscript():
    found = shutil.which("Rscript")
    if found is None:
        message = "Rscript is not installed (apt-get install r-base-core)"
        if REQUIRE_R:
            pytest.fail(message)
        pytest.skip(message)
    return found


def helper(language):
    done = subprocess.run([*PIPETRACK, f"{language}-helper"], capture_output=True, check=True)
    return done.stdout.decode().strip()


def test_counts_from_sh_r_python_a_raw_line_and_the_cli_add_up_in_one_wrapped_run(
    db, db_dsn, rscript
):
    command = " ".join(PIPETRACK)
    done = subprocess.run(
        [
            *PIPETRACK,
            "run",
            "--task",
            "counted",
            "--",
            "sh",
            str(SCRIPTS / "wrap_counts.sh"),
            helper("sh"),
            command,
            rscript,
            helper("r"),
            sys.executable,
        ],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout == b"done\n"  # the count lines are consumed, not printed
    run_id = db.execute(
        "SELECT run_id::text FROM pipeline_status WHERE task_name = 'counted'"
    ).fetchone()[0]
    row = fetch_run(db, run_id)
    assert row["execution_status"] == "FINISHED"
    # sh 5 + line 11 + R 13 + python 17 inside the subtask; sh 100 + CLI 7 outside it.
    assert row["counts"] == {"rows": 153, "files": 5}
    (load,) = fetch_subtasks(db, run_id)
    assert load["counts"] == {"rows": 46, "files": 1}
    stderr = done.stderr.decode()
    # Each refusal said why, where it was made, and the script went on.
    for said in (
        "track_count rows: N must be a whole number >= 0, not '-1'",
        "track_count rows: N must be a whole number >= 0, not '2.5'",
        "track_count rows: N has 31 digits",
        "track_count needs a name",
        "n must be one whole number from 0 to 2^63-1, not NaN",
        "not -1;",
        "not 2.5;",
        "not 1e+30;",
        "not c(1, 2);",
        'not "5";',
        "not TRUE;",
        "the name has 10000 characters, at most 200 are allowed",
        "track_count needs one name",
        "N must be a whole number >= 0, not '-3'; nothing counted",
        "N must be at most 9223372036854775807",
    ):
        assert said in stderr, said


def test_a_count_line_with_a_bad_n_is_not_a_command_and_passes_through(db, db_dsn):
    code = (
        "print('::pipetrack::count n=1000000000000000000000000000000::rows'); "
        "print('::pipetrack::count n=-2::rows'); "
        "print('::pipetrack::count n=2.5::rows'); "
        "print('::pipetrack::count n=4::rows', flush=True)"
    )
    done = subprocess.run(
        [*PIPETRACK, "run", "--task", "bad_lines", "--", sys.executable, "-c", code],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "::pipetrack::count n=1000000000000000000000000000000::rows",
        "::pipetrack::count n=-2::rows",
        "::pipetrack::count n=2.5::rows",
    ]
    assert b"n= has 31 digits: too large" in done.stderr
    assert b"n= must be a whole number >= 0, not '-2'" in done.stderr
    run_id = db.execute(
        "SELECT run_id::text FROM pipeline_status WHERE task_name = 'bad_lines'"
    ).fetchone()[0]
    assert fetch_run(db, run_id)["counts"] == {"rows": 4}


def test_a_count_refused_by_the_run_warns_in_the_wrapper_and_the_command_goes_on(db, db_dsn):
    names = ", ".join(f"'::pipetrack::count::name_{i}'" for i in range(MAX_NAMES + 1))
    code = f"print('\\n'.join([{names}, '::pipetrack::count n=3::' + 'x' * 300]), flush=True)"
    done = subprocess.run(
        [*PIPETRACK, "run", "--task", "many_names", "--", sys.executable, "-c", code],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"at most 32 count names" in done.stderr
    assert b"has 300 characters; at most 200 are allowed" in done.stderr
    run_id = db.execute(
        "SELECT run_id::text FROM pipeline_status WHERE task_name = 'many_names'"
    ).fetchone()[0]
    assert fetch_run(db, run_id)["counts"] == {f"name_{i}": 1 for i in range(MAX_NAMES)}


def test_pipetrack_count_outside_a_wrapped_run_warns_and_succeeds_unless_strict():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRACK_")}
    lenient = subprocess.run(
        [*PIPETRACK, "count", "rows", "3"], env=env, capture_output=True, check=False
    )
    assert lenient.returncode == 0
    assert b"not inside `pipetrack run`" in lenient.stderr
    bad = subprocess.run(
        [*PIPETRACK, "count", "rows", "1.5"], env=env, capture_output=True, check=False
    )
    assert (bad.returncode, bad.stderr) == (
        0,
        b"pipetrack: error: N must be a whole number >= 0, not '1.5'; nothing counted\n",
    )
    strict = subprocess.run(
        [*PIPETRACK, "count", "x" * 300, "1"],
        env={**env, "PIPETRACK_STRICT": "1"},
        capture_output=True,
        check=False,
    )
    assert strict.returncode == 2
    assert b"has 300 characters; at most 200 are allowed; nothing counted" in strict.stderr


def test_an_older_snapshot_replayed_late_never_takes_counts_back(db_dsn, db, tmp_path):
    # Counts are state (the latest totals), guarded by seq like every column: an older snapshot
    # replayed after a newer one leaves the newer counts.
    with default_tracker_on(db_dsn, tmp_path / "spool") as t:
        run = t.run("DAILY_seq_counts")
        run.count("rows", 1)
        assert t.flush(10)
        old = run.snapshot()
        run.count("rows", 1)
        assert t.flush(10)
        store = Store(db_dsn)
        try:
            store.write(old)
        finally:
            store.close()
        run.finish()
    wait_for(lambda: fetch_run(db, run.run_id)["execution_status"] == "FINISHED")
    assert fetch_run(db, run.run_id)["counts"] == {"rows": 2}
