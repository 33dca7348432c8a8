"""The Task history view: a task's runs against its typical duration, and where time goes.

Runs come newest first through the index (task_name, execution_start DESC) of the hot and the
history tables; the typical duration is the median of the task's last 20 FINISHED durations
(``pipeline_task_last_outcome``, sql/0005); the subtasks of the runs shown are read by their
primary key and summed up per subtask name, the slowest first (the bottlenecks).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from monitor.queries._common import RUN_STATUSES, Row, elapsed_sql, fetch

if TYPE_CHECKING:
    import psycopg

DEFAULT_LIMIT = 50

RUNS_SQL = f"""
SELECT *, {elapsed_sql()} AS elapsed_seconds
FROM pipeline_runs
WHERE task_name = %(task)s
  AND (%(statuses)s::text[] IS NULL OR execution_status = ANY(%(statuses)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR execution_start >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR execution_start < %(until)s::timestamptz)
ORDER BY execution_start DESC, run_id DESC
LIMIT %(limit)s
"""

TYPICAL_SQL = """
SELECT recent_durations FROM pipeline_task_last_outcome
WHERE task_name = %s AND execution_status = 'FINISHED'
"""

OUTCOMES_SQL = "SELECT execution_status, runs FROM pipeline_task_outcomes WHERE task_name = %s"

SUBTASK_SQL = f"""
SELECT run_id, subtask_index, parent_index, subtask_name, subtask_status,
       {elapsed_sql("started_at", "ended_at")} AS elapsed_seconds
FROM (SELECT run_id, subtask_index, parent_index, subtask_name, subtask_status, started_at,
             ended_at
      FROM pipeline_subtask WHERE run_id = ANY(%(runs)s::uuid[])
      UNION ALL
      SELECT run_id, subtask_index, parent_index, subtask_name, subtask_status, started_at,
             ended_at
      FROM pipeline_subtask_history WHERE run_id = ANY(%(runs)s::uuid[])) AS s
ORDER BY run_id, subtask_index
"""


@dataclass(frozen=True)
class HistoryFilter:
    """Which runs of a task to show: by status, by start in [since, until), at most ``limit``."""

    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        unknown = set(self.statuses) - set(RUN_STATUSES)
        if unknown:
            raise ValueError(f"unknown run status(es) {sorted(unknown)}")


@dataclass(frozen=True)
class SubtaskStat:
    """One subtask name across the runs shown: how many ran it, their median and longest
    duration, and the median share of its run's duration it took."""

    name: str
    runs: int
    median_seconds: float
    max_seconds: float
    median_share: float | None


@dataclass(frozen=True)
class TaskHistory:
    """``runs`` newest first (every column, ``elapsed_seconds``); ``typical_seconds`` the median
    recent FINISHED duration; ``outcomes`` final statuses counted over the task's whole life;
    ``subtasks`` top-level subtask names, slowest first; ``durations`` per subtask name the
    seconds it took in each run shown (None where that run did not run it)."""

    task: str
    runs: list[Row] = field(default_factory=list)
    typical_seconds: float | None = None
    recent_durations: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    subtasks: list[SubtaskStat] = field(default_factory=list)
    durations: dict[str, list[float | None]] = field(default_factory=dict)


def task_runs(conn: psycopg.Connection[Any], task: str, wanted: HistoryFilter) -> list[Row]:
    """The runs of ``task`` that ``wanted`` keeps, newest first."""
    return fetch(
        conn,
        RUNS_SQL,
        {
            "task": task,
            "statuses": list(wanted.statuses) or None,
            "since": wanted.since,
            "until": wanted.until,
            "limit": wanted.limit,
        },
    )


def _bottlenecks(
    runs: list[Row], rows: list[Row]
) -> tuple[list[SubtaskStat], dict[str, list[float | None]]]:
    """Top-level subtask durations per name: a stat each, and a series aligned with ``runs``."""
    position = {row["run_id"]: i for i, row in enumerate(runs)}
    series: dict[str, list[float | None]] = {}
    shares: dict[str, list[float]] = {}
    for row in rows:
        if row["parent_index"] is not None:
            continue
        name = str(row["subtask_name"])
        seconds = max(float(row["elapsed_seconds"] or 0.0), 0.0)
        line = series.setdefault(name, [None] * len(runs))
        i = position[row["run_id"]]
        line[i] = (line[i] or 0.0) + seconds  # a name entered twice in a run counts once, summed
        total = runs[i].get("elapsed_seconds")
        if total:
            shares.setdefault(name, []).append(seconds / float(total))
    stats = []
    for name, line in series.items():
        taken = [value for value in line if value is not None]
        stats.append(
            SubtaskStat(
                name=name,
                runs=len(taken),
                median_seconds=statistics.median(taken),
                max_seconds=max(taken),
                median_share=statistics.median(shares[name]) if shares.get(name) else None,
            )
        )
    stats.sort(key=lambda stat: (-stat.median_seconds, stat.name))
    return stats, {stat.name: series[stat.name] for stat in stats}


def task_history(
    conn: psycopg.Connection[Any], task: str, wanted: HistoryFilter | None = None
) -> TaskHistory:
    """The Task history view of ``task``."""
    wanted = wanted or HistoryFilter()
    runs = task_runs(conn, task, wanted)
    typical_row = conn.execute(TYPICAL_SQL, (task,)).fetchone()
    recent = [float(d) for d in (typical_row[0] if typical_row else None) or ()]
    outcomes = {str(status): int(n) for status, n in conn.execute(OUTCOMES_SQL, (task,))}
    stats: list[SubtaskStat] = []
    durations: dict[str, list[float | None]] = {}
    if runs:
        rows = fetch(conn, SUBTASK_SQL, {"runs": [row["run_id"] for row in runs]})
        stats, durations = _bottlenecks(runs, rows)
    return TaskHistory(
        task=task,
        runs=runs,
        typical_seconds=statistics.median(recent) if recent else None,
        recent_durations=recent,
        outcomes=outcomes,
        subtasks=stats,
        durations=durations,
    )
