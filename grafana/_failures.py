"""The Failures dashboard: what failed, how often, with which error, in which step."""

from __future__ import annotations

from _grafana import (
    JSON,
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
    trace_link,
)


def failures() -> JSON:
    b = Board(
        "pipetrack-failures",
        "pipetrack / Failures",
        "What failed, how often, with which error and in which step; and which alerts fire now.",
        [*standard_variables(), STAGE],
        time_from="now-7d",
    )
    b.annotations.append(failure_annotation(""))
    b.add(
        "table",
        "Firing alerts",
        "pipetrack alerts firing now (Prometheus' ALERTS series), with the task they concern.",
        [prom('ALERTS{alertname=~"Pipetrack.*", alertstate="firing"}', table=True)],
        unit="short",
        size=(24, 6),
        transformations=[
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time": True,
                        "Value": True,
                        "__name__": True,
                        "alertstate": True,
                        "job": True,
                    },
                    "indexByName": {"alertname": 0, "severity": 1, "task": 2, "task_stage": 3},
                },
            }
        ],
        overrides=[task_link()],
    )
    b.add(
        "timeseries",
        "Failed runs per stage",
        "Runs that ended FAILED, per stage, over time.",
        [
            prom(
                'sum by (task_stage) (increase(pipetrack_task_runs_total{status="FAILED", '
                'task_stage=~"$stage"}[$__rate_interval]))',
                "{{task_stage}}",
            )
        ],
        unit="short",
        size=(12, 8),
        custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 80},
    )
    b.add(
        "table",
        "Most failing tasks",
        "Tasks with the most failed runs in the time range, and the share of their finished runs "
        "that failed.",
        [
            prom(
                "topk(20, sum by (task, task_stage) "
                '(increase(pipetrack_task_runs_total{status="FAILED", '
                'task_stage=~"$stage"}[$__range])) > 0)',
                table=True,
            ),
            prom(
                'sum by (task, task_stage) (increase(pipetrack_task_runs_total{status="FAILED", '
                'task_stage=~"$stage"}[$__range])) '
                "/ sum by (task, task_stage) "
                '(increase(pipetrack_task_runs_total{task_stage=~"$stage"}[$__range])) > 0',
                table=True,
            ),
        ],
        unit="short",
        size=(12, 8),
        transformations=[
            *merge_and_rename(
                {"task_stage": "stage", "Value #A": "failed runs", "Value #B": "failure share"}
            ),
            {
                "id": "filterByValue",
                "options": {
                    "type": "include",
                    "match": "any",
                    "filters": [
                        {
                            "fieldName": "failed runs",
                            "config": {"id": "greater", "options": {"value": 0}},
                        }
                    ],
                },
            },
        ],
        overrides=[
            by_name("failed runs", decimals=0),
            by_name(
                "failure share",
                unit="percentunit",
                custom_cellOptions={"type": "gauge", "mode": "basic"},
                min=0,
                max=1,
            ),
            task_link(),
        ],
    )
    b.add(
        "table",
        "Errors by message (PostgreSQL)",
        "Failed runs in the time range grouped by the first line of their error: one broken "
        "dependency often fails many tasks with the same message.",
        [
            sql(
                """
                SELECT COALESCE(NULLIF(split_part(error_message, E'\\n', 1), ''), '(no message)')
                           AS error,
                       count(*) AS runs, count(DISTINCT task_name) AS tasks,
                       string_agg(DISTINCT task_name, ', ') AS "which tasks",
                       max(execution_end) AS "last seen"
                FROM pipetrack.pipeline_runs
                WHERE execution_status = 'FAILED' AND $__timeFilter(execution_start)
                GROUP BY 1
                ORDER BY runs DESC
                LIMIT 50
                """
            )
        ],
        unit="short",
        size=(12, 9),
        overrides=[by_name("last seen", unit="dateTimeAsLocal")],
    )
    b.add(
        "table",
        "Failing steps (PostgreSQL)",
        "Subtasks that ended FAILED in runs of the time range: which step of which task breaks.",
        [
            sql(
                """
                WITH runs AS (
                    SELECT run_id, task_name FROM pipetrack.pipeline_runs
                    WHERE $__timeFilter(execution_start)
                ), subtasks AS (
                    SELECT run_id, subtask_name, subtask_status, ended_at
                    FROM pipetrack.pipeline_subtask
                    UNION ALL
                    SELECT run_id, subtask_name, subtask_status, ended_at
                    FROM pipetrack.pipeline_subtask_history
                )
                SELECT r.task_name AS task, s.subtask_name AS subtask, count(*) AS failures,
                       max(s.ended_at) AS "last failure"
                FROM runs r JOIN subtasks s USING (run_id)
                WHERE s.subtask_status = 'FAILED'
                GROUP BY 1, 2
                ORDER BY failures DESC
                LIMIT 50
                """
            )
        ],
        unit="short",
        size=(12, 9),
        overrides=[by_name("last failure", unit="dateTimeAsLocal"), task_link()],
    )
    b.add(
        "table",
        "Failed and cancelled runs (PostgreSQL)",
        "Every run that ended FAILED or CANCELLED and started in the time range, newest first, "
        "with its error, exit code, host and commit. The trace column opens the run in Jaeger.",
        [
            sql(
                """
                SELECT execution_end AS ended, task_name AS task,
                       COALESCE(task_stage, 'UNKNOWN') AS stage, execution_status AS status,
                       subtask_name AS "in subtask", exit_code AS "exit code",
                       split_part(error_message, E'\\n', 1) AS error, hostname AS host,
                       git_commit AS "git commit", trace_id AS trace
                FROM pipetrack.pipeline_runs
                WHERE execution_status IN ('FAILED', 'CANCELLED')
                  AND $__timeFilter(execution_start)
                ORDER BY execution_end DESC NULLS LAST
                LIMIT 500
                """
            )
        ],
        unit="short",
        size=(24, 10),
        mappings=status_mappings(),
        overrides=[
            by_name("ended", unit="dateTimeAsLocal"),
            by_name("status", custom_cellOptions={"type": "color-text"}),
            trace_link(),
            task_link(),
        ],
    )
    return b.render()
