"""Stalls, the predicted finish blended with history, and declared tasks, as the exporter
serves them (docs/metrics.md, "Rules behind the values")."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from exporter._schedule import Declared, missed_start, started_before_dependency
from tests.test_exporter_support import insert_run, registered
from tracker._ops import registry as declared_tasks
from tracker._ops.eta import ProgressCurve, predict_total
from tracker._ops.registry import DeclaredTask

TASK = "DAILY_01_BDC_Locations"


def labels(task: str = TASK, stage: str = "DAILY") -> dict[str, str]:
    return {"task": task, "task_stage": stage}


def now_of(db) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    return row[0]


def declare(db, *tasks: DeclaredTask, synced_days_ago: int = 0) -> None:
    declared_tasks.sync(db, list(tasks))
    if synced_days_ago:
        db.execute(
            "UPDATE pipeline_task_schedule SET synced_at = now() - %s",
            (timedelta(days=synced_days_ago),),
        )


# -- stalls ----------------------------------------------------------------------------------
def test_a_heartbeating_run_whose_progress_stood_still_past_the_threshold_is_stalled(db, db_target):
    now = now_of(db)
    insert_run(
        db,
        execution_start=now - timedelta(hours=2),
        last_update=now,
        last_progress=now - timedelta(minutes=40),
    )
    insert_run(
        db,
        task_name="DAILY_02_moving",
        execution_start=now - timedelta(hours=2),
        last_update=now,
        last_progress=now - timedelta(minutes=1),
    )
    # Silent for five minutes: lost, which is not stalled however old its progress.
    insert_run(
        db,
        task_name="DAILY_03_lost",
        execution_start=now - timedelta(hours=3),
        last_update=now - timedelta(minutes=5),
        last_progress=now - timedelta(hours=2),
    )
    # No progress ever: counts from the start.
    insert_run(
        db,
        task_name="DAILY_04_never",
        execution_start=now - timedelta(hours=1),
        last_update=now,
        last_progress=None,
    )
    with registered(db_target) as (registry, _):

        def value(task: str) -> float | None:
            return registry.get_sample_value("pipetrack_task_stalled", labels(task))

        assert value(TASK) == 1
        assert value("DAILY_02_moving") == 0
        assert value("DAILY_03_lost") == 0
        assert value("DAILY_04_never") == 1
        assert registry.get_sample_value("pipetrack_task_stall_threshold_seconds", labels()) == 1800


def test_the_stall_threshold_comes_from_the_flag_and_a_declared_task_overrides_it(db, db_target):
    now = now_of(db)
    insert_run(
        db,
        execution_start=now - timedelta(hours=2),
        last_update=now,
        last_progress=now - timedelta(minutes=40),
    )
    insert_run(
        db,
        task_name="DAILY_02_other",
        execution_start=now - timedelta(hours=2),
        last_update=now,
        last_progress=now - timedelta(minutes=40),
    )
    declare(db, DeclaredTask(name=TASK, stage="DAILY", stall_after=timedelta(hours=1)))
    with registered(db_target, stall_after=600.0) as (registry, _):
        assert registry.get_sample_value("pipetrack_task_stalled", labels()) == 0
        assert registry.get_sample_value("pipetrack_task_stall_threshold_seconds", labels()) == 3600
        assert registry.get_sample_value("pipetrack_task_stalled", labels("DAILY_02_other")) == 1
        assert (
            registry.get_sample_value(
                "pipetrack_task_stall_threshold_seconds", labels("DAILY_02_other")
            )
            == 600
        )


def test_the_active_runs_view_flags_lost_and_stalled_runs_apart(db):
    now = now_of(db)
    insert_run(
        db,
        execution_start=now - timedelta(hours=2),
        last_update=now,
        last_progress=now - timedelta(minutes=40),
    )
    insert_run(
        db,
        task_name="DAILY_02_lost",
        execution_start=now - timedelta(hours=3),
        last_update=now - timedelta(minutes=5),
        last_progress=now - timedelta(hours=2),
    )
    insert_run(
        db,
        task_name="DAILY_03_fine",
        execution_start=now - timedelta(hours=1),
        last_update=now,
        last_progress=now,
    )
    insert_run(
        db,
        task_name="DAILY_04_done",
        execution_status="FINISHED",
        execution_start=now - timedelta(hours=1),
        execution_end=now,
    )
    rows = {
        task: (lost, stalled, heartbeat.total_seconds(), progress.total_seconds())
        for task, lost, stalled, heartbeat, progress in db.execute(
            "SELECT task_name, lost, stalled, heartbeat_age, progress_age FROM pipeline_active_runs"
        )
    }
    assert set(rows) == {TASK, "DAILY_02_lost", "DAILY_03_fine"}
    assert rows[TASK][:2] == (False, True)
    assert rows["DAILY_02_lost"][:2] == (True, False)
    assert rows["DAILY_03_fine"][:2] == (False, False)
    assert rows[TASK][3] == pytest.approx(2400, abs=1)
    declare(db, DeclaredTask(name=TASK, stage="DAILY", stall_after=timedelta(hours=1)))
    stalled = db.execute(
        "SELECT stalled FROM pipeline_active_runs WHERE task_name = %s", (TASK,)
    ).fetchone()
    assert stalled == (False,)


# -- predicted finish -----------------------------------------------------------------------
def finished_with_subtasks(db, start: datetime, shares: tuple[float, ...], total: float) -> None:
    run = insert_run(
        db,
        execution_status="FINISHED",
        execution_start=start,
        execution_end=start + timedelta(seconds=total),
        total_subtasks=len(shares),
    )
    passed = 0.0
    for index, share in enumerate(shares, start=1):
        db.execute(
            "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
            " started_at, ended_at) VALUES (%s, %s, %s, 'COMPLETED', %s, %s)",
            (
                run,
                index,
                f"step {index}",
                start + timedelta(seconds=passed),
                start + timedelta(seconds=passed + share * total),
            ),
        )
        passed += share * total


def test_the_predicted_end_blends_the_runs_rate_through_the_subtask_curve_with_history(
    db, db_target
):
    now = now_of(db)
    # Past runs: the first of four subtasks takes 70 % of the time.
    shares = (0.7, 0.1, 0.1, 0.1)
    for days, total in ((3, 1000.0), (2, 1200.0), (1, 1100.0)):
        finished_with_subtasks(db, now - timedelta(days=days), shares, total)
    start = now - timedelta(seconds=800)
    insert_run(
        db,
        execution_start=start,
        last_update=now,
        last_progress=now,
        overall_percent_complete=25,
        total_subtasks=4,
        current_subtask=2,
    )
    with registered(db_target) as (registry, _):
        value = registry.get_sample_value(
            "pipetrack_task_predicted_end_timestamp_seconds", labels()
        )
    curve = ProgressCurve.from_runs([[(0.25, 0.7), (0.5, 0.8), (0.75, 0.9)]] * 3)
    expected = predict_total(800.0, 0.25, [1000.0, 1200.0, 1100.0], curve)
    assert expected is not None
    assert value == pytest.approx(start.timestamp() + expected, abs=0.01)
    # The curve matters: 25 % reached at 800 s means about 1143 s in all, not 3200 s.
    rate_blend = predict_total(800.0, 0.25, [1000.0, 1200.0, 1100.0])
    assert rate_blend is not None
    assert abs(expected - rate_blend) > 100


def test_without_progress_the_prediction_is_the_median_of_recent_finished_runs(db, db_target):
    now = now_of(db)
    for days, total in ((3, 100), (2, 300), (1, 200)):
        start = now - timedelta(days=days)
        insert_run(
            db,
            execution_status="FINISHED",
            execution_start=start,
            execution_end=start + timedelta(seconds=total),
        )
    start = now - timedelta(seconds=30)
    insert_run(db, execution_start=start, last_update=now)
    insert_run(db, task_name="DAILY_09_new", execution_start=start, last_update=now)
    with registered(db_target) as (registry, _):
        assert registry.get_sample_value(
            "pipetrack_task_predicted_end_timestamp_seconds", labels()
        ) == pytest.approx(start.timestamp() + 200, abs=0.01)
        # Neither progress nor history: nothing to say.
        assert (
            registry.get_sample_value(
                "pipetrack_task_predicted_end_timestamp_seconds", labels("DAILY_09_new")
            )
            is None
        )


# -- declared tasks: pure rules --------------------------------------------------------------
def declared(**changes) -> Declared:
    base = Declared(TASK, "DAILY", "0 2 * * *", "UTC", 900.0, None, (), None, 0.0)
    import dataclasses

    return dataclasses.replace(base, **changes)


def test_a_start_counts_as_missed_only_once_the_grace_is_over_without_a_run():
    before = 1_000_000.0
    task = declared(previous_start=before)
    assert not missed_start(task, before + 899)
    assert missed_start(task, before + 901)
    assert not missed_start(declared(previous_start=before, started_in_grace=1), before + 901)
    # Declared after that start: not missed.
    assert not missed_start(declared(previous_start=before, synced_at=before + 1), before + 901)
    assert not missed_start(declared(schedule=None), before + 901)


def test_a_run_started_before_its_dependency_succeeded_is_flagged():
    day = datetime(2026, 3, 14, tzinfo=timezone.utc)
    run_start = (day + timedelta(hours=2)).timestamp()
    upstream = declared(task="PREREQ_01", schedule="30 1 * * *")
    by_hand = declared(task="PREREQ_02", schedule=None)
    success = {"PREREQ_01": (day + timedelta(hours=1, minutes=45)).timestamp()}
    assert not started_before_dependency(run_start, [upstream], success)
    # It succeeded only after the run had started.
    late = {"PREREQ_01": run_start + 60}
    assert started_before_dependency(run_start, [upstream], late)
    # Its latest success is yesterday's: not since its own 01:30 start today.
    stale = {"PREREQ_01": (day - timedelta(hours=20)).timestamp()}
    assert started_before_dependency(run_start, [upstream], stale)
    # The same with its expected start around now already known (the exporter's usual case).
    known = declared(
        task="PREREQ_01",
        schedule="30 1 * * *",
        previous_start=(day + timedelta(hours=1, minutes=30)).timestamp(),
    )
    assert not started_before_dependency(run_start, [known], success)
    assert started_before_dependency(run_start, [known], stale)
    # Never succeeded.
    assert started_before_dependency(run_start, [by_hand], success)
    assert not started_before_dependency(run_start, [by_hand], {"PREREQ_02": run_start - 3600})


# -- declared tasks: served ------------------------------------------------------------------
def test_declared_tasks_serve_their_schedule_grace_and_limits(db, db_target):
    now = now_of(db)
    task = DeclaredTask(
        name=TASK,
        stage="DAILY",
        schedule="*/10 * * * *",
        start_grace=timedelta(minutes=3),
        max_duration=timedelta(hours=3),
    )
    declare(db, task, DeclaredTask(name="STATIC_01_lookup", stage="STATIC"))
    with registered(db_target) as (registry, _):

        def value(name: str, task_name: str = TASK, stage: str = "DAILY") -> float | None:
            return registry.get_sample_value(name, labels(task_name, stage))

        before = value("pipetrack_task_last_expected_start_timestamp_seconds")
        after = value("pipetrack_task_next_expected_start_timestamp_seconds")
        assert before == task.previous_start(now).timestamp() or before == pytest.approx(
            task.previous_start(now + timedelta(seconds=5)).timestamp()
        )
        assert before is not None
        assert after == before + 600
        assert value("pipetrack_task_start_grace_seconds") == 180
        assert value("pipetrack_task_max_duration_seconds") == 10800
        assert value("pipetrack_task_runs_started_since_expected_start") == 0
        # A declared task that never ran is known, under its declared stage.
        assert value("pipetrack_task_running_runs", "STATIC_01_lookup", "STATIC") == 0
        assert value("pipetrack_task_start_grace_seconds", "STATIC_01_lookup", "STATIC") == 900
        assert (
            value(
                "pipetrack_task_next_expected_start_timestamp_seconds", "STATIC_01_lookup", "STATIC"
            )
            is None
        )
        assert value("pipetrack_task_max_duration_seconds", "STATIC_01_lookup", "STATIC") is None


def test_a_daily_task_without_a_run_in_its_grace_missed_its_start_and_two_runs_ran_twice(
    db, db_target
):
    now = now_of(db)
    # Its last expected start is more than the (zero) grace ago, whatever the time of day.
    cron = DeclaredTask(name=TASK, stage="DAILY", schedule="0 0 * * *")
    expected = cron.previous_start(now)
    assert expected is not None
    declare(
        db,
        DeclaredTask(name=TASK, stage="DAILY", schedule="0 0 * * *", start_grace=timedelta(0)),
        DeclaredTask(
            name="DAILY_02_twice",
            stage="DAILY",
            schedule="0 0 * * *",
            start_grace=timedelta(hours=23, minutes=59),
        ),
        synced_days_ago=3,
    )
    # A run the day before does not count; two runs of the other since midnight do.
    insert_run(
        db,
        execution_status="FINISHED",
        execution_start=expected - timedelta(hours=20),
        execution_end=expected - timedelta(hours=19),
    )
    for minutes in (0, 1):
        insert_run(
            db,
            task_name="DAILY_02_twice",
            execution_status="FINISHED",
            execution_start=expected + timedelta(minutes=minutes) - timedelta(seconds=0),
            execution_end=expected + timedelta(minutes=minutes, seconds=30),
        )
    with registered(db_target) as (registry, _):
        if (now - expected).total_seconds() > 1:
            assert registry.get_sample_value("pipetrack_task_missed_start", labels()) == 1
        assert (
            registry.get_sample_value("pipetrack_task_missed_start", labels("DAILY_02_twice")) == 0
        )
        assert (
            registry.get_sample_value(
                "pipetrack_task_runs_started_since_expected_start", labels("DAILY_02_twice")
            )
            == 2
        )
        assert (
            registry.get_sample_value("pipetrack_task_runs_started_since_expected_start", labels())
            == 0
        )


def test_a_running_task_started_before_its_dependency_finished_is_flagged(db, db_target):
    now = now_of(db)
    declare(
        db,
        DeclaredTask(name="PREREQ_01_download", stage="PREREQ"),
        DeclaredTask(name=TASK, stage="DAILY", depends_on=("PREREQ_01_download",)),
        DeclaredTask(name="DAILY_02_after", stage="DAILY", depends_on=("PREREQ_01_download",)),
    )
    insert_run(
        db,
        task_name="PREREQ_01_download",
        task_stage="PREREQ",
        execution_status="FINISHED",
        execution_start=now - timedelta(minutes=30),
        execution_end=now - timedelta(minutes=10),
    )
    insert_run(db, execution_start=now - timedelta(minutes=20), last_update=now)
    insert_run(
        db, task_name="DAILY_02_after", execution_start=now - timedelta(minutes=5), last_update=now
    )
    with registered(db_target) as (registry, _):
        assert registry.get_sample_value("pipetrack_task_started_before_dependency", labels()) == 1
        assert (
            registry.get_sample_value(
                "pipetrack_task_started_before_dependency", labels("DAILY_02_after")
            )
            == 0
        )
        assert (
            registry.get_sample_value(
                "pipetrack_task_started_before_dependency", labels("PREREQ_01_download", "PREREQ")
            )
            is None
        )


def test_runs_of_undeclared_tasks_get_no_schedule_series(db, db_target):
    insert_run(db, task_name=f"DAILY_{uuid.uuid4().hex[:6]}")
    with registered(db_target) as (registry, collector):
        names = {f.name for f in collector.collect()}
        families = {f.name: f for f in registry.collect()}
    assert "pipetrack_task_start_grace" not in names
    assert families["pipetrack_task_start_grace_seconds"].samples == []
    assert families["pipetrack_task_missed_start"].samples == []


def test_a_tasks_file_declares_a_stall_threshold_and_refuses_a_bad_one(tmp_path):
    from tracker.errors import ConfigurationError

    good = tmp_path / "tasks.toml"
    good.write_text('[tasks.DAILY_01_x]\nschedule = "0 2 * * *"\nstall_after = "2h"\n')
    (task,) = declared_tasks.load(good)
    assert task.stall_after == timedelta(hours=2)
    bad = tmp_path / "bad.toml"
    bad.write_text('[tasks.DAILY_01_x]\nstall_after = "0s"\n')
    with pytest.raises(ConfigurationError, match="stall_after must be positive"):
        declared_tasks.load(bad)


def test_curve_points_mark_the_kth_leaf_end_at_k_over_the_declared_total():
    from tracker._ops.eta_history import curve_points

    assert curve_points(4, 100.0, [70.0, 80.0, 90.0]) == [(0.25, 0.7), (0.5, 0.8), (0.75, 0.9)]
    # More leaf ends than declared subtasks (nested ones): the leaves are the total.
    assert curve_points(1, 100.0, [50.0, 100.0]) == [(0.5, 0.5), (1.0, 1.0)]
    assert curve_points(None, 0.0, [1.0]) == []


def test_the_curve_reads_leaf_subtasks_of_recent_finished_runs_only(db):
    from tracker._ops.eta_history import read_curves

    now = now_of(db)
    start = now - timedelta(days=1)
    run = insert_run(
        db,
        execution_status="FINISHED",
        execution_start=start,
        execution_end=start + timedelta(seconds=100),
        total_subtasks=2,
    )
    rows = [
        (1, None, 0, 100),  # the parent: not a leaf
        (2, 1, 0, 80),
        (3, 1, 80, 100),
    ]
    for index, parent, begin, end in rows:
        db.execute(
            "INSERT INTO pipeline_subtask (run_id, subtask_index, parent_index, subtask_name,"
            " subtask_status, started_at, ended_at) VALUES (%s, %s, %s, 's', 'COMPLETED', %s, %s)",
            (run, index, parent, start + timedelta(seconds=begin), start + timedelta(seconds=end)),
        )
    with db.cursor() as cur:
        curves = read_curves(cur, [TASK, "DAILY_99_unknown"])
    assert set(curves) == {TASK}
    assert curves[TASK].marks == (0.5,)
    assert curves[TASK].time_fractions == (0.8,)


def test_a_declared_row_with_a_broken_schedule_costs_only_its_own_schedule_series(
    db, db_target, caplog
):
    import logging

    insert_run(db)
    db.execute(
        "INSERT INTO pipeline_task_schedule (task_name, task_stage, schedule, timezone)"
        " VALUES (%s, 'DAILY', 'not cron', 'UTC'), ('DAILY_02_zone', 'DAILY', '0 2 * * *',"
        " 'Mars/Olympus')",
        (TASK,),
    )
    caplog.set_level(logging.WARNING, logger="exporter")
    with registered(db_target) as (registry, _):
        for _ in range(2):
            assert registry.get_sample_value("pipetrack_last_scrape_error") == 0
            assert registry.get_sample_value("pipetrack_task_running_runs", labels()) == 1
            assert registry.get_sample_value("pipetrack_task_start_grace_seconds", labels()) == 900
            assert (
                registry.get_sample_value(
                    "pipetrack_task_next_expected_start_timestamp_seconds", labels()
                )
                is None
            )
    warnings = [r.getMessage() for r in caplog.records if "cannot use schedule" in r.getMessage()]
    assert len(warnings) == 2  # once per broken row, not once per scrape
