"""The Failures view: failed, lost and cancelled runs in a time range, grouped by error.

Runs are picked by start time (the index on ``execution_start`` of the hot table; the history's
monthly partitions outside the range are pruned). An error's group key is the first line of its
message with every number replaced by ``N``, so "no heartbeat for 75 s" and "... 93 s" are one
group. A run the reaper marked FAILED (its message starts ``lost:``) counts as LOST, as does a
running run pipeline_active_runs finds silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitor.queries._common import Row, database_now, fetch

if TYPE_CHECKING:
    import psycopg

OUTCOMES = ("FAILED", "LOST", "CANCELLED")
DEFAULT_RANGE = timedelta(days=7)
EXAMPLES = 5

# Numbers inside the first line (at most 200 characters) fold into N.
_KEY = (
    r"regexp_replace(left(split_part(coalesce(error_message, ''), E'\n', 1), 200),"
    r" '[0-9]+', 'N', 'g')"
)

FAILURES_SQL = f"""
WITH picked AS (
    SELECT r.run_id, r.task_name, r.execution_start, r.error_message, r.exit_code,
           CASE WHEN r.execution_status = 'FAILED' AND r.error_message LIKE 'lost:%%' THEN 'LOST'
                WHEN a.lost THEN 'LOST'
                ELSE r.execution_status END AS outcome,
           CASE WHEN a.lost THEN 'lost: no heartbeat (not reaped yet)' ELSE {_KEY} END AS error_key
    FROM pipeline_runs AS r
    LEFT JOIN pipeline_active_runs AS a ON a.run_id = r.run_id AND a.lost
    WHERE r.execution_start >= %(since)s AND r.execution_start < %(until)s
      AND (r.execution_status IN ('FAILED', 'CANCELLED') OR a.lost)
)
SELECT error_key, outcome, count(*) AS runs,
       count(DISTINCT task_name) AS task_count,
       (array_agg(DISTINCT task_name))[1:20] AS tasks,
       min(execution_start) AS first_start, max(execution_start) AS last_start,
       (array_agg(run_id ORDER BY execution_start DESC))[1:{EXAMPLES}] AS recent_runs,
       (array_agg(error_message ORDER BY execution_start DESC))[1] AS example_message,
       (array_agg(exit_code ORDER BY execution_start DESC))[1] AS example_exit_code
FROM picked
WHERE outcome = ANY(%(outcomes)s::text[])
GROUP BY error_key, outcome
ORDER BY runs DESC, last_start DESC
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class FailureFilter:
    """Runs started in [since, until) (default: the last 7 days) with one of ``outcomes``."""

    since: datetime | None = None
    until: datetime | None = None
    outcomes: tuple[str, ...] = OUTCOMES
    limit: int = 200

    def __post_init__(self) -> None:
        unknown = set(self.outcomes) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcome(s) {sorted(unknown)}")


@dataclass(frozen=True)
class Failures:
    """Groups of runs by error (each: ``error_key``, ``outcome``, ``runs``, ``tasks``, first and
    last start, the ids of the most recent runs, an example message), most frequent first."""

    since: datetime
    until: datetime
    groups: list[Row] = field(default_factory=list)
    total: int = 0


def failures(conn: psycopg.Connection[Any], wanted: FailureFilter | None = None) -> Failures:
    """The Failures view for ``wanted``'s range."""
    wanted = wanted or FailureFilter()
    until = wanted.until or database_now(conn)
    since = wanted.since or until - DEFAULT_RANGE
    groups = fetch(
        conn,
        FAILURES_SQL,
        {
            "since": since,
            "until": until,
            "outcomes": list(wanted.outcomes or OUTCOMES),
            "limit": wanted.limit,
        },
    )
    return Failures(
        since=since, until=until, groups=groups, total=sum(int(g["runs"]) for g in groups)
    )
