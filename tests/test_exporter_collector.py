"""The collector turns seeded runs into exactly the documented metric values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from exporter import PipetrackCollector
from tests.test_exporter_support import (
    T0,
    finish_run,
    insert_run,
    proxy_to,
    registered,
    ts,
    via_proxy,
)
from tracker.errors import ConfigurationError

A = "DAILY_01_BDC_Locations"
B = "PREREQ_fetch"
DAY = timedelta(days=1)
MIB = 1024 * 1024


@pytest.fixture
def seeded(db):
    r1 = insert_run(db, task_name=A, execution_start=T0 - 3 * DAY)
    finish_run(db, r1, "FINISHED", T0 - 3 * DAY + timedelta(seconds=100))
    r2 = insert_run(db, task_name=A, execution_start=T0 - 2 * DAY)
    finish_run(db, r2, "FAILED", T0 - 2 * DAY + timedelta(seconds=50))
    r3 = insert_run(db, task_name=A, execution_start=T0 - DAY)
    finish_run(db, r3, "FINISHED", T0 - DAY + timedelta(seconds=300))
    insert_run(
        db,
        task_name=A,
        execution_start=T0 - timedelta(minutes=10),
        execution_status="STARTED",
        memory_mb=256,
        cpu_percent=50,
    )
    insert_run(
        db,
        task_name=A,
        execution_start=T0,
        execution_status="RUNNING",
        overall_percent_complete=25,
        subtask_percent_complete=50,
        current_subtask=2,
        total_subtasks=8,
        subtask_status="RUNNING",
        memory_mb=512,
        cpu_percent=150,
        last_update=T0 + timedelta(seconds=600),
        last_progress=T0 + timedelta(seconds=400),
    )
    insert_run(
        db,
        task_name=B,
        task_stage=None,
        execution_start=T0 - DAY,
        execution_end=T0 - DAY + timedelta(seconds=7),
        execution_status="CANCELLED",
    )
    return db


def test_seeded_runs_give_exact_values(seeded, db_target):
    with registered(db_target) as (registry, _):

        def value(name, task=A, stage="DAILY", **labels):
            return registry.get_sample_value(name, {"task": task, "task_stage": stage, **labels})

        for status in ("STARTED", "FINISHED", "FAILED", "CANCELLED"):
            assert value("pipetrack_task_last_run_status", status=status) == 0
        assert value("pipetrack_task_last_run_status", status="RUNNING") == 1
        assert value("pipetrack_task_running_runs") == 2
        assert value("pipetrack_task_overall_progress_ratio") == 0.25
        assert value("pipetrack_task_subtask_progress_ratio") == 0.5
        assert value("pipetrack_task_current_subtask") == 2
        assert value("pipetrack_task_subtasks_completed") == 1
        assert value("pipetrack_task_subtasks") == 8
        assert value("pipetrack_task_last_start_timestamp_seconds") == ts(T0)
        last_success = ts(T0 - DAY) + 300
        assert value("pipetrack_task_last_end_timestamp_seconds") == last_success
        assert value("pipetrack_task_last_success_timestamp_seconds") == last_success
        assert value("pipetrack_task_last_failure_timestamp_seconds") == ts(T0 - 2 * DAY) + 50
        assert value("pipetrack_task_last_duration_seconds") == 300
        assert value("pipetrack_task_last_heartbeat_timestamp_seconds") == ts(T0) + 600
        assert value("pipetrack_task_last_progress_timestamp_seconds") == ts(T0) + 400
        assert value("pipetrack_task_memory_bytes") == (512 + 256) * MIB
        assert value("pipetrack_task_cpu_ratio") == 2.0
        # 25 % done 400 s after the start: at its own rate 1600 s in all, blended with the
        # median of its FINISHED runs (100 s, 300 s) by progress: 0.25 * 1600 + 0.75 * 200.
        assert value("pipetrack_task_predicted_end_timestamp_seconds") == ts(T0) + 550
        assert value("pipetrack_task_runs_total", status="FINISHED") == 2
        assert value("pipetrack_task_runs_total", status="FAILED") == 1
        assert value("pipetrack_task_runs_total", status="CANCELLED") == 0
        assert value("pipetrack_task_recent_duration_seconds", quantile="0.5") == 200
        assert value("pipetrack_task_recent_duration_seconds", quantile="0.9") == 280
        assert value("pipetrack_task_recent_duration_seconds", quantile="1") == 300

        # A NULL stage is UNKNOWN; a task with nothing running has no current-run series.
        assert value("pipetrack_task_last_run_status", B, "UNKNOWN", status="CANCELLED") == 1
        assert value("pipetrack_task_running_runs", B, "UNKNOWN") == 0
        assert value("pipetrack_task_runs_total", B, "UNKNOWN", status="CANCELLED") == 1
        assert value("pipetrack_task_last_duration_seconds", B, "UNKNOWN") == 7
        assert value("pipetrack_task_last_success_timestamp_seconds", B, "UNKNOWN") is None
        assert value("pipetrack_task_overall_progress_ratio", B, "UNKNOWN") is None
        assert value("pipetrack_task_last_heartbeat_timestamp_seconds", B, "UNKNOWN") is None
        assert value("pipetrack_task_recent_duration_seconds", B, "UNKNOWN", quantile="0.5") is None

        assert registry.get_sample_value("pipetrack_database_up") == 1
        assert registry.get_sample_value("pipetrack_last_scrape_error") == 0
        assert registry.get_sample_value("pipetrack_scrape_duration_seconds") > 0
        from tracker import __version__

        assert (
            registry.get_sample_value("pipetrack_exporter_build_info", {"version": __version__})
            == 1
        )


def test_stage_label_follows_the_latest_run(db, db_target):
    insert_run(db, task_name=A, task_stage="DAILY", execution_start=T0 - DAY)
    insert_run(db, task_name=A, task_stage="ANNUAL_DEC", execution_start=T0)
    with registered(db_target) as (registry, _):
        assert (
            registry.get_sample_value(
                "pipetrack_task_running_runs", {"task": A, "task_stage": "ANNUAL_DEC"}
            )
            == 2
        )
        assert (
            registry.get_sample_value(
                "pipetrack_task_running_runs", {"task": A, "task_stage": "DAILY"}
            )
            is None
        )


def test_items_give_subtask_progress_when_no_percentage_is_reported(db, db_target):
    insert_run(
        db,
        subtask_items_total=200,
        subtask_items_complete=50,
        current_subtask=3,
        subtask_status="COMPLETED",
    )
    with registered(db_target) as (registry, _):
        labels = {"task": A, "task_stage": "DAILY"}
        assert registry.get_sample_value("pipetrack_task_subtask_progress_ratio", labels) == 0.25
        assert registry.get_sample_value("pipetrack_task_subtasks_completed", labels) == 3
        # No overall percentage yet: no progress ratio and no prediction.
        assert registry.get_sample_value("pipetrack_task_overall_progress_ratio", labels) is None
        assert (
            registry.get_sample_value("pipetrack_task_predicted_end_timestamp_seconds", labels)
            is None
        )


def test_counter_stays_monotonic_when_runs_are_archived(db, db_target):
    run = insert_run(db)
    finish_run(db, run, "FINISHED", T0 + timedelta(seconds=60))
    labels = {"task": A, "task_stage": "DAILY", "status": "FINISHED"}
    with registered(db_target) as (registry, _):
        assert registry.get_sample_value("pipetrack_task_runs_total", labels) == 1
        # The archiver moves the run to history: counters and last success stay.
        db.execute("SELECT ensure_history_partition(%s)", (T0,))
        db.execute("INSERT INTO pipeline_status_history SELECT * FROM pipeline_status")
        db.execute("DELETE FROM pipeline_status")
        assert registry.get_sample_value("pipetrack_task_runs_total", labels) == 1
        assert (
            registry.get_sample_value(
                "pipetrack_task_last_success_timestamp_seconds", {"task": A, "task_stage": "DAILY"}
            )
            == ts(T0) + 60
        )
        # The latest run is found in history, with its stage.
        assert (
            registry.get_sample_value(
                "pipetrack_task_last_run_status", {**labels, "status": "FINISHED"}
            )
            == 1
        )


def test_recent_durations_keep_the_last_20_finished_runs(db, db_target):
    for i in range(25):
        run = insert_run(db, execution_start=T0 + i * DAY)
        finish_run(db, run, "FINISHED", T0 + i * DAY + timedelta(seconds=i + 1))
    labels = {"task": A, "task_stage": "DAILY"}
    with registered(db_target) as (registry, _):
        # Durations 6..25 s remain: the 20 newest of 1..25.
        q = lambda quantile: registry.get_sample_value(  # noqa: E731
            "pipetrack_task_recent_duration_seconds", {**labels, "quantile": quantile}
        )
        assert q("1") == 25
        assert q("0.5") == 15.5
    (durations,) = db.execute(
        "SELECT recent_durations FROM pipeline_task_last_outcome WHERE task_name = %s", (A,)
    ).fetchone()
    assert durations == [float(s) for s in range(6, 26)]


def test_min_interval_reuses_the_last_read(db, db_target):
    with registered(db_target, min_interval=3600) as (registry, _):
        assert (
            registry.get_sample_value(
                "pipetrack_task_running_runs", {"task": A, "task_stage": "DAILY"}
            )
            is None
        )
        insert_run(db)
        # Within the interval the first read answers again.
        assert (
            registry.get_sample_value(
                "pipetrack_task_running_runs", {"task": A, "task_stage": "DAILY"}
            )
            is None
        )
    with registered(db_target, min_interval=0) as (registry, _):
        assert (
            registry.get_sample_value(
                "pipetrack_task_running_runs", {"task": A, "task_stage": "DAILY"}
            )
            == 1
        )


def test_registering_does_not_touch_the_database(admin_dsn, db_dsn):
    proxy = proxy_to(admin_dsn)
    proxy.start()
    try:
        registry = CollectorRegistry()
        collector = PipetrackCollector(via_proxy(db_dsn, proxy))
        registry.register(collector)
        assert proxy.accepted == 0
        assert registry.get_sample_value("pipetrack_database_up") == 1
        assert proxy.accepted == 1
        collector.close()
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_interval": -1}, "min interval"),
        ({"min_interval": float("nan")}, "min interval"),
        ({"statement_timeout": 0}, "statement timeout"),
    ],
)
def test_bad_settings_are_refused(db_target, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        PipetrackCollector(db_target, **kwargs)
