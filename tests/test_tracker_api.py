"""Both faces of the tracker write the canonical record: runs, subtasks, context, observers."""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from pathlib import Path

import pytest

import tracker
from tests.tracker_support import default_tracker_on, fetch_run, fetch_subtasks, make_tracker, pct
from tracker._model.state import RunCore
from tracker._record import git
from tracker._runtime import context, observers


@pytest.fixture
def spool_dir(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def tracked(db_dsn, spool_dir):
    with default_tracker_on(db_dsn, spool_dir) as instance:
        yield instance


def test_run_context_manager_records_start_subtasks_and_finish(tracked, db):
    with tracker.run("DAILY_01_BDC_Locations", total_subtasks=2) as run:
        assert tracker.current_run() is run
        uuid.UUID(run.run_id)
        with run.subtask("Loading Delaware", items_total=8) as st:
            for _ in range(8):
                st.advance()
        with run.subtask("Writing Delaware"):
            pass
    assert tracked.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["task_name"] == "DAILY_01_BDC_Locations"
    assert row["task_stage"] == "DAILY"
    assert row["task_type"] == "python"
    assert row["execution_status"] == "FINISHED"
    assert row["execution_end"] >= row["execution_start"]
    assert row["overall_percent_complete"] == pct(100)
    assert row["total_subtasks"] == 2
    assert row["current_subtask"] == 2
    assert row["last_progress"] is not None
    assert row["seq"] >= 1
    subtasks = fetch_subtasks(db, run.run_id)
    assert [(s["subtask_index"], s["subtask_name"], s["subtask_status"]) for s in subtasks] == [
        (1, "Loading Delaware", "COMPLETED"),
        (2, "Writing Delaware", "COMPLETED"),
    ]
    assert subtasks[0]["items_total"] == 8
    assert subtasks[0]["items_complete"] == 8
    assert subtasks[0]["parent_index"] is None
    assert all(s["ended_at"] >= s["started_at"] for s in subtasks)


def test_status_is_started_until_work_begins_then_running(tracked, db):
    run = tracker.run("PREREQ_setup")
    assert tracked.flush(10)
    assert fetch_run(db, run.run_id)["execution_status"] == "STARTED"
    assert fetch_run(db, run.run_id)["last_progress"] is None
    run.subtask("first step")
    assert tracked.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["execution_status"] == "RUNNING"
    assert row["subtask_status"] == "RUNNING"
    assert row["subtask_name"] == "first step"
    run.finish("done")
    assert tracked.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["execution_status"] == "FINISHED"
    assert row["overall_progress_message"] == "done"
    assert fetch_subtasks(db, run.run_id)[0]["subtask_status"] == "COMPLETED"


def test_exception_in_run_block_records_failure_with_traceback(tracked, db):
    def load():
        raise KeyError("Delaware")

    with pytest.raises(KeyError), tracker.run("DAILY_02_fail") as run, run.subtask("loading"):
        load()
    assert tracked.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["execution_status"] == "FAILED"
    assert row["error_message"] == "KeyError: 'Delaware'"
    assert "Traceback" in row["error_detail"]
    assert "in load" in row["error_detail"]
    assert row["exit_code"] == 1
    assert fetch_subtasks(db, run.run_id)[0]["subtask_status"] == "FAILED"


def test_progress_iterates_as_a_subtask_and_counts_items(tracked, db):
    states = ["DE", "MD", "VA", "WV"]
    with tracker.run("STATIC_states", total_subtasks=1) as run:
        seen = list(tracker.progress(states, "Processing states"))
        sub = fetch_subtasks
    assert seen == states
    assert tracked.flush(10)
    (row,) = sub(db, run.run_id)
    assert row["subtask_name"] == "Processing states"
    assert (row["items_complete"], row["items_total"]) == (4, 4)
    assert row["subtask_status"] == "COMPLETED"


def test_progress_of_a_generator_counts_without_a_total(tracked, db):
    with tracker.run("STATIC_gen") as run:
        total = sum(tracker.progress((i for i in range(5)), "numbers"))
    assert total == 10
    assert tracked.flush(10)
    (row,) = fetch_subtasks(db, run.run_id)
    assert (row["items_complete"], row["items_total"]) == (5, None)


def test_progress_starts_a_run_named_after_the_script_when_none_is_going(tracked, db):
    list(tracker.progress([1, 2], "alone"))
    run = tracker.current_run()
    assert run is not None
    assert run.task_name == context.default_task_name()
    tracked.shutdown(10)
    row = fetch_run(db, run.run_id)
    assert row["execution_status"] == "FINISHED"


def test_decorator_makes_a_run_then_subtasks_inside_it(tracked, db):
    @tracker.track
    def step():
        return "stepped"

    @tracker.track("PERIODIC_refresh", total_subtasks=2)
    def main():
        return step(), step()

    assert main() == ("stepped", "stepped")
    assert tracked.flush(10)
    (row,) = db.execute(
        "SELECT run_id, execution_status, task_stage FROM pipeline_status"
    ).fetchall()
    assert row[1:] == ("FINISHED", "PERIODIC")
    names = [s["subtask_name"] for s in fetch_subtasks(db, str(row[0]))]
    assert names == ["step", "step"]


def test_several_runs_in_one_process_nest_with_parent_ids(tracked, db):
    with tracker.run("DAILY_outer") as outer:
        with tracker.run("DAILY_inner") as inner:
            assert tracker.current_run() is inner
        assert tracker.current_run() is outer
    assert tracked.flush(10)
    assert fetch_run(db, inner.run_id)["parent_run_id"] == uuid.UUID(outer.run_id)
    assert fetch_run(db, outer.run_id)["parent_run_id"] is None


def test_context_records_host_pid_user_script_and_log(tracked, db, tmp_path):
    log = tmp_path / "logs" / "daily.log"
    with tracker.run("DAILY_ctx", log_path=str(log)) as run:
        pass
    assert tracked.flush(10)
    row = fetch_run(db, run.run_id)
    assert row["hostname"] == socket.gethostname()
    assert row["process_id"] == os.getpid()
    assert row["user_name"] == getpass.getuser()
    path, name = context.script_location()
    assert row["script_path"] == path
    assert row["script_file"] == name
    assert row["log_path"] == str(log)
    assert row["log_file"] == "daily.log"


def test_environment_is_allow_listed_and_secrets_redacted(db_dsn, db, spool_dir, monkeypatch):
    monkeypatch.setenv("BDC_DOWNLOAD_PATH", "/data/bdc")
    monkeypatch.setenv("BDC_API_TOKEN", "s3cr3t")
    monkeypatch.setenv("BDC_DB_PASSWORD", "hunter2")
    monkeypatch.setenv("BDC_SOURCE_URL", "postgresql://etl:pw123@db/geo")
    monkeypatch.setenv("UNLISTED", "x")
    t = make_tracker(db_dsn, spool_dir, env_allowlist=["BDC_*", "PATH"])
    try:
        run = t.run("DAILY_env")
        run.finish()
        assert t.flush(10)
    finally:
        t.shutdown(5)
    env = fetch_run(db, run.run_id)["environment"]
    assert env["BDC_DOWNLOAD_PATH"] == "/data/bdc"
    assert env["BDC_API_TOKEN"] == "****"
    assert env["BDC_DB_PASSWORD"] == "****"
    assert "pw123" not in env["BDC_SOURCE_URL"]
    assert env["PATH"] == os.environ["PATH"]
    assert "UNLISTED" not in env


def test_git_commit_is_the_scripts_repository_not_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / ".git" / "refs" / "heads" / "main").write_text(sha + "\n")
    script = repo / "jobs" / "DAILY_x.py"
    script.parent.mkdir()
    script.write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert git.git_commit(str(script)) == sha
    # Packed refs, and a detached HEAD.
    (repo / ".git" / "refs" / "heads" / "main").unlink()
    other = "89abcdef0123456789abcdef0123456789abcdef"
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs\n{other} refs/heads/main\n")
    assert git.git_commit(str(script)) == other
    (repo / ".git" / "HEAD").write_text(sha + "\n")
    assert git.git_commit(str(script)) == sha
    assert git.git_commit(str(elsewhere / "no_repo.py")) is None


@pytest.mark.parametrize(
    ("name", "stage"),
    [
        ("STATIC_01_x", "STATIC"),
        ("DAILY_01_BDC_Locations", "DAILY"),
        ("ANNUAL_DEC_05_y", "ANNUAL_DEC"),
        ("ANNUAL_SEPT_01", "ANNUAL_SEPT"),
        ("ANNUAL_JUNE_02", "ANNUAL_JUNE"),
        ("PERIODIC_refresh", "PERIODIC"),
        ("PREREQ_install", "PREREQ"),
        ("adhoc_script", "UNKNOWN"),
        ("DAILYX", "UNKNOWN"),
    ],
)
def test_stage_is_derived_from_the_name_prefix(tracked, name, stage):
    run = tracker.run(name)
    assert run.stage == stage
    run.finish()


def test_explicit_stage_wins_over_the_prefix(tracked, db):
    with tracker.run("DAILY_but_really", stage="PERIODIC") as run:
        pass
    assert tracked.flush(10)
    assert fetch_run(db, run.run_id)["task_stage"] == "PERIODIC"


class Recorder:
    def __init__(self):
        self.events = []

    def on_run_start(self, run):
        self.events.append(("run_start", run.task_name))
        run.set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")

    def on_subtask_start(self, run, subtask):
        self.events.append(("subtask_start", subtask.name))

    def on_subtask_end(self, run, subtask):
        self.events.append(("subtask_end", subtask.name, subtask.status))

    def on_message(self, run, text):
        self.events.append(("message", text))

    def on_run_end(self, run):
        self.events.append(("run_end", run.status))


def test_observers_hear_transitions_but_not_progress_ticks(tracked, db):
    recorder = Recorder()
    observers.add_observer(recorder)
    try:
        with tracker.run("DAILY_observed") as run:
            with run.subtask("a", items_total=3) as st:
                st.advance()
                st.advance(2)
            run.message("halfway")
    finally:
        observers.remove_observer(recorder)
    assert recorder.events == [
        ("run_start", "DAILY_observed"),
        ("subtask_start", "a"),
        ("subtask_end", "a", "COMPLETED"),
        ("message", "halfway"),
        ("run_end", "FINISHED"),
    ]
    assert tracked.flush(10)
    assert fetch_run(db, run.run_id)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_failing_observer_never_breaks_the_pipeline(tracked, caplog):
    class Broken:
        def on_run_start(self, run):
            raise RuntimeError("observer bug")

    broken = Broken()
    observers.add_observer(broken)
    try:
        with tracker.run("DAILY_obs_broken"):
            pass
    finally:
        observers.remove_observer(broken)
    assert "observer bug" in caplog.text


def test_run_id_is_available_and_inherited_as_parent(tracked, db, monkeypatch):
    parent = str(uuid.uuid4())
    monkeypatch.setenv("PIPETRACK_RUN_ID", parent)
    with tracker.run("DAILY_child") as run:
        assert run.parent_run_id == parent
    assert tracked.flush(10)
    assert fetch_run(db, run.run_id)["parent_run_id"] == uuid.UUID(parent)


def test_heartbeat_refreshes_last_update_and_samples_resources(db_dsn, db, spool_dir):
    t = make_tracker(db_dsn, spool_dir, heartbeat_interval=0.1)
    try:
        run = t.run("DAILY_heartbeat")
        assert t.flush(10)
        first = fetch_run(db, run.run_id)

        def refreshed():
            row = fetch_run(db, run.run_id)
            return row if row["last_update"] > first["last_update"] else None

        from tests.tracker_support import wait_for

        row = wait_for(refreshed, what="a heartbeat")
        assert row["execution_status"] == "STARTED"
        assert row["memory_mb"] > 0
        assert row["peak_memory_mb"] >= row["memory_mb"]
        assert row["cpu_percent"] is not None
        assert row["last_progress"] is None
    finally:
        t.shutdown(5)


def test_writer_thread_is_a_named_daemon(tracked):
    import threading

    with tracker.run("DAILY_thread"):
        pass
    threads = [t for t in threading.enumerate() if t.name == "pipetrack-writer"]
    assert threads
    assert all(t.daemon for t in threads)


def test_shutdown_is_idempotent_and_stops_the_writer(db_dsn, spool_dir):
    t = make_tracker(db_dsn, spool_dir)
    t.run("DAILY_stop")
    assert t.shutdown(5)
    assert t.shutdown(5)
    assert not t.writer.alive


def test_spool_dir_defaults_under_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPETRACK_DATA_DIR", str(tmp_path))
    assert (
        tracker.Tracker(lifecycle=False).settings.resolved_spool_dir() == Path(tmp_path) / "spool"
    )


def test_progress_calls_do_not_wake_the_writer_but_transitions_do(db_dsn, db, spool_dir):
    from tests.tracker_support import wait_for

    # A long flush interval: before it ends, only a wake-up makes the writer write.
    t = make_tracker(db_dsn, spool_dir, flush_interval=60)
    try:
        run = t.run("DAILY_no_wake")
        st = run.subtask("loop", items_total=10_000)
        assert t.flush(10)
        for _ in range(10_000):
            st.advance()
        st.update(5, message="still cheap")
        assert t.writer._wake is False
        st.close()

        def closed():
            return fetch_subtasks(db, run.run_id)[0]["subtask_status"] == "COMPLETED"

        wait_for(closed, timeout=30, what="the subtask boundary to be written without a flush")
    finally:
        t.shutdown(5)


def test_strict_mode_comes_from_the_environment_unless_given(monkeypatch, caplog):
    assert tracker.Tracker(lifecycle=False).strict is True  # the suite sets PIPETRACK_STRICT=1
    monkeypatch.setenv("PIPETRACK_STRICT", "0")
    assert tracker.Tracker(lifecycle=False).strict is False
    assert tracker.Tracker(lifecycle=False, strict=True).strict is True
    monkeypatch.setenv("PIPETRACK_STRICT", "maybe")
    assert tracker.Tracker(lifecycle=False).strict is False
    assert "ignoring PIPETRACK_STRICT='maybe'" in caplog.text


def test_bad_interval_settings_are_logged_and_ignored(monkeypatch, caplog):
    monkeypatch.setenv("PIPETRACK_FLUSH_INTERVAL", "soon")
    monkeypatch.setenv("PIPETRACK_HEARTBEAT_INTERVAL", "-3")
    settings = tracker.Tracker(lifecycle=False).settings
    assert (settings.flush_interval, settings.heartbeat_interval) == (0.5, 15.0)
    assert "ignoring PIPETRACK_FLUSH_INTERVAL='soon'" in caplog.text
    with pytest.raises(tracker.ConfigurationError):
        tracker.Tracker(lifecycle=False, flush_interval=0)


def test_configure_applies_before_the_first_run_only(db_dsn, spool_dir):
    from tracker._runtime import trackers

    previous = trackers.set_default(None)
    try:
        configured = tracker.configure(
            dsn=db_dsn, spool_dir=spool_dir, lifecycle=False, strict=False
        )
        assert trackers.default_tracker() is configured
        assert configured.strict is False
        tracker.run("DAILY_configured").finish()
        with pytest.raises(tracker.ConfigurationError, match="before the first run"):
            tracker.configure(strict=True)
    finally:
        trackers.default_tracker().shutdown(5)
        trackers.set_default(previous)


def test_an_internal_error_is_logged_never_raised_into_the_pipeline(tracked, monkeypatch, caplog):
    from tracker._model.state import RunCore

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the tracker")

    run = tracker.run("DAILY_internal_bug")
    monkeypatch.setattr(RunCore, "enter", broken)
    st = run.subtask("x", items_total=3)
    st.advance()  # a detached subtask accepts calls and records nothing
    tracker.genter("y")
    monkeypatch.setattr(RunCore, "end", broken)
    assert run.finish() is False
    assert "a bug in the tracker" in caplog.text
    assert "failed; the pipeline continues" in caplog.text


def _bare_core() -> RunCore:
    return RunCore(
        run_id=str(uuid.uuid4()),
        task_name="DAILY_identity",
        task_stage="DAILY",
        total_subtasks=None,
        context={"hostname": "h", "process_id": 1},
        max_pending=10,
    )


def test_identity_changes_reach_the_next_snapshot():
    core = _bare_core()
    first = core.snapshot()
    assert core.snapshot().identity is first.identity  # unchanged: the same tuple, no compare
    core.set_identity(git_commit="abc123", trace_id="0" * 32, task_stage="PREREQ")
    row = core.snapshot().status_row
    assert (row["git_commit"], row["trace_id"], row["task_stage"]) == ("abc123", "0" * 32, "PREREQ")


def test_a_run_context_cannot_be_changed_behind_the_snapshot():
    core = _bare_core()
    with pytest.raises(TypeError):
        core.context["git_commit"] = "abc123"  # type: ignore[index]
    with pytest.raises(ValueError, match="not an identity column"):
        core.set_identity(run_id=str(uuid.uuid4()))
    with pytest.raises(ValueError, match="not an identity column"):
        core.set_identity(task_name="RENAMED")
