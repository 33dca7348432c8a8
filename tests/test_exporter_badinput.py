"""Whatever the rows hold, the exposition is valid text that parses back to the same values:
awkward task names, NULL in every nullable column, undeclared stages, a start in the future,
10,000 tasks."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from tests.test_exporter_support import insert_run, parse, registered

NAMES = [
    'say "hello"',
    "back\\slash\\",
    "new\nline\r\n",
    "tab\tand trailing space ",
    "ünïcødé ✓ 日本語 🚀",
    "{curly}=,\"'",
    "#comment-like # HELP x",
    "x" * 255,
]


# Control characters other than the newline reach the labels as visible stand-ins.
SHOWN = {
    "new\nline\r\n": "new\nline\u240d\n",
    "tab\tand trailing space ": "tab\u2409and trailing space ",
}


@pytest.mark.parametrize("name", NAMES)
def test_awkward_task_names_round_trip_through_the_exposition(db, db_target, name):
    insert_run(db, task_name=name, task_stage='stage with "quotes"\n')
    with registered(db_target) as (registry, _):
        samples = parse(registry)
    labels = (("task", SHOWN.get(name, name)), ("task_stage", 'stage with "quotes"\n'))
    assert samples[("pipetrack_task_running_runs", labels)] == 1


def test_nulls_in_every_nullable_column_render(db, db_target):
    # Only the NOT NULL columns: everything optional is NULL, in a running and an ended run.
    for status in ("RUNNING", "FINISHED", "FAILED", "CANCELLED", "STARTED"):
        db.execute(
            """INSERT INTO pipeline_status
                   (run_id, task_name, hostname, process_id, execution_start, execution_status)
               VALUES (gen_random_uuid(), %s, 'h', 1, now() - interval '1 hour', %s)""",
            (f"NULLS_{status}", status),
        )
    with registered(db_target) as (registry, _):
        samples = parse(registry)
    assert samples[("pipetrack_last_scrape_error", ())] == 0
    for status in ("RUNNING", "STARTED"):
        key = (("task", f"NULLS_{status}"), ("task_stage", "UNKNOWN"))
        assert samples[("pipetrack_task_running_runs", key)] == 1
        assert ("pipetrack_task_last_heartbeat_timestamp_seconds", key) in samples
        for absent in (
            "pipetrack_task_overall_progress_ratio",
            "pipetrack_task_subtask_progress_ratio",
            "pipetrack_task_subtasks",
            "pipetrack_task_memory_bytes",
            "pipetrack_task_cpu_ratio",
            "pipetrack_task_predicted_end_timestamp_seconds",
        ):
            assert (absent, key) not in samples
    # A final status without an end time ends at its last update.
    key = (("task", "NULLS_FINISHED"), ("task_stage", "UNKNOWN"))
    assert samples[("pipetrack_task_last_duration_seconds", key)] > 0
    assert all(math.isfinite(v) for v in samples.values())


def test_undeclared_and_empty_stages(db, db_target):
    insert_run(db, task_name="a", task_stage="NOBODY_DECLARED_THIS")
    insert_run(db, task_name="b", task_stage="")
    with registered(db_target) as (registry, _):
        samples = parse(registry)
    assert (
        samples[
            ("pipetrack_task_running_runs", (("task", "a"), ("task_stage", "NOBODY_DECLARED_THIS")))
        ]
        == 1
    )
    assert samples[("pipetrack_task_running_runs", (("task", "b"), ("task_stage", "UNKNOWN")))] == 1


def test_a_start_in_the_future_gives_finite_values(db, db_target):
    future = datetime.now(timezone.utc) + timedelta(days=2)
    insert_run(
        db,
        task_name="future",
        execution_start=future,
        overall_percent_complete=40,
        last_progress=future - timedelta(hours=1),
    )
    with registered(db_target) as (registry, _):
        samples = parse(registry)
    key = (("task", "future"), ("task_stage", "DAILY"))
    assert samples[("pipetrack_task_last_start_timestamp_seconds", key)] == future.timestamp()
    # Progress reported "before" the start counts as no time elapsed: predicted = start.
    assert samples[("pipetrack_task_predicted_end_timestamp_seconds", key)] == future.timestamp()


def test_ten_thousand_tasks_render_and_parse(db, db_target):
    db.execute(
        """INSERT INTO pipeline_status
               (run_id, task_name, task_stage, hostname, process_id, execution_start,
                execution_end, execution_status, overall_percent_complete, memory_mb)
           SELECT gen_random_uuid(), 'TASK_' || i, 'DAILY', 'h', i,
                  now() - interval '1 day', CASE WHEN i % 2 = 0 THEN now() END,
                  CASE WHEN i % 2 = 0 THEN 'FINISHED' ELSE 'RUNNING' END,
                  CASE WHEN i % 2 = 1 THEN 50 END, 100
           FROM generate_series(1, 10000) AS i"""
    )
    with registered(db_target) as (registry, _):
        samples = parse(registry)
    status = [k for k in samples if k[0] == "pipetrack_task_last_run_status"]
    assert len(status) == 5 * 10_000
    running = [k for k in samples if k[0] == "pipetrack_task_overall_progress_ratio"]
    assert len(running) == 5_000
    assert (
        samples[
            (
                "pipetrack_task_runs_total",
                (("status", "FINISHED"), ("task", "TASK_2"), ("task_stage", "DAILY")),
            )
        ]
        == 1
    )
