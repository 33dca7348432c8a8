"""The few SQL statements behind a scrape, and the snapshot they produce.

Each reads a structure whose size grows with tasks, not runs:
  latest      pipeline_latest_run (sql/0004): pipeline_task_latest joined by key to the run
  running     the partial index idx_pipeline_status_active (only STARTED/RUNNING rows)
  outcomes    pipeline_task_outcomes (sql/0004), the trigger-kept counter source
  last_ended  pipeline_task_last_outcome (sql/0005), last run and durations per final status
  declared    pipeline_task_schedule (sql/0006) and the runs started since each scheduled task's
              last expected start (exporter/_schedule.py)
  curves      for tasks running now only, the subtask ends of their last few FINISHED runs
              (tracker/_ops/eta_history.py), for the predicted finish
  resources   for runs running now only, their last two resource samples (sql/0010), by key
  totals      per task, its latest ended run (from pipeline_task_last_outcome), by key
All run in one REPEATABLE READ, READ ONLY transaction, so a scrape sees one moment; nothing
writes or takes a lock beyond a reader's, so the database may be a hot standby (recovery reads
whether it is one, and how far behind).
Times come back as float8 epoch seconds: converting 10,000 datetimes per scrape costs more
than the queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from exporter._schedule import Declared, read_declared
from tracker._ops.eta import ProgressCurve
from tracker._ops.eta_history import read_curves

if TYPE_CHECKING:
    import psycopg

# The clock, and whether this is a standby and how far behind it is. A standby that has
# replayed all the WAL it received is not behind, however old its last replayed commit: a quiet
# primary writes nothing to replay (postgres_exporter's pg_replication_lag answers the same way).
# NULL lag: not a standby, or one that has replayed no transaction yet while it has WAL to replay.
RECOVERY_SQL = """
SELECT extract(epoch FROM statement_timestamp())::float8,
       pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM statement_timestamp() - pg_last_xact_replay_timestamp())
       END::float8
"""

LATEST_SQL = """
SELECT task_name, task_stage, execution_status,
       extract(epoch FROM execution_start)::float8
FROM pipeline_latest_run
"""

# Newest first within a task, so the first row of each task is its current run.
RUNNING_SQL = """
SELECT task_name,
       extract(epoch FROM execution_start)::float8,
       extract(epoch FROM last_update)::float8,
       extract(epoch FROM last_progress)::float8,
       overall_percent_complete::float8,
       subtask_percent_complete::float8,
       current_subtask,
       total_subtasks,
       subtask_status,
       subtask_items_total,
       subtask_items_complete,
       memory_mb,
       cpu_percent::float8
FROM pipeline_status
WHERE execution_status IN ('STARTED', 'RUNNING')
ORDER BY task_name, execution_start DESC, run_id DESC
"""

OUTCOMES_SQL = "SELECT task_name, execution_status, runs FROM pipeline_task_outcomes"

# A running run's newest sample and the one before it (the samples' primary key, twice): rates
# are their differences over the time between them.
RESOURCES_SQL = """
SELECT s.task_name,
       extract(epoch FROM a.sampled_at - b.sampled_at)::float8,
       (a.disk_read_bytes - b.disk_read_bytes)::float8,
       (a.disk_write_bytes - b.disk_write_bytes)::float8,
       (a.tcp_received_bytes - b.tcp_received_bytes)::float8,
       (a.tcp_sent_bytes - b.tcp_sent_bytes)::float8,
       a.db_connections,
       a.open_fds
FROM pipeline_status AS s
CROSS JOIN LATERAL (
    SELECT * FROM pipeline_run_sample AS r WHERE r.run_id = s.run_id
    ORDER BY r.sampled_at DESC LIMIT 1
) AS a
LEFT JOIN LATERAL (
    SELECT * FROM pipeline_run_sample AS r WHERE r.run_id = s.run_id AND r.sampled_at < a.sampled_at
    ORDER BY r.sampled_at DESC LIMIT 1
) AS b ON true
WHERE s.execution_status IN ('STARTED', 'RUNNING')
ORDER BY s.task_name
"""

# Each task's latest ended run (the greatest end among its final statuses), hot or archived.
TOTALS_SQL = """
SELECT o.task_name, r.cpu_seconds, r.peak_memory_mb, r.disk_read_bytes, r.disk_write_bytes,
       r.tcp_received_bytes, r.tcp_sent_bytes, r.counts
FROM (
    SELECT DISTINCT ON (task_name) task_name, run_id, execution_start
    FROM pipeline_task_last_outcome
    ORDER BY task_name, execution_end DESC, run_id DESC
) AS o
CROSS JOIN LATERAL (
    SELECT s.cpu_seconds, s.peak_memory_mb, s.disk_read_bytes, s.disk_write_bytes,
           s.tcp_received_bytes, s.tcp_sent_bytes, s.counts
    FROM pipeline_status AS s WHERE s.run_id = o.run_id
    UNION ALL
    SELECT h.cpu_seconds, h.peak_memory_mb, h.disk_read_bytes, h.disk_write_bytes,
           h.tcp_received_bytes, h.tcp_sent_bytes, h.counts
    FROM pipeline_status_history AS h
    WHERE h.run_id = o.run_id AND h.execution_start = o.execution_start
    LIMIT 1
) AS r
"""

LAST_ENDED_SQL = """
SELECT task_name, execution_status,
       extract(epoch FROM execution_start)::float8,
       extract(epoch FROM execution_end)::float8,
       recent_durations
FROM pipeline_task_last_outcome
"""


@dataclass(frozen=True)
class LatestRun:
    task: str
    stage: str | None
    status: str
    start: float


@dataclass(frozen=True)
class RunningRun:
    task: str
    start: float
    last_update: float
    last_progress: float | None
    overall_percent: float | None
    subtask_percent: float | None
    current_subtask: int | None
    total_subtasks: int | None
    subtask_status: str | None
    items_total: int | None
    items_complete: int | None
    memory_mb: int | None
    cpu_percent: float | None


@dataclass(frozen=True)
class LastEnded:
    task: str
    status: str
    start: float
    end: float
    recent_durations: tuple[float, ...]


@dataclass(frozen=True)
class RunResources:
    """A running run's last sample, and its growth since the sample before (None: no such
    sample, or the figure unknown)."""

    task: str
    span: float | None  # seconds between the two samples
    disk_read: float | None
    disk_write: float | None
    tcp_received: float | None
    tcp_sent: float | None
    db_connections: int | None
    open_fds: int | None


@dataclass(frozen=True)
class EndedTotals:
    """What a task's latest ended run used in all, and its work counts."""

    task: str
    cpu_seconds: float | None
    peak_memory_mb: int | None
    disk_read: int | None
    disk_write: int | None
    tcp_received: int | None
    tcp_sent: int | None
    counts: dict[str, Any] | None


@dataclass(frozen=True)
class ScrapeSnapshot:
    """What one read of the database returned; ``at`` is the database's clock then.

    ``in_recovery``: the database is a standby; ``replica_lag``: then, how many seconds of
    commits it has received and not replayed (None when not a standby, or not known).
    """

    at: float
    latest: tuple[LatestRun, ...]
    running: tuple[RunningRun, ...]
    outcomes: tuple[tuple[str, str, int], ...]
    last_ended: tuple[LastEnded, ...]
    declared: tuple[Declared, ...] = ()
    curves: dict[str, ProgressCurve] = field(default_factory=dict)
    resources: tuple[RunResources, ...] = ()
    totals: tuple[EndedTotals, ...] = ()
    in_recovery: bool = False
    replica_lag: float | None = None


def read_snapshot(conn: psycopg.Connection[tuple[object, ...]], timeout: float) -> ScrapeSnapshot:
    """Run the scrape's statements in one read-only transaction, each bounded by ``timeout``."""
    with conn.transaction():
        # Rows are untyped tuples; the dataclasses above give them their types. Binary
        # results: parsing 1,000 recent_durations arrays from text cost more than the query
        # (the values are the same; float8 text output is exact since PostgreSQL 12).
        cur = cast("psycopg.Cursor[tuple[Any, ...]]", conn.cursor(binary=True))
        # SET LOCAL takes no parameters; the value is a number formatted here.
        cur.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}")
        at_row = cur.execute(RECOVERY_SQL).fetchone()
        at, in_recovery, lag = at_row if at_row else (0.0, False, None)
        # fetchall(): one call into psycopg per statement instead of one per row.
        latest = tuple(LatestRun(*row) for row in cur.execute(LATEST_SQL).fetchall())
        running = tuple(RunningRun(*row) for row in cur.execute(RUNNING_SQL).fetchall())
        outcomes = tuple(
            (str(t), str(s), int(n)) for t, s, n in cur.execute(OUTCOMES_SQL).fetchall()
        )
        last_ended = tuple(
            LastEnded(str(task), str(status), float(start), float(end), tuple(durations or ()))
            for task, status, start, end, durations in cur.execute(LAST_ENDED_SQL).fetchall()
        )
        declared = read_declared(cur, at)
        curves = read_curves(cur, sorted({run.task for run in running}))
        resources = tuple(RunResources(*row) for row in cur.execute(RESOURCES_SQL).fetchall())
        totals = tuple(EndedTotals(*row) for row in cur.execute(TOTALS_SQL).fetchall())
        cur.close()
    return ScrapeSnapshot(
        float(at),
        latest,
        running,
        outcomes,
        last_ended,
        declared,
        curves,
        resources,
        totals,
        in_recovery=bool(in_recovery),
        # Clock skew between the hosts can make a lag slightly negative: it is none.
        replica_lag=None if lag is None else max(0.0, float(lag)),
    )
