"""Moving finished runs into the partitioned history, and dropping old history partitions.

1. Pick a batch of runs that ended before the cut-off (oldest first), locking them with
   SKIP LOCKED so a concurrent archiver or writer never waits on us.
2. Create the monthly history partitions the batch needs.
3. Copy the subtasks, then the runs, into the history; delete the runs (subtasks cascade).
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

logger = logging.getLogger("tracker")

FINAL = ("FINISHED", "FAILED", "CANCELLED")
DEFAULT_BATCH = 1000
_PARTITION = re.compile(r"^pipeline_(status|subtask)_history_(\d{4})(\d{2})$")


@dataclass(frozen=True)
class ArchiveResult:
    runs: int
    subtasks: int
    batches: int


def archive(
    conn: psycopg.Connection[tuple[object, ...]],
    older_than: timedelta,
    *,
    batch_size: int = DEFAULT_BATCH,
) -> ArchiveResult:
    """Move runs that ended more than ``older_than`` ago. ``conn`` must be autocommit."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    runs = subtasks = batches = 0
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
            moved_subtasks = conn.execute(
                "INSERT INTO pipeline_subtask_history"
                " SELECT st.*, s.execution_start FROM pipeline_subtask st"
                " JOIN pipeline_status s USING (run_id) WHERE st.run_id = ANY(%s)",
                (ids,),
            ).rowcount
            conn.execute(
                "INSERT INTO pipeline_status_history SELECT * FROM pipeline_status"
                " WHERE run_id = ANY(%s)",
                (ids,),
            )
            conn.execute("DELETE FROM pipeline_status WHERE run_id = ANY(%s)", (ids,))
        runs += len(batch)
        subtasks += moved_subtasks
        batches += 1
        logger.debug("archived a batch of %d runs", len(batch))
        if len(batch) < batch_size:
            break
    return ArchiveResult(runs=runs, subtasks=subtasks, batches=batches)


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
        " AND p.relname IN ('pipeline_status_history', 'pipeline_subtask_history')"
        " ORDER BY c.relname"
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
