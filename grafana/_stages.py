"""The Stages and schedules dashboard: is every stage on schedule, and what ran when."""

from __future__ import annotations

from _grafana import (
    JSON,
    PERCENT_BAR,
    RED_AT_ONE,
    STAGE,
    Board,
    by_name,
    merge_and_rename,
    prom,
    sql,
    standard_variables,
    status_mappings,
    task_link,
    thresholds,
)


def stages() -> JSON:
    b = Board(
        "pipetrack-stages",
        "pipetrack / Stages and schedules",
        "Is every stage on schedule: time since each task last succeeded against its stage's "
        "window, what ran when, and tasks that did not run in the time range.",
        [*standard_variables(), STAGE],
        time_from="now-2d",
    )
    b.add(
        "bargauge",
        "Overdue tasks per stage",
        "Tasks of each stage without a success within their window (PipetrackTaskNoRecentSuccess). "
        "Stages without a window (STATIC, UNKNOWN) are not listed.",
        [
            prom(
                "sum by (task_stage) (task:pipetrack_last_success_age_seconds > bool on (task, "
                "task_stage) "
                'task:pipetrack_success_window_seconds{task_stage=~"$stage"})',
                "{{task_stage}}",
                instant=True,
            )
        ],
        unit="none",
        size=(8, 8),
        steps=RED_AT_ONE,
        options={
            **PERCENT_BAR,
            "displayMode": "basic",
            "reduceOptions": {"calcs": ["lastNotNull"]},
        },
    )
    b.add(
        "timeseries",
        "Tasks by latest status",
        "How many tasks' latest run is in each status, over time.",
        [
            prom(
                'sum by (status) (pipetrack_task_last_run_status{task_stage=~"$stage"})',
                "{{status}}",
            )
        ],
        unit="none",
        size=(16, 8),
        custom={"stacking": {"mode": "normal"}, "fillOpacity": 40},
        overrides=[
            by_name(status, color={"mode": "fixed", "fixedColor": color})
            for status, color in (
                ("FAILED", "red"),
                ("FINISHED", "green"),
                ("CANCELLED", "orange"),
                ("RUNNING", "blue"),
                ("STARTED", "light-blue"),
            )
        ],
    )
    b.add(
        "table",
        "Schedule check: time since last success against the window",
        "Per task: time since its last success (or, never having succeeded, its last start), the "
        "window its stage allows (prometheus/rules/pipetrack-windows.rules.yml) and how much of it "
        "is used. Over 100 % raises PipetrackTaskNoRecentSuccess.",
        [
            prom('task:pipetrack_last_success_age_seconds{task_stage=~"$stage"}', table=True),
            prom('task:pipetrack_success_window_seconds{task_stage=~"$stage"}', table=True),
            prom(
                'task:pipetrack_last_success_age_seconds{task_stage=~"$stage"} '
                "/ on (task, task_stage) task:pipetrack_success_window_seconds",
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_last_start_timestamp_seconds{task_stage=~"$stage"}) * 1000',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_last_duration_seconds{task_stage=~"$stage"})',
                table=True,
            ),
        ],
        unit="short",
        size=(24, 12),
        transformations=[
            *merge_and_rename(
                {
                    "task_stage": "stage",
                    "Value #A": "since last success",
                    "Value #B": "window",
                    "Value #C": "window used",
                    "Value #D": "last start",
                    "Value #E": "last duration",
                },
                [
                    "stage",
                    "task",
                    "window used",
                    "since last success",
                    "window",
                    "last start",
                    "last duration",
                ],
            ),
            {"id": "sortBy", "options": {"sort": [{"field": "window used", "desc": True}]}},
        ],
        overrides=[
            by_name("since last success", unit="dtdurations"),
            by_name("window", unit="dtdurations"),
            by_name(
                "window used",
                unit="percentunit",
                min=0,
                max=1,
                thresholds=thresholds((None, "green"), (0.8, "orange"), (1, "red")),
                custom_cellOptions={"type": "gauge", "mode": "basic"},
            ),
            by_name("last start", unit="dateTimeFromNow"),
            by_name("last duration", unit="dtdurations"),
            task_link(),
        ],
    )
    b.add(
        "state-timeline",
        "What ran when",
        "One lane per task: coloured while the task had a running run. Overlaps and gaps show "
        "how the stages' schedules fit together.",
        [prom('max by (task) (pipetrack_task_running_runs{task_stage=~"$stage"})', "{{task}}")],
        unit="none",
        size=(24, 12),
        mappings=[
            {
                "type": "value",
                "options": {
                    "0": {"color": "transparent", "index": 0, "text": "idle"},
                    "1": {"color": "blue", "index": 1, "text": "running"},
                },
            },
            {
                "type": "range",
                "options": {
                    "from": 2,
                    "to": 1e9,
                    "result": {"color": "purple", "index": 2, "text": "several runs"},
                },
            },
        ],
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
    )
    b.add(
        "table",
        "Runs per stage in the time range (PostgreSQL)",
        "Per stage: runs started in the time range by outcome, and when the stage's first run "
        "started and its last run ended.",
        [
            sql(
                """
                SELECT COALESCE(task_stage, 'UNKNOWN') AS stage,
                       count(DISTINCT task_name) AS tasks, count(*) AS runs,
                       count(*) FILTER (WHERE execution_status = 'FINISHED') AS finished,
                       count(*) FILTER (WHERE execution_status = 'FAILED') AS failed,
                       count(*) FILTER (WHERE execution_status = 'CANCELLED') AS cancelled,
                       count(*) FILTER (WHERE execution_status IN ('STARTED', 'RUNNING'))
                           AS running,
                       min(execution_start) AS "first start", max(execution_end) AS "last end"
                FROM pipetrack.pipeline_runs
                WHERE $__timeFilter(execution_start)
                GROUP BY 1
                ORDER BY 1
                """
            )
        ],
        unit="short",
        size=(14, 8),
        overrides=[
            by_name("first start", unit="dateTimeAsLocal"),
            by_name("last end", unit="dateTimeAsLocal"),
            by_name("failed", thresholds=RED_AT_ONE, custom_cellOptions={"type": "color-text"}),
        ],
    )
    b.add(
        "table",
        "Tasks that did not start in the time range (PostgreSQL)",
        "Tasks whose latest run started before the time range: for a daily range, the DAILY "
        "tasks listed here did not run today.",
        [
            sql(
                """
                SELECT COALESCE(task_stage, 'UNKNOWN') AS stage, task_name AS task,
                       execution_start AS "last start", execution_status AS "last status"
                FROM pipetrack.pipeline_latest_run
                WHERE execution_start < $__timeFrom()
                ORDER BY 1, 3
                """
            )
        ],
        unit="short",
        size=(10, 8),
        mappings=status_mappings(),
        overrides=[by_name("last start", unit="dateTimeAsLocal"), task_link()],
    )
    _declared(b)
    return b.render()


def _declared(b: Board) -> None:
    """Panels of the declared tasks (pipetrack tasks sync) and of stuck runs."""
    b.add(
        "table",
        "Declared schedules",
        "Tasks declared with `pipetrack tasks sync`: their last and next expected start, whether "
        "the last start was missed (no run within the start grace: PipetrackTaskMissedStart), "
        "runs started since it (2 or more: PipetrackTaskRanTwice), whether the latest run "
        "started before a dependency succeeded (PipetrackTaskStartedBeforeDependency), and the "
        "declared start grace and maximum duration.",
        [
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_last_expected_start_timestamp_seconds{task_stage=~"$stage"}) '
                "* 1000",
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_next_expected_start_timestamp_seconds{task_stage=~"$stage"}) '
                "* 1000",
                table=True,
            ),
            prom(
                'max by (task, task_stage) (pipetrack_task_missed_start{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_runs_started_since_expected_start{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_started_before_dependency{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_start_grace_seconds{task_stage=~"$stage"})',
                table=True,
            ),
            prom(
                "max by (task, task_stage) "
                '(pipetrack_task_max_duration_seconds{task_stage=~"$stage"})',
                table=True,
            ),
        ],
        unit="short",
        size=(24, 10),
        transformations=[
            *merge_and_rename(
                {
                    "task_stage": "stage",
                    "Value #A": "last expected start",
                    "Value #B": "next expected start",
                    "Value #C": "missed start",
                    "Value #D": "runs since expected start",
                    "Value #E": "started before dependency",
                    "Value #F": "start grace",
                    "Value #G": "max duration",
                },
                [
                    "stage",
                    "task",
                    "last expected start",
                    "next expected start",
                    "missed start",
                    "runs since expected start",
                    "started before dependency",
                    "start grace",
                    "max duration",
                ],
            ),
        ],
        overrides=[
            by_name("last expected start", unit="dateTimeFromNow"),
            by_name("next expected start", unit="dateTimeFromNow"),
            by_name(
                "missed start", thresholds=RED_AT_ONE, custom_cellOptions={"type": "color-text"}
            ),
            by_name(
                "runs since expected start",
                thresholds=thresholds((None, "green"), (2, "red")),
                custom_cellOptions={"type": "color-text"},
            ),
            by_name(
                "started before dependency",
                thresholds=RED_AT_ONE,
                custom_cellOptions={"type": "color-text"},
            ),
            by_name("start grace", unit="dtdurations"),
            by_name("max duration", unit="dtdurations"),
            task_link(),
        ],
    )
    b.add(
        "timeseries",
        "Stalled runs",
        "Tasks whose current run heartbeats but has not progressed for its stall threshold "
        "(pipetrack_task_stalled; PipetrackRunStalled after five minutes).",
        [
            prom(
                'sum by (task_stage) (pipetrack_task_stalled{task_stage=~"$stage"})',
                "{{task_stage}}",
            )
        ],
        unit="none",
        size=(10, 8),
        custom={"stacking": {"mode": "normal"}, "fillOpacity": 40},
    )
    b.add(
        "table",
        "Stalled and lost runs (PostgreSQL)",
        "Running runs that stopped heartbeating for over 60 s (lost: the reaper marks them "
        "FAILED) or heartbeat without progress for longer than their stall threshold (stalled), "
        "from the view pipetrack.pipeline_active_runs.",
        [
            sql(
                """
                SELECT task_name AS task, COALESCE(task_stage, 'UNKNOWN') AS stage,
                       CASE WHEN lost THEN 'LOST' ELSE 'STALLED' END AS state,
                       hostname AS host, process_id AS pid, execution_start AS started,
                       EXTRACT(EPOCH FROM heartbeat_age) AS "heartbeat age",
                       EXTRACT(EPOCH FROM progress_age) AS "progress age",
                       EXTRACT(EPOCH FROM stall_after) AS "stall threshold",
                       subtask_name AS "subtask name"
                FROM pipetrack.pipeline_active_runs
                WHERE lost OR stalled
                ORDER BY lost DESC, progress_age DESC
                """
            )
        ],
        unit="short",
        size=(14, 8),
        overrides=[
            by_name("started", unit="dateTimeAsLocal"),
            by_name("heartbeat age", unit="dtdurations"),
            by_name("progress age", unit="dtdurations"),
            by_name("stall threshold", unit="dtdurations"),
            task_link(),
        ],
    )
