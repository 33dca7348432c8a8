"""Moving finished runs into the partitioned history, and dropping old history partitions.

1. Pick a batch of runs that ended before the cut-off (oldest first), locking them with
   SKIP LOCKED so a concurrent archiver or writer never waits on us.
2. Create the monthly history partitions the batch needs.
3. Copy the subtasks and the resource samples, then the runs, into the history; delete the runs
   (subtasks and samples cascade).
4. Commit, and repeat until a batch comes back short.
Each batch is one short transaction, so writers keep writing while an archive runs. Only runs
in a final state move, and the schema skips late re-inserts of archived runs (sql/0006).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

logger = logging.getLogger("tracker")

FINAL = ("FINISHED", "FAILED", "CANCELLED")
DEFAULT_BATCH = 1000
_HISTORY_TABLES = (
    "pipeline_status_history",
    "pipeline_subtask_history",
    "pipeline_run_sample_history",
)
_PARTITION = re.compile(r"^pipeline_(status|subtask|run_sample)_history_(\d{4})(\d{2})$")
# Tables whose rows follow their run into a history table that adds the run's execution_start.
_FOLLOWERS = (
    ("pipeline_subtask", "pipeline_subtask_history"),
    ("pipeline_run_sample", "pipeline_run_sample_history"),
)


@dataclass(frozen=True)
class ArchiveResult:
    runs: int
    subtasks: int
    samples: int
    batches: int


def _follower_copies(conn: psycopg.Connection[tuple[object, ...]]) -> list[sql.Composed | None]:
    """For each follower table, an INSERT copying a batch's rows into its history, naming the
    columns: a migration that adds a column appends it after the history's execution_start.
    None for a table the schema does not have yet (a database not upgraded to this version)."""
    from psycopg import sql

    copies: list[sql.Composed | None] = []
    for table, history in _FOLLOWERS:
        found = conn.execute("SELECT to_regclass(%s), to_regclass(%s)", (table, history))
        if None in (found.fetchone() or (None,)):
            copies.append(None)
            continue
        names = [
            str(name)
            for (name,) in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (table,),
            ).fetchall()
        ]
        columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        copies.append(
            sql.SQL(
                "INSERT INTO {history} ({columns}, execution_start)"
                " SELECT {selected}, s.execution_start FROM {table} AS t"
                " JOIN pipeline_status AS s USING (run_id) WHERE t.run_id = ANY(%s)"
            ).format(
                history=sql.Identifier(history),
                columns=columns,
                selected=sql.SQL(", ").join(sql.Identifier("t", n) for n in names),
                table=sql.Identifier(table),
            )
        )
    return copies


def archive(
    conn: psycopg.Connection[tuple[object, ...]],
    older_than: timedelta,
    *,
    batch_size: int = DEFAULT_BATCH,
) -> ArchiveResult:
    """Move runs that ended more than ``older_than`` ago. ``conn`` must be autocommit."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    runs = subtasks = samples = batches = 0
    copy_subtasks, copy_samples = _follower_copies(conn)
    while True:
        with conn.transaction():
            batch = conn.execute(
                "SELECT run_id, execution_start FROM pipeline_status"
                " WHERE execution_status = ANY(%s) AND execution_end < now() - %s"
                " ORDER BY execution_start LIMIT %s FOR UPDATE SKIP LOCKED",
                (list(FINAL), older_than, batch_size),
            ).fetchall()
            if not batch:
                break
            for (month,) in conn.execute(
                "SELECT DISTINCT date_trunc('month', s, 'UTC') FROM unnest(%s::timestamptz[]) s",
                ([start for _, start in batch],),
            ).fetchall():
                conn.execute("SELECT ensure_history_partition(%s)", (month,))
            ids = [run_id for run_id, _ in batch]
            moved_subtasks = moved_samples = 0
            if copy_subtasks is not None:
                moved_subtasks = conn.execute(copy_subtasks, (ids,)).rowcount
            if copy_samples is not None:
                moved_samples = conn.execute(copy_samples, (ids,)).rowcount
            conn.execute(
                "INSERT INTO pipeline_status_history SELECT * FROM pipeline_status"
                " WHERE run_id = ANY(%s)",
                (ids,),
            )
            conn.execute("DELETE FROM pipeline_status WHERE run_id = ANY(%s)", (ids,))
        runs += len(batch)
        subtasks += moved_subtasks
        samples += moved_samples
        batches += 1
        logger.debug("archived a batch of %d runs", len(batch))
        if len(batch) < batch_size:
            break
    return ArchiveResult(runs=runs, subtasks=subtasks, batches=batches, samples=samples)


def drop_partitions(
    conn: psycopg.Connection[tuple[object, ...]], older_than: timedelta, *, now: datetime
) -> list[str]:
    """Drop history partitions whose whole month ended more than ``older_than`` before ``now``."""
    from psycopg import sql

    cutoff = now - older_than
    dropped = []
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE n.nspname = current_schema()"
        " AND p.relname = ANY(%s) ORDER BY c.relname",
        (list(_HISTORY_TABLES),),
    ).fetchall()
    for (name,) in rows:
        match = _PARTITION.match(str(name))
        if not match:
            continue
        year, month = int(match.group(2)), int(match.group(3))
        month_end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=cutoff.tzinfo)
        if month_end <= cutoff:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(str(name))))
            dropped.append(str(name))
    return dropped
