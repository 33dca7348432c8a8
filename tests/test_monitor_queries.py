"""The monitor's query layer against a seeded pipeline: what each view reads and derives."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pytest

from monitor.filters import failure_filter, history_filter, now_filter
from monitor.queries import (
    dependency_graph,
    failures,
    latest_runs,
    run_detail,
    run_samples,
    task_history,
)
from monitor.queries.dependencies import critical_path
from monitor.queries.now import NowFilter
from tests.monitor_support import (
    CANCELLED,
    CHILD,
    CRITICAL,
    DECLARED,
    FAILED,
    LOST,
    NOW,
    OVERDUE_TASK,
    RUNNING,
    insert_run,
    seed_pipeline,
)
from tracker.errors import ConfigurationError


@pytest.fixture
def seeded(db):
    seed_pipeline(db)
    return db


def statuses(view):
    return {row["task_name"]: (row["execution_status"], row["condition"]) for row in view.runs}


def test_now_shows_each_tasks_latest_run_with_its_condition(seeded):
    view = latest_runs(seeded)
    found = statuses(view)
    assert found["DAILY_01_extract"] == ("RUNNING", None)
    assert found["PERIODIC_02_silent"] == ("RUNNING", "LOST")
    assert found["PERIODIC_01_reindex"] == ("FAILED", None)
    assert found["STATIC_01_maps"] == ("CANCELLED", None)
    # Declared, scheduled, never run: shown as overdue with why.
    assert found[OVERDUE_TASK] == (None, "OVERDUE")
    overdue = next(r for r in view.runs if r["task_name"] == OVERDUE_TASK)
    assert overdue["overdue"].startswith("missed its start at ")
    running = next(r for r in view.runs if r["run_id"] == RUNNING)
    # 20 % after 120 s. The task's curve (its first of two subtasks ends at 75 % of the time)
    # puts 20 % at 30 % of the time: 400 s in all; blended with the 600 s history,
    # 0.2 * 400 + 0.8 * 600 = 560 s, 440 s left.
    assert 430 <= running["eta_seconds"] <= 445
    stages = [stage for stage, _ in view.by_stage()]
    assert stages == ["STATIC", "PREREQ", "DAILY", "ANNUAL_DEC", "PERIODIC"]


def test_now_filters_narrow_by_stage_status_glob_host_since_and_problems(seeded):
    def names(**filters):
        return sorted(r["task_name"] for r in latest_runs(seeded, now_filter(**filters)).runs)

    assert names(stages=["static"]) == ["STATIC_01_maps"]
    assert names(statuses=["LOST"]) == ["PERIODIC_02_silent"]
    assert names(statuses=["running"], task="DAILY_0?_e*") == ["DAILY_01_extract"]
    assert names(hosts=["nowhere"]) == []
    assert names(since="90m") == sorted(
        ["DAILY_01_extract", "DAILY_01_extract_part", "PERIODIC_02_silent"]
        + [n for n in names() if n.startswith("DAILY_09_")]
    )
    assert names(problems=True) == sorted(
        [OVERDUE_TASK, "PERIODIC_01_reindex", "PERIODIC_02_silent"]
        + [n for n in names() if n.startswith("DAILY_09_")]
    )
    # A glob's % and _ are literal characters, not LIKE wildcards.
    assert names(task="DAILY%") == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"stages": ["NIGHTLY"]}, "stage: unknown value"),
        ({"statuses": ["DONE"]}, "status: unknown value"),
        ({"task": "a\x00b"}, "NUL"),
        ({"task": "x" * 300}, "longer than 255"),
        ({"since": "yesterday"}, "neither a time"),
        ({"since": "nan"}, "neither a time"),
        ({"hosts": ["h\x00"]}, "NUL"),
    ],
)
def test_bad_now_filters_are_refused_with_a_clear_message(filters, message):
    with pytest.raises(ConfigurationError, match=message):
        now_filter(**filters)


def test_history_filters_refuse_bad_limits_and_statuses():
    with pytest.raises(ConfigurationError, match="limit must be 1 to 1000"):
        history_filter(limit="0")
    with pytest.raises(ConfigurationError, match="whole number"):
        history_filter(limit="NaN")
    with pytest.raises(ConfigurationError, match="status: unknown"):
        history_filter(statuses=["LOST"])
    with pytest.raises(ConfigurationError, match="outcome: unknown"):
        failure_filter(outcomes=["FINISHED"])


def test_run_detail_has_subtasks_relations_and_a_redacted_environment(seeded):
    detail = run_detail(seeded, RUNNING)
    assert detail is not None
    assert detail.run["task_name"] == "DAILY_01_extract"
    assert detail.run["environment"] == {
        "LANG": "C.UTF-8",
        "DB_PASSWORD": "****",
        "URL": "postgresql://u:****@h/db",
    }
    assert [s["subtask_name"] for s in detail.subtasks] == ["load"]
    assert [c["run_id"] for c in detail.children] == [CHILD]
    assert detail.parent is None
    assert run_detail(seeded, CHILD).parent["run_id"] == RUNNING
    assert detail.samples == []  # a run without samples
    assert run_detail(seeded, uuid.uuid4()) is None


def test_run_samples_returns_every_numeric_series_a_sample_has(seeded):
    # sql/0010 made the table: a run without samples has none; a NULL figure is no series.
    assert run_samples(seeded, RUNNING) == []
    seeded.execute(
        "INSERT INTO pipeline_run_sample (run_id, sampled_at, rss_bytes, cpu_percent)"
        " VALUES (%s, %s, 1000, 12.5), (%s, %s, 2000, 50)",
        (RUNNING, NOW - timedelta(seconds=30), RUNNING, NOW),
    )
    samples = run_samples(seeded, RUNNING)
    assert samples == [
        {"t": (NOW - timedelta(seconds=30)).timestamp(), "rss_bytes": 1000.0, "cpu_percent": 12.5},
        {"t": NOW.timestamp(), "rss_bytes": 2000.0, "cpu_percent": 50.0},
    ]


def test_task_history_compares_runs_with_the_typical_duration_and_finds_the_bottleneck(seeded):
    history = task_history(seeded, "DAILY_01_extract")
    assert [r["execution_status"] for r in history.runs] == ["RUNNING", "FINISHED", "FINISHED"]
    assert history.typical_seconds == 600
    assert history.outcomes == {"FINISHED": 2}
    assert [s.name for s in history.subtasks] == ["load", "write"]
    load = history.subtasks[0]
    assert (load.runs, load.median_seconds, load.max_seconds) == (3, 450, 450)
    assert history.durations["write"] == [None, 150.0, 150.0]
    only = task_history(seeded, "DAILY_01_extract", history_filter(statuses=["FINISHED"], limit=1))
    assert len(only.runs) == 1
    assert task_history(seeded, "NO_SUCH_TASK").runs == []


def test_dependencies_mark_the_critical_path_of_the_last_full_run(seeded):
    graph = dependency_graph(seeded)
    assert graph.critical_path == CRITICAL
    assert graph.critical_seconds == 1200
    nodes = {n.task: n for n in graph.nodes}
    assert set(nodes) == {*DECLARED, OVERDUE_TASK}
    assert [nodes[t].layer for t in CRITICAL] == [0, 1, 2, 3]
    assert nodes["DAILY_01_extract"].status == "RUNNING"
    assert nodes[OVERDUE_TASK].status == "OVERDUE"
    assert {(e.source, e.target) for e in graph.edges if e.critical} == set(
        itertools.pairwise(CRITICAL)
    )
    daily = next(s for s in graph.stages if s.stage == "DAILY")
    assert daily.tasks == 4


def test_critical_path_survives_a_cycle_and_an_empty_graph():
    deps = {"a": ("c",), "b": ("a",), "c": ("b",), "d": ()}
    assert critical_path(["d"], deps, {"d": 5.0}) == (["d"], 5.0)
    assert critical_path([], {}, {}) == ([], 0.0)


def test_failures_are_grouped_by_error_with_numbers_folded(seeded):
    found = failures(seeded)
    groups = {(g["outcome"], g["error_key"]): g for g in found.groups}
    disk = groups["FAILED", "exited with code N: disk full after N rows"]
    assert disk["runs"] == 2
    assert disk["tasks"] == ["PERIODIC_01_reindex"]
    assert disk["recent_runs"][0] == FAILED
    assert groups["LOST", "lost: no heartbeat (not reaped yet)"]["recent_runs"] == [LOST]
    assert groups["CANCELLED", "cancelled by SIGTERM"]["recent_runs"] == [CANCELLED]
    only = failures(seeded, failure_filter(outcomes=["cancelled"]))
    assert [g["outcome"] for g in only.groups] == ["CANCELLED"]
    assert failures(seeded, failure_filter(since="2000-01-01", until="2000-01-02")).groups == []


def test_a_reaped_run_counts_as_lost(db):
    insert_run(
        db,
        task_name="DAILY_01",
        execution_status="FAILED",
        execution_start=NOW - timedelta(hours=1),
        execution_end=NOW,
        error_message="lost: no heartbeat for 75 s (since x); process 12 on h is gone",
    )
    [group] = failures(db).groups
    assert group["outcome"] == "LOST"
    assert group["error_key"] == "lost: no heartbeat for N s (since x); process N on h is gone"


def test_every_view_answers_for_an_empty_database(db):
    assert latest_runs(db).runs == []
    assert latest_runs(db, NowFilter(problems=True)).runs == []
    assert task_history(db, "X").runs == []
    graph = dependency_graph(db)
    assert (graph.nodes, graph.critical_path) == ([], [])
    assert failures(db).groups == []
