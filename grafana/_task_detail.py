"""The Task detail dashboard: one task's history, bottleneck subtasks, resources and durations."""

from __future__ import annotations

from _grafana import (
    JSON,
    RATIO,
    TASK,
    Board,
    by_name,
    failure_annotation,
    prom,
    sql,
    standard_variables,
    status_mappings,
    thresholds,
    trace_link,
)
from _task_io import io_and_counts


def task_detail() -> JSON:
    b = Board(
        "pipetrack-task",
        "pipetrack / Task detail",
        "One task: its run history, its subtasks' durations (the bottleneck), its resources and "
        "its duration against its recent median.",
        [*standard_variables(), TASK],
        time_from="now-7d",
    )
    b.annotations.append(failure_annotation("AND task_name = '$task'"))
    b.row("Now")
    b.add(
        "stat",
        "Latest run",
        "Status of the task's latest run.",
        [
            prom(
                'max by (status) (pipetrack_task_last_run_status{task="$task"} == 1)',
                "{{status}}",
                instant=True,
            )
        ],
        unit="none",
        size=(4, 4),
        options={
            "textMode": "name",
            "colorMode": "background",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"]},
        },
        overrides=[
            by_name(status, color={"mode": "fixed", "fixedColor": color})
            for status, color in (
                ("FAILED", "red"),
                ("FINISHED", "green"),
                ("CANCELLED", "orange"),
                ("RUNNING", "blue"),
                ("STARTED", "blue"),
            )
        ],
    )
    b.add(
        "gauge",
        "Overall progress",
        "Progress of the current run across its subtasks (empty when nothing runs).",
        [prom('max(pipetrack_task_overall_progress_ratio{task="$task"})', instant=True)],
        unit="percentunit",
        size=(4, 4),
        minmax=RATIO,
        steps=thresholds((None, "blue")),
    )
    b.add(
        "stat",
        "Time left",
        "Predicted time until the current run ends, from its progress rate.",
        [prom('max(task:pipetrack_eta_seconds{task="$task"})', instant=True)],
        unit="dtdurations",
        size=(4, 4),
    )
    b.add(
        "stat",
        "Last duration",
        "Duration of the latest ended run.",
        [prom('max(pipetrack_task_last_duration_seconds{task="$task"})', instant=True)],
        unit="dtdurations",
        size=(4, 4),
    )
    b.add(
        "stat",
        "Median of the last 20 runs",
        "Median duration of the task's last 20 FINISHED runs.",
        [
            prom(
                'max(pipetrack_task_recent_duration_seconds{task="$task", quantile="0.5"})',
                instant=True,
            )
        ],
        unit="dtdurations",
        size=(4, 4),
    )
    b.add(
        "stat",
        "Last success",
        "When the latest FINISHED run ended.",
        [
            prom(
                'max(pipetrack_task_last_success_timestamp_seconds{task="$task"}) * 1000',
                instant=True,
            )
        ],
        unit="dateTimeFromNow",
        size=(4, 4),
    )

    b.row("Duration and progress")
    b.add(
        "timeseries",
        "Duration against its recent history",
        "The running run's age and the latest run's duration, against the median, 90th "
        "percentile and longest of the last 20 finished runs and the PipetrackRunTooLong "
        "threshold.",
        [
            prom('max(task:pipetrack_run_age_seconds{task="$task"})', "running for"),
            prom('max(pipetrack_task_last_duration_seconds{task="$task"})', "latest run"),
            prom(
                'max by (quantile) (pipetrack_task_recent_duration_seconds{task="$task"})',
                "recent q{{quantile}}",
            ),
            prom(
                'max(task:pipetrack_long_run_threshold_seconds{task="$task"})', "too-long threshold"
            ),
        ],
        unit="s",
        size=(12, 8),
        overrides=[
            by_name(
                "too-long threshold",
                custom_lineStyle={"fill": "dash", "dash": [10, 10]},
                color={"mode": "fixed", "fixedColor": "red"},
            )
        ],
    )
    b.add(
        "timeseries",
        "Progress of the current run",
        "Overall and current-subtask progress of the running run.",
        [
            prom('max(pipetrack_task_overall_progress_ratio{task="$task"})', "overall"),
            prom('max(pipetrack_task_subtask_progress_ratio{task="$task"})', "current subtask"),
        ],
        unit="percentunit",
        size=(12, 8),
        minmax=RATIO,
    )
    b.add(
        "timeseries",
        "Run durations (PostgreSQL)",
        "Duration of every finished run that started in the time range, at its start time.",
        [
            sql(
                """
                SELECT execution_start AS time,
                       EXTRACT(EPOCH FROM execution_end - execution_start) AS duration
                FROM pipetrack.pipeline_runs
                WHERE task_name = '$task' AND execution_status = 'FINISHED'
                  AND $__timeFilter(execution_start)
                ORDER BY 1
                """,
                time_series=True,
            )
        ],
        unit="s",
        size=(12, 8),
        custom={"drawStyle": "points", "pointSize": 6},
    )
    b.add(
        "timeseries",
        "Subtask durations by run (PostgreSQL)",
        "How long each subtask took in each run (at the run's start): the line that grows is "
        "the step that got slower.",
        [
            sql(
                """
                WITH runs AS (
                    SELECT run_id, execution_start FROM pipetrack.pipeline_runs
                    WHERE task_name = '$task' AND $__timeFilter(execution_start)
                ), subtasks AS (
                    SELECT run_id, subtask_name, started_at, ended_at
                    FROM pipetrack.pipeline_subtask
                    UNION ALL
                    SELECT run_id, subtask_name, started_at, ended_at
                    FROM pipetrack.pipeline_subtask_history
                )
                SELECT r.execution_start AS time, s.subtask_name AS metric,
                       EXTRACT(EPOCH FROM s.ended_at - s.started_at) AS value
                FROM runs r JOIN subtasks s USING (run_id)
                WHERE s.ended_at IS NOT NULL
                ORDER BY 1
                """,
                time_series=True,
            )
        ],
        unit="s",
        size=(12, 8),
        custom={
            "drawStyle": "line",
            "showPoints": "always",
            "stacking": {"mode": "normal"},
            "fillOpacity": 30,
        },
    )
    b.add(
        "barchart",
        "Bottlenecks: subtask durations (PostgreSQL)",
        "Median and longest duration of each subtask over the runs that started in the time "
        "range, slowest first.",
        [
            sql(
                """
                WITH runs AS (
                    SELECT run_id FROM pipetrack.pipeline_runs
                    WHERE task_name = '$task' AND $__timeFilter(execution_start)
                ), subtasks AS (
                    SELECT run_id, subtask_name, started_at, ended_at
                    FROM pipetrack.pipeline_subtask
                    UNION ALL
                    SELECT run_id, subtask_name, started_at, ended_at
                    FROM pipetrack.pipeline_subtask_history
                )
                SELECT s.subtask_name AS subtask,
                       percentile_cont(0.5) WITHIN GROUP
                           (ORDER BY EXTRACT(EPOCH FROM s.ended_at - s.started_at)) AS median,
                       max(EXTRACT(EPOCH FROM s.ended_at - s.started_at)) AS longest
                FROM runs r JOIN subtasks s USING (run_id)
                WHERE s.ended_at IS NOT NULL
                GROUP BY s.subtask_name
                ORDER BY median DESC
                LIMIT 30
                """
            )
        ],
        unit="s",
        size=(12, 8),
        options={
            "orientation": "horizontal",
            "xField": "subtask",
            "showValue": "auto",
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
        },
    )

    b.row("Resources")
    b.add(
        "timeseries",
        "Memory",
        "Resident memory of the task's running runs (sum).",
        [prom('max(pipetrack_task_memory_bytes{task="$task"})', "memory")],
        unit="bytes",
        size=(12, 7),
    )
    b.add(
        "timeseries",
        "CPU",
        "CPU of the task's running runs (sum; 1 = one core busy).",
        [prom('max(pipetrack_task_cpu_ratio{task="$task"})', "cpu")],
        unit="percentunit",
        size=(12, 7),
    )

    io_and_counts(b)

    b.row("History")
    b.add(
        "table",
        "Run history (PostgreSQL)",
        "Every run that started in the time range, newest first: status, duration, error, host, "
        "git commit, peak memory. The trace column opens the run in Jaeger.",
        [
            sql(
                """
                SELECT execution_start AS start, execution_end AS "end",
                       execution_status AS status,
                       EXTRACT(EPOCH FROM COALESCE(execution_end, now()) - execution_start)
                           AS duration,
                       exit_code AS "exit code", split_part(error_message, E'\\n', 1) AS error,
                       hostname AS host, user_name AS "user", git_commit AS "git commit",
                       peak_memory_mb * 1048576.0 AS "peak memory", trace_id AS trace
                FROM pipetrack.pipeline_runs
                WHERE task_name = '$task' AND $__timeFilter(execution_start)
                ORDER BY execution_start DESC
                LIMIT 500
                """
            )
        ],
        unit="short",
        size=(24, 10),
        mappings=status_mappings(),
        overrides=[
            by_name("start", unit="dateTimeAsLocal"),
            by_name("end", unit="dateTimeAsLocal"),
            by_name("duration", unit="dtdurations"),
            by_name("peak memory", unit="bytes"),
            by_name("status", custom_cellOptions={"type": "color-text"}),
            trace_link(),
        ],
    )
    b.add(
        "table",
        "Subtasks of the latest run (PostgreSQL)",
        "Each subtask of the task's latest run: status, duration, items and last message.",
        [
            sql(
                """
                WITH latest AS (
                    SELECT run_id FROM pipetrack.pipeline_latest_run WHERE task_name = '$task'
                ), subtasks AS (
                    SELECT run_id, subtask_index, subtask_name, subtask_status, started_at,
                           ended_at, items_total, items_complete, message
                    FROM pipetrack.pipeline_subtask
                    UNION ALL
                    SELECT run_id, subtask_index, subtask_name, subtask_status, started_at,
                           ended_at, items_total, items_complete, message
                    FROM pipetrack.pipeline_subtask_history
                )
                SELECT s.subtask_index AS "#", s.subtask_name AS subtask,
                       s.subtask_status AS status, s.started_at AS started,
                       EXTRACT(EPOCH FROM COALESCE(s.ended_at, now()) - s.started_at) AS duration,
                       s.items_complete AS items, s.items_total AS "items total",
                       s.message
                FROM latest JOIN subtasks s USING (run_id)
                ORDER BY s.subtask_index
                """
            )
        ],
        unit="short",
        size=(24, 8),
        overrides=[
            by_name("started", unit="dateTimeAsLocal"),
            by_name("duration", unit="dtdurations"),
        ],
    )
    return b.render()
