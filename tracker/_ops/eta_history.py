"""The history a predicted finish is blended with, read from the database for running tasks.

Two things per task, both cheap to read because they are asked only for tasks running now:
- recent FINISHED durations: ``pipeline_task_last_outcome.recent_durations`` (sql/0005);
- a progress curve: in the task's last few FINISHED runs (among its last 50) with subtask
  rows, when each leaf subtask ended as a share of the run's duration, against the progress mark
  k / total_subtasks that ending completed (the k-th leaf to end). Served by the index
  (task_name, execution_start DESC) on pipeline_status and the subtasks' primary key.
Archived runs (older than the archive's threshold, 30 days by default) are not read: a curve
describes the task's recent shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from tracker._ops.eta import ProgressCurve, predict_total

if TYPE_CHECKING:
    import psycopg

CURVE_RUNS = 5
"""How many of a task's latest FINISHED runs its progress curve is built from."""
SCANNED_RUNS = 50
"""How many of a task's latest runs are looked at for those: a task that keeps failing must not
make the exporter walk its whole history at every scrape."""

# One row per recent FINISHED run of each task asked about: its declared subtask count, its
# duration and the end offsets (seconds after its start) of its completed leaf subtasks.
CURVE_SQL = f"""
SELECT t.task_name, r.total_subtasks,
       extract(epoch FROM r.execution_end - r.execution_start)::float8,
       ARRAY(SELECT extract(epoch FROM s.ended_at - r.execution_start)::float8
             FROM pipeline_subtask AS s
             WHERE s.run_id = r.run_id AND s.subtask_status = 'COMPLETED'
               AND s.ended_at IS NOT NULL
               AND NOT EXISTS (SELECT FROM pipeline_subtask AS c
                               WHERE c.run_id = s.run_id AND c.parent_index = s.subtask_index)
             ORDER BY s.ended_at, s.subtask_index)
FROM unnest(%s::text[]) AS t(task_name)
CROSS JOIN LATERAL (
    SELECT recent.run_id, recent.execution_start, recent.execution_end, recent.total_subtasks
    FROM (SELECT p.run_id, p.execution_start, p.execution_end, p.total_subtasks,
                 p.execution_status
          FROM pipeline_status AS p
          WHERE p.task_name = t.task_name
          ORDER BY p.execution_start DESC
          LIMIT {SCANNED_RUNS}) AS recent
    WHERE recent.execution_status = 'FINISHED'
      AND recent.execution_end > recent.execution_start
    ORDER BY recent.execution_start DESC
    LIMIT {CURVE_RUNS}
) AS r
"""

DURATIONS_SQL = """
SELECT task_name, recent_durations FROM pipeline_task_last_outcome
WHERE execution_status = 'FINISHED' AND task_name = ANY(%s::text[])
"""


def curve_points(
    total_subtasks: int | None, duration: float, ends: Sequence[float]
) -> list[tuple[float, float]]:
    """(progress mark, time fraction) of one finished run: the k-th leaf end is mark k/total.

    ``total`` is the run's declared subtask count, or the number of leaf ends when it declared
    none or fewer than it ended (nested subtasks counted as leaves).
    """
    if duration <= 0 or not ends:
        return []
    total = total_subtasks if total_subtasks and total_subtasks >= len(ends) else len(ends)
    return [(k / total, min(max(end / duration, 0.0), 1.0)) for k, end in enumerate(ends, 1)]


def curves_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, ProgressCurve]:
    """Rows of CURVE_SQL to one curve per task that has usable points."""
    per_task: dict[str, list[list[tuple[float, float]]]] = {}
    for task, total, duration, ends in rows:
        points = curve_points(total, float(duration), [float(e) for e in ends or ()])
        if points:
            per_task.setdefault(str(task), []).append(points)
    curves = {}
    for task, runs in per_task.items():
        curve = ProgressCurve.from_runs(runs)
        if curve is not None:
            curves[task] = curve
    return curves


def read_curves(cur: psycopg.Cursor[Any], tasks: Sequence[str]) -> dict[str, ProgressCurve]:
    """The progress curve of each of ``tasks`` that has one."""
    if not tasks:
        return {}
    return curves_from_rows(cur.execute(CURVE_SQL, (list(tasks),)).fetchall())


def read_durations(cur: psycopg.Cursor[Any], tasks: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Recent FINISHED durations of each of ``tasks`` that has finished before."""
    if not tasks:
        return {}
    rows = cur.execute(DURATIONS_SQL, (list(tasks),)).fetchall()
    return {str(task): tuple(float(d) for d in cast(list[float], ds) or ()) for task, ds in rows}


def predicted_total(
    elapsed: float,
    progress: float | None,
    recent_durations: Sequence[float] = (),
    curve: ProgressCurve | None = None,
) -> float | None:
    """predict_total, with unreported progress counting as none."""
    return predict_total(elapsed, progress or 0.0, recent_durations, curve)
