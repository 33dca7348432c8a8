"""Declaring lost the runs whose process died without a word (kill -9, OOM, host crash).

1. Find active runs whose heartbeat (``last_update``) is older than the threshold.
2. On the run's own host, look at its pid: a process that still exists and started before the
   run did is alive (paused, or unable to reach the database) and keeps its run.
3. Mark the rest FAILED with a reason, compare-and-set on ``seq`` and the status, so a run that
   wrote (or finished) after we looked keeps what it wrote.
``reap_once`` is what ``pipetrack reap`` runs; the exporter runs it under an advisory lock so
that only one of several exporters acts.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast
from uuid import UUID

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("tracker")

DEFAULT_HEARTBEAT = timedelta(seconds=15)
# Four missed heartbeats: long enough that a busy machine or a short database blip never reaps
# a live run, short enough that a dead one is noticed within a minute or two.
DEFAULT_STALE_AFTER = 4 * DEFAULT_HEARTBEAT
# "pipetrk" + 1: distinct from the migration lock.
REAPER_LOCK_KEY = 0x70697065747264


@dataclass(frozen=True)
class ReapedRun:
    run_id: UUID
    task_name: str
    reason: str


def process_is_alive(pid: int, started: datetime) -> bool:
    """Whether ``pid`` is a live process that existed when the run started (no reused pid)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # A pid reused by a process started after the run began is not the run's process.
        return process.create_time() <= started.timestamp() + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reap_once(
    conn: psycopg.Connection[tuple[object, ...]],
    *,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    hostname: str | None = None,
    only_here: bool = False,
) -> list[ReapedRun]:
    """Mark lost runs FAILED; return them. ``conn`` must be autocommit.

    ``only_here``: look at the runs of this host only, whose pid it can check (the exporter's
    quicker verdict on runs of its own host, with a shorter ``stale_after``).
    """
    here = hostname or socket.gethostname()
    candidates = conn.execute(
        "SELECT run_id, task_name, hostname, process_id, execution_start, last_update, seq,"
        " now() - last_update FROM pipeline_status"
        " WHERE execution_status IN ('STARTED', 'RUNNING') AND last_update < now() - %s"
        " AND (NOT %s OR hostname = %s)",
        (stale_after, only_here, here),
    ).fetchall()
    reaped = []
    for run_id, task, host, pid, started_at, last_seen, seq, quiet_for in candidates:
        started, last_update = cast(datetime, started_at), cast(datetime, last_seen)
        silence = cast(timedelta, quiet_for)
        if host == here and isinstance(pid, int):
            if process_is_alive(pid, started):
                logger.debug("run %s is silent but its process %s is alive", run_id, pid)
                continue
            why = f"process {pid} on {host} is gone"
        else:
            why = f"cannot check process {pid} on {host} from {here}"
        reason = (
            f"lost: no heartbeat for {int(silence.total_seconds())} s "
            f"(since {last_update.isoformat(timespec='seconds')}); {why}"
        )
        with conn.transaction():
            updated = conn.execute(
                "UPDATE pipeline_status SET execution_status = 'FAILED',"
                " execution_end = greatest(last_update, execution_start),"
                " subtask_status = CASE WHEN subtask_status = 'RUNNING' THEN 'FAILED'"
                " ELSE subtask_status END,"
                " error_message = %s, seq = seq + 1, last_update = now()"
                " WHERE run_id = %s AND seq = %s AND execution_status IN ('STARTED', 'RUNNING')",
                (reason, run_id, seq),
            ).rowcount
            if updated:
                conn.execute(
                    "UPDATE pipeline_subtask SET subtask_status = 'FAILED',"
                    " ended_at = greatest(%s, started_at)"
                    " WHERE run_id = %s AND subtask_status = 'RUNNING'",
                    (last_update, run_id),
                )
        if updated:
            logger.warning("run %s of %s marked FAILED: %s", run_id, task, reason)
            reaped.append(ReapedRun(run_id=UUID(str(run_id)), task_name=str(task), reason=reason))
    return reaped


def reap_if_leader(
    conn: psycopg.Connection[tuple[object, ...]], *, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> list[ReapedRun] | None:
    """``reap_once`` if no other process holds the reaper lock; None if one does."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (REAPER_LOCK_KEY,)).fetchone()
    if not row or not row[0]:
        return None
    try:
        return reap_once(conn, stale_after=stale_after)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (REAPER_LOCK_KEY,))
