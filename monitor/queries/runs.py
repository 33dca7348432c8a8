"""The Run view: one run's record, subtasks, parent and children, resource samples.

Every lookup is by key: the run by ``run_id`` (unique in pipeline_status, first column of the
history's primary key), its subtasks by their primary key, its children through the partial
index on ``parent_run_id`` (and, for archived runs, only the history months from the parent's
start on).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from monitor.queries._common import ACTIVE, Row, elapsed_sql, fetch
from monitor.queries.now import condition, eta_seconds
from tracker._model.secrets import mask_secrets
from tracker._ops.eta_history import read_curves, read_durations
from tracker._runtime.context import REDACTED, looks_secret

if TYPE_CHECKING:
    import psycopg

RUN_SQL = f"""
SELECT r.*, {elapsed_sql("r.execution_start", "r.execution_end")} AS elapsed_seconds,
       a.lost, a.stalled,
       EXTRACT(EPOCH FROM a.heartbeat_age)::float8 AS heartbeat_age_seconds,
       EXTRACT(EPOCH FROM a.progress_age)::float8 AS progress_age_seconds
FROM pipeline_runs AS r
LEFT JOIN pipeline_active_runs AS a ON a.run_id = r.run_id
WHERE r.run_id = %s
"""

SUBTASK_TOTALS = """cpu_seconds, peak_rss_bytes, disk_read_bytes, disk_write_bytes,
    tcp_received_bytes, tcp_sent_bytes, counts"""
"""What each subtask used and counted (sql/0010)."""

SUBTASKS_SQL = f"""
SELECT subtask_index, parent_index, subtask_name, subtask_status, started_at, ended_at,
       items_total, items_complete, message, {SUBTASK_TOTALS},
       {elapsed_sql("started_at", "ended_at")} AS elapsed_seconds
FROM (SELECT subtask_index, parent_index, subtask_name, subtask_status, started_at, ended_at,
             items_total, items_complete, message, {SUBTASK_TOTALS}
      FROM pipeline_subtask WHERE run_id = %(run)s
      UNION ALL
      SELECT subtask_index, parent_index, subtask_name, subtask_status, started_at, ended_at,
             items_total, items_complete, message, {SUBTASK_TOTALS}
      FROM pipeline_subtask_history WHERE run_id = %(run)s) AS s
ORDER BY subtask_index
"""

RELATED_COLUMNS = f"""run_id, task_name, execution_status, execution_start, execution_end,
    {elapsed_sql()} AS elapsed_seconds"""

CHILDREN_SQL = f"""
SELECT {RELATED_COLUMNS} FROM pipeline_runs
WHERE parent_run_id = %(run)s AND execution_start >= %(start)s - interval '1 day'
ORDER BY execution_start, run_id
LIMIT 500
"""

PARENT_SQL = f"SELECT {RELATED_COLUMNS} FROM pipeline_runs WHERE run_id = %s"

SAMPLES_TABLE = "pipeline_run_sample"
"""Resource samples over a run's life (issue 17); read only where a migration created it."""
SAMPLES_LIMIT = 20_000
SAMPLES_SQL = (
    f"SELECT * FROM {SAMPLES_TABLE} WHERE run_id = %s ORDER BY sampled_at LIMIT {SAMPLES_LIMIT}"
)


@dataclass(frozen=True)
class RunDetail:
    """One run: its record (every column, the environment redacted), ``eta_seconds`` and
    ``condition`` among them; its subtasks in the order entered; related runs; samples."""

    run: Row
    subtasks: list[Row] = field(default_factory=list)
    parent: Row | None = None
    children: list[Row] = field(default_factory=list)
    samples: list[Row] = field(default_factory=list)


def redacted_environment(environment: object) -> dict[str, str] | None:
    """A run's recorded environment as shown: secret-looking names' values as ``****`` and
    secrets inside the other values masked (the recorder did both; a row written by another
    client may not have)."""
    if not isinstance(environment, dict):
        return None
    return {
        str(name): REDACTED if looks_secret(str(name)) else mask_secrets(str(value))
        for name, value in environment.items()
    }


def subtasks(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> list[Row]:
    """The run's subtasks in the order they were entered, with ``elapsed_seconds``."""
    return fetch(conn, SUBTASKS_SQL, {"run": run_id})


def run_samples(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> list[Row]:
    """The run's resource samples, oldest first: ``t`` (Unix seconds) and each numeric figure
    of the sample by its column name. Empty until the samples table exists (issue 17)."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SAMPLES_TABLE,)).fetchone()
    if not found or not found[0]:
        return []
    rows = fetch(conn, SAMPLES_SQL, (run_id,))
    samples = []
    for row in rows:
        sample: Row = {"t": row["sampled_at"].timestamp()}
        for name, value in row.items():
            if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
                sample[name] = float(value)
        samples.append(sample)
    return samples


def run_detail(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> RunDetail | None:
    """Everything recorded about ``run_id``, or None if no such run exists."""
    found = fetch(conn, RUN_SQL, (run_id,))
    if not found:
        return None
    run = found[0]
    run["environment"] = redacted_environment(run.get("environment"))
    for key in ("error_message", "error_detail"):
        if run.get(key):
            run[key] = mask_secrets(str(run[key]))
    run["eta_seconds"] = None
    if run["execution_status"] in ACTIVE:
        with conn.cursor() as cur:
            task = [str(run["task_name"])]
            run["recent_durations"] = list(read_durations(cur, task).get(task[0], ()))
            run["eta_seconds"] = eta_seconds(run, read_curves(cur, task).get(task[0]))
    run["overdue"] = None
    run["condition"] = condition(run)
    parent = None
    if run.get("parent_run_id") is not None:
        parents = fetch(conn, PARENT_SQL, (run["parent_run_id"],))
        parent = parents[0] if parents else {"run_id": run["parent_run_id"]}
    children = fetch(conn, CHILDREN_SQL, {"run": run_id, "start": run["execution_start"]})
    return RunDetail(
        run=run,
        subtasks=subtasks(conn, run_id),
        parent=parent,
        children=children,
        samples=run_samples(conn, run_id),
    )
