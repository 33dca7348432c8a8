"""The Pipeline overview dashboard: what runs now, the latest status of every task, failures."""

from __future__ import annotations

from _grafana import (
    JSON,
    LOST_AFTER_SECONDS,
    PERCENT_BAR,
    RATIO,
    RED_AT_ONE,
    STAGE,
    Board,
    by_name,
    failure_annotation,
    merge_and_rename,
    prom,
    sql,
    standard_variables,
    status_mappings,
    task_link,
    thresholds,
    trace_link,
)


def overview() -> JSON:
    b = Board(
        "pipetrack-overview",
        "pipetrack / Pipeline overview",
        "What runs now and how far it is, the latest status of every task, and what failed.",
        [*standard_variables(), STAGE],
    )
    b.annotations.append(failure_annotation(""))
    b.row("Now")
    stats = [
        ("Running runs", "Runs now STARTED or RUNNING.", "sum(pipetrack_task_running_runs)", None),
        (
            "Latest run failed",
            "Tasks whose latest run ended FAILED (PipetrackRunFailed).",
            'count(pipetrack_task_last_run_status{status="FAILED"} == 1) or vector(0)',
            RED_AT_ONE,
        ),
        (
            "Lost runs",
            f"Running runs without a heartbeat for over {LOST_AFTER_SECONDS} s (PipetrackRunLost).",
            f"count(task:pipetrack_heartbeat_age_seconds > {LOST_AFTER_SECONDS}) or vector(0)",
            RED_AT_ONE,
        ),
        (
            "Too long",
            "Running runs past twice their median and their longest recent run.",
            "count(task:pipetrack_run_age_seconds > on (task, task_stage) "
            "task:pipetrack_long_run_threshold_seconds) or vector(0)",
            thresholds((None, "green"), (1, "orange")),
        ),
        (
            "Overdue tasks",
            "Tasks without a success within their stage's window (PipetrackTaskNoRecentSuccess).",
            "count(task:pipetrack_last_success_age_seconds > on (task, task_stage) "
            "task:pipetrack_success_window_seconds) or vector(0)",
            RED_AT_ONE,
        ),
        (
            "Database",
            "1 while the exporter reads PostgreSQL; 0 means every figure here is stale.",
            "min(pipetrack_database_up)",
            thresholds((None, "red"), (1, "green")),
        ),
    ]
    for title, description, expr, steps in stats:
        b.add(
            "stat",
            title,
            description,
            [prom(expr, instant=True)],
            unit="none",
            size=(4, 4),
            steps=steps or thresholds((None, "blue")),
            options={
                "colorMode": "background",
                "graphMode": "none",
                "reduceOptions": {"calcs": ["lastNotNull"]},
            },
        )

    b.row("Running now")
    b.add(
        "bargauge",
        "Overall progress",
        "Progress of each running run across all its subtasks (completed subtasks plus the "
        "current one's fraction, over the total).",
        [
            prom(
                'pipetrack_task_overall_progress_ratio{task_stage=~"$stage"}',
                "{{task}}",
                instant=True,
            )
        ],
        unit="percentunit",
        size=(12, 9),
        minmax=RATIO,
        steps=thresholds((None, "blue")),
        options={**PERCENT_BAR, "reduceOptions": {"calcs": ["lastNotNull"]}},
    )
    b.add(
        "bargauge",
        "Current subtask progress",
        "Progress of each running run within the subtask it is in now.",
        [
            prom(
                'pipetrack_task_subtask_progress_ratio{task_stage=~"$stage"}',
                "{{task}}",
                instant=True,
            )
        ],
        unit="percentunit",
        size=(12, 9),
        minmax=RATIO,
        steps=thresholds((None, "purple")),
        options={**PERCENT_BAR, "reduceOptions": {"calcs": ["lastNotNull"]}},
    )
    b.add(
        "table",
        "Running runs: progress and ETA",
        "One row per task with a running run: progress, subtasks done, how long it has run and "
        "the predicted time left (from its progress rate; empty before any progress).",
        [
            prom('task:pipetrack_run_age_seconds{task_stage=~"$stage"}', table=True),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_overall_progress_ratio{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_subtasks_completed{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                'max by (task, task_stage) (pipetrack_task_subtasks{task_stage=~"$stage"})',
                table=True,
            ),
            prom('task:pipetrack_eta_seconds{task_stage=~"$stage"}', table=True),
            prom('task:pipetrack_heartbeat_age_seconds{task_stage=~"$stage"}', table=True),
        ],
        unit="short",
        size=(24, 8),
        transformations=merge_and_rename(
            {
                "task_stage": "stage",
                "Value #A": "running for",
                "Value #B": "overall",
                "Value #C": "subtasks done",
                "Value #D": "subtasks",
                "Value #E": "time left",
                "Value #F": "heartbeat age",
            }
        ),
        overrides=[
            by_name("running for", unit="dtdurations"),
            by_name("time left", unit="dtdurations"),
            by_name(
                "heartbeat age",
                unit="s",
                thresholds=thresholds((None, "green"), (LOST_AFTER_SECONDS, "red")),
                custom_cellOptions={"type": "color-text"},
            ),
            by_name(
                "overall",
                unit="percentunit",
                min=0,
                max=1,
                custom_cellOptions={"type": "gauge", "mode": "basic"},
            ),
            task_link(),
        ],
    )
    b.add(
        "table",
        "Running runs (PostgreSQL)",
        "Every run now STARTED or RUNNING, from the canonical record: where it runs, its current "
        "subtask and message. The trace column opens the run's trace in Jaeger.",
        [
            sql(
                """
                SELECT task_name AS task, COALESCE(task_stage, 'UNKNOWN') AS stage,
                       execution_status AS status, hostname AS host, process_id AS pid,
                       execution_start AS started,
                       EXTRACT(EPOCH FROM now() - execution_start) AS "running for",
                       overall_percent_complete / 100.0 AS overall,
                       current_subtask || ' / ' || COALESCE(total_subtasks::text, '?') AS subtask,
                       subtask_name AS "subtask name",
                       subtask_percent_complete / 100.0 AS "subtask progress",
                       subtask_items_complete AS items, subtask_items_total AS "items total",
                       COALESCE(subtask_progress_message, overall_progress_message) AS message,
                       EXTRACT(EPOCH FROM now() - last_update) AS "heartbeat age",
                       memory_mb * 1048576.0 AS memory,
                       trace_id AS trace
                FROM pipetrack.pipeline_status
                WHERE execution_status IN ('STARTED', 'RUNNING')
                ORDER BY execution_start
                """
            )
        ],
        unit="short",
        size=(24, 9),
        mappings=status_mappings(),
        overrides=[
            by_name("started", unit="dateTimeAsLocal"),
            by_name("running for", unit="dtdurations"),
            by_name(
                "overall",
                unit="percentunit",
                min=0,
                max=1,
                custom_cellOptions={"type": "gauge", "mode": "basic"},
            ),
            by_name(
                "subtask progress",
                unit="percentunit",
                min=0,
                max=1,
                custom_cellOptions={"type": "gauge", "mode": "basic"},
            ),
            by_name(
                "heartbeat age",
                unit="s",
                thresholds=thresholds((None, "green"), (LOST_AFTER_SECONDS, "red")),
                custom_cellOptions={"type": "color-text"},
            ),
            by_name("memory", unit="bytes"),
            by_name("status", custom_cellOptions={"type": "color-text"}),
            trace_link(),
            task_link(),
        ],
    )

    b.row("Latest status by stage")
    b.add(
        "table",
        "$stage tasks",
        "Every task of the stage with the status of its latest run, when it last started, "
        "ended and succeeded. One panel per stage (the Stage variable picks which).",
        [
            prom(
                'max by (task, status) (pipetrack_task_last_run_status{task_stage=~"$stage"} == 1)',
                table=True,
            ),
            prom(
                "max by (task) "
                '(pipetrack_task_last_start_timestamp_seconds{task_stage=~"$stage"}) * 1000',
                table=True,
            ),
            prom(
                'max by (task) (pipetrack_task_last_duration_seconds{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                "max by (task) "
                '(pipetrack_task_last_success_timestamp_seconds{task_stage=~"$stage"}) * 1000',
                table=True,
            ),
        ],
        unit="short",
        size=(12, 9),
        mappings=status_mappings(),
        transformations=merge_and_rename(
            {"Value #B": "last start", "Value #C": "last duration", "Value #D": "last success"},
            ["task", "status", "last start", "last duration", "last success"],
            exclude=("Value #A",),
        ),
        overrides=[
            by_name("status", custom_cellOptions={"type": "color-background"}),
            by_name("last start", unit="dateTimeFromNow"),
            by_name("last success", unit="dateTimeFromNow"),
            by_name("last duration", unit="dtdurations"),
            task_link(),
        ],
        extra={"repeat": "stage", "repeatDirection": "h", "maxPerRow": 2},
    )

    b.row("In the time range")
    b.add(
        "timeseries",
        "Finished runs by outcome",
        "Runs that reached a final status, per outcome, over time.",
        [
            prom(
                "sum by (status) "
                '(increase(pipetrack_task_runs_total{task_stage=~"$stage"}[$__rate_interval]))',
                "{{status}}",
            )
        ],
        unit="short",
        size=(12, 8),
        custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 80},
        overrides=[
            by_name("FAILED", color={"mode": "fixed", "fixedColor": "red"}),
            by_name("FINISHED", color={"mode": "fixed", "fixedColor": "green"}),
            by_name("CANCELLED", color={"mode": "fixed", "fixedColor": "orange"}),
        ],
    )
    b.add(
        "table",
        "Failures and lost runs in the range",
        "Tasks with failed runs in the time range, and tasks whose run went without a heartbeat "
        f"for over {LOST_AFTER_SECONDS} s at some point in it.",
        [
            prom(
                'sum by (task, task_stage) (increase(pipetrack_task_runs_total{status="FAILED", '
                'task_stage=~"$stage"}[$__range])) > 0',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                "(max_over_time("
                'task:pipetrack_heartbeat_age_seconds{task_stage=~"$stage"}[$__range])) '
                f"> {LOST_AFTER_SECONDS}",
                table=True,
            ),
        ],
        unit="short",
        size=(12, 8),
        transformations=merge_and_rename(
            {"task_stage": "stage", "Value #A": "failed runs", "Value #B": "longest heartbeat gap"}
        ),
        overrides=[
            by_name("failed runs", decimals=0),
            by_name("longest heartbeat gap", unit="dtdurations"),
            task_link(),
        ],
    )
    b.add(
        "timeseries",
        "Duration of each task's latest run",
        "How long each task's latest finished run took, over time: a rising line is a task "
        "getting slower.",
        [
            prom(
                'max by (task) (pipetrack_task_last_duration_seconds{task_stage=~"$stage"})',
                "{{task}}",
            )
        ],
        unit="s",
        size=(24, 8),
        custom={"drawStyle": "line", "lineInterpolation": "stepAfter"},
    )
    b.add(
        "table",
        "Failed runs (PostgreSQL)",
        "Runs that ended FAILED and started in the time range, newest first, with the first "
        "line of the error. The trace column opens the run in Jaeger.",
        [
            sql(
                """
                SELECT execution_end AS ended, task_name AS task,
                       COALESCE(task_stage, 'UNKNOWN') AS stage, hostname AS host,
                       exit_code AS "exit code", split_part(error_message, E'\\n', 1) AS error,
                       trace_id AS trace
                FROM pipetrack.pipeline_runs
                WHERE execution_status = 'FAILED' AND $__timeFilter(execution_start)
                ORDER BY execution_end DESC NULLS LAST
                LIMIT 200
                """
            )
        ],
        unit="short",
        size=(24, 8),
        overrides=[by_name("ended", unit="dateTimeAsLocal"), trace_link(), task_link()],
    )
    return b.render()
