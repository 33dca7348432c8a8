"""The Now view: every task's latest run, with its condition, ETA and overdue reason.

Reads structures that grow with tasks, not runs (as the exporter does): ``pipeline_latest_run``
(the newest run per task, by key), ``pipeline_active_runs`` (the partial index of running
runs, with the lost and stalled flags of sql/0007), ``pipeline_task_last_outcome`` (recent
FINISHED durations), the declared tasks with their expected starts (exporter/_schedule.py) and,
for tasks running now only, their progress curves (tracker/_ops/eta_history.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from exporter._schedule import Declared, missed_start, read_declared
from monitor.queries._common import (
    ACTIVE,
    CONDITIONS,
    RUN_STATUSES,
    Row,
    database_now,
    elapsed_sql,
    fetch,
    glob_to_like,
    stage_rank,
)
from tracker._ops.durations import format_duration
from tracker._ops.eta import ProgressCurve
from tracker._ops.eta_history import predicted_total, read_curves

if TYPE_CHECKING:
    import psycopg

SHOWN_STATUSES = (*RUN_STATUSES, *CONDITIONS, "NOT_RUN")
"""What a task's status can be shown as: its run's status, a condition, or never run."""
PROBLEMS = ("FAILED", *CONDITIONS)

# The filters are parameters; a NULL one matches everything. The stage, host, glob and since
# filters narrow the ~1 row per task of pipeline_latest_run; conditions are derived afterwards.
SUMMARY_COLUMNS = (
    "task_name",
    "task_stage",
    "run_id",
    "execution_status",
    "execution_start",
    "execution_end",
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
    "error_message",
    "memory_mb",
    "cpu_percent",
)
"""What a page's row shows of a run (``full=False``): not the traceback, environment, paths."""

_LATEST_SQL = """
SELECT {columns},
       {elapsed} AS elapsed_seconds,
       a.lost, a.stalled,
       EXTRACT(EPOCH FROM a.heartbeat_age)::float8 AS heartbeat_age_seconds,
       EXTRACT(EPOCH FROM a.progress_age)::float8 AS progress_age_seconds,
       o.recent_durations
FROM pipeline_latest_run AS l
LEFT JOIN pipeline_active_runs AS a ON a.run_id = l.run_id
LEFT JOIN pipeline_task_last_outcome AS o
    ON o.task_name = l.task_name AND o.execution_status = 'FINISHED'
WHERE (%(stages)s::text[] IS NULL OR coalesce(l.task_stage, 'UNKNOWN') = ANY(%(stages)s::text[]))
  AND (%(hosts)s::text[] IS NULL OR l.hostname = ANY(%(hosts)s::text[]))
  AND (%(task_like)s::text IS NULL OR l.task_name LIKE %(task_like)s::text)
  AND (%(since)s::timestamptz IS NULL OR l.execution_start >= %(since)s::timestamptz)
ORDER BY l.task_name
"""
_ELAPSED = elapsed_sql("l.execution_start", "l.execution_end")
LATEST_SQL = _LATEST_SQL.format(columns="l.*", elapsed=_ELAPSED)
SUMMARY_SQL = _LATEST_SQL.format(
    columns=", ".join(f"l.{c}" for c in SUMMARY_COLUMNS), elapsed=_ELAPSED
)


@dataclass(frozen=True)
class NowFilter:
    """Which tasks the Now view shows; empty means all. ``task`` is a shell-style glob;
    ``statuses`` match a run's status or its condition (LOST, STALLED, OVERDUE, NOT_RUN);
    ``problems`` keeps failed, lost, stalled and overdue ones."""

    stages: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    task: str | None = None
    hosts: tuple[str, ...] = ()
    since: datetime | None = None
    problems: bool = False

    def params(self) -> dict[str, object]:
        return {
            "stages": list(self.stages) or None,
            "hosts": list(self.hosts) or None,
            "task_like": None if self.task is None else glob_to_like(self.task),
            "since": self.since,
        }


@dataclass(frozen=True)
class NowView:
    """The latest run of each task (each row every column of the run plus ``elapsed_seconds``,
    ``eta_seconds``, ``condition``, ``overdue``), by task name; ``at`` is the database's clock."""

    at: datetime
    runs: list[Row] = field(default_factory=list)
    declared: dict[str, Declared] = field(default_factory=dict)

    def by_stage(self) -> list[tuple[str, list[Row]]]:
        """The rows grouped by stage, stages in pipeline order."""
        groups: dict[str, list[Row]] = {}
        for row in self.runs:
            groups.setdefault(row.get("task_stage") or "UNKNOWN", []).append(row)
        return sorted(groups.items(), key=lambda item: (stage_rank(item[0]), item[0]))


def condition(row: Row) -> str | None:
    """``LOST`` or ``STALLED`` for an active run pipeline_active_runs flags, ``OVERDUE`` for a
    task late to start or to finish, else None."""
    if row.get("execution_status") in ACTIVE:
        if row.get("lost"):
            return "LOST"
        if row.get("stalled"):
            return "STALLED"
    return "OVERDUE" if row.get("overdue") else None


def shown_status(row: Row) -> str:
    """What a row's status column shows: its condition, else its run's status."""
    return str(condition(row) or row.get("execution_status") or "NOT_RUN")


def eta_seconds(row: Row, curve: ProgressCurve | None = None) -> float | None:
    """Time left for an active run: its progress (through ``curve``, the task's progress curve,
    where it has one) blended with its task's recent FINISHED durations
    (tracker._ops.eta.predict_total); None with neither progress nor history."""
    if row.get("execution_status") not in ACTIVE:
        return None
    elapsed = float(row.get("elapsed_seconds") or 0.0)
    percent = row.get("overall_percent_complete")
    progress = None if percent is None else float(percent) / 100.0
    recent = [float(d) for d in row.get("recent_durations") or ()]
    total = predicted_total(elapsed, progress, recent, curve)
    return None if total is None else max(total - elapsed, 0.0)


def overdue_reason(row: Row | None, declared: Declared | None, at: float) -> str | None:
    """Why a task is overdue, or None: a scheduled start missed (no run within the start grace,
    the rule of PipetrackTaskMissedStart), or a run going on past its declared max_duration."""
    if declared is None:
        return None
    if missed_start(declared, at) and declared.previous_start is not None:
        when = datetime.fromtimestamp(declared.previous_start).astimezone()
        return f"missed its start at {when:%Y-%m-%d %H:%M %Z}"
    if (
        row is not None
        and row.get("execution_status") in ACTIVE
        and declared.max_duration is not None
        and float(row.get("elapsed_seconds") or 0.0) > declared.max_duration
    ):
        limit = format_duration(timedelta(seconds=declared.max_duration))
        return f"running longer than its max_duration of {limit}"
    return None


def _never_run(task: Declared, reason: str) -> Row:
    """A declared task without any run, as a row of the view."""
    return {
        "task_name": task.task,
        "task_stage": task.stage or "UNKNOWN",
        "run_id": None,
        "execution_status": None,
        "execution_start": None,
        "execution_end": None,
        "elapsed_seconds": None,
        "overall_percent_complete": None,
        "hostname": None,
        "overdue": reason,
    }


def _keep(row: Row, wanted: NowFilter) -> bool:
    shown = {row.get("execution_status") or "NOT_RUN", row["condition"] or ""}
    if wanted.statuses and not shown & set(wanted.statuses):
        return False
    return not wanted.problems or bool(shown & set(PROBLEMS))


def latest_runs(
    conn: psycopg.Connection[Any], wanted: NowFilter | None = None, *, full: bool = True
) -> NowView:
    """The Now view: the latest run of every task that ``wanted`` keeps; each row every column
    of the run (``full``) or the SUMMARY_COLUMNS a page shows.

    1. Read the latest runs (filtered in SQL by stage, host, glob and start).
    2. Read the declared tasks with their expected starts, and the progress curves of the
       tasks running now; derive each row's ETA, overdue reason and condition.
    3. Add the declared tasks that never ran but are overdue; filter by status and problems.
    """
    wanted = wanted or NowFilter()
    at = database_now(conn)
    rows = fetch(conn, LATEST_SQL if full else SUMMARY_SQL, wanted.params())
    cur = cast("psycopg.Cursor[tuple[Any, ...]]", conn.cursor())
    with cur:
        declared = {d.task: d for d in read_declared(cur, at.timestamp())}
        active = sorted({r["task_name"] for r in rows if r["execution_status"] in ACTIVE})
        curves = read_curves(cur, active)
    seen = set()
    for row in rows:
        seen.add(row["task_name"])
        row["eta_seconds"] = eta_seconds(row, curves.get(row["task_name"]))
        row["overdue"] = overdue_reason(row, declared.get(row["task_name"]), at.timestamp())
        row["condition"] = condition(row)
    for task in declared.values():
        if task.task in seen or not _declared_kept(task, wanted):
            continue
        reason = overdue_reason(None, task, at.timestamp())
        if reason is not None:
            row = _never_run(task, reason)
            row["condition"] = condition(row)
            row["eta_seconds"] = None
            rows.append(row)
    rows = [row for row in rows if _keep(row, wanted)]
    rows.sort(key=lambda row: str(row["task_name"]))
    return NowView(at=at, runs=rows, declared=declared)


def _declared_kept(task: Declared, wanted: NowFilter) -> bool:
    """Whether a never-run declared task passes the filters a run would be checked by in SQL."""
    from fnmatch import fnmatchcase

    if wanted.stages and (task.stage or "UNKNOWN") not in wanted.stages:
        return False
    if wanted.task is not None and not fnmatchcase(task.task, wanted.task):
        return False
    return not (wanted.hosts or wanted.since)
