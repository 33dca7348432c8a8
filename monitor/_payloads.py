"""What each ``/api`` route answers: the query layer's results as JSON-ready dicts.

A page embeds its payload in its HTML for the first render and then polls the same route,
so the two cannot disagree. Rows of the Now view carry only what the page shows (a full
record, tracebacks and all, is the Run view's); the other views pass their rows whole.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from monitor.queries import DependencyGraph, Failures, NowView, RunDetail, TaskHistory
from monitor.queries.now import shown_status

Payload = dict[str, Any]

NOW_FIELDS = (
    "task_name",
    "task_stage",
    "run_id",
    "execution_status",
    "condition",
    "overdue",
    "execution_start",
    "execution_end",
    "elapsed_seconds",
    "eta_seconds",
    "hostname",
    "overall_percent_complete",
    "overall_progress_message",
    "current_subtask",
    "total_subtasks",
    "subtask_name",
    "subtask_percent_complete",
    "subtask_progress_message",
    "subtask_items_total",
    "subtask_items_complete",
    "heartbeat_age_seconds",
    "progress_age_seconds",
    "error_message",
    "memory_mb",
    "cpu_percent",
)


def now_payload(view: NowView) -> Payload:
    stages = []
    counts: dict[str, int] = {}
    for stage, rows in view.by_stage():
        shown = []
        for row in rows:
            item = {key: row.get(key) for key in NOW_FIELDS}
            status = shown_status(row)
            item["status"] = status
            counts[status] = counts.get(status, 0) + 1
            shown.append(item)
        stages.append({"stage": stage, "tasks": shown})
    return {"at": view.at, "stages": stages, "counts": counts, "tasks": len(view.runs)}


def run_payload(detail: RunDetail, *, jaeger_url: str | None) -> Payload:
    data = asdict(detail)
    trace = detail.run.get("trace_id")
    data["trace_url"] = (
        f"{jaeger_url.rstrip('/')}/trace/{trace}"
        if jaeger_url and isinstance(trace, str) and len(trace) == 32 and trace.isalnum()
        else None
    )
    data["run"]["status"] = shown_status(detail.run)
    return data


def history_payload(history: TaskHistory) -> Payload:
    return asdict(history)


def dependencies_payload(graph: DependencyGraph) -> Payload:
    return asdict(graph)


def failures_payload(found: Failures) -> Payload:
    return asdict(found)
