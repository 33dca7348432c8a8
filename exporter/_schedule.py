"""Declared tasks (``pipeline_task_schedule``) as scrape data: expected starts and their checks.

Read in the scrape's transaction, in two steps: the declarations, then, for the scheduled ones,
the runs started since each task's last expected start (the index (task_name, execution_start
DESC) of the hot and history tables; ``pipeline_runs`` puts the predicate into both). Cron
times are computed here, in the exporter, and cached until the next expected start passes, so a
scrape of a thousand declared tasks does not step a thousand cron iterators.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tracker._ops.registry import DeclaredTask

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("exporter")

SCHEDULE_SQL = """
SELECT task_name, task_stage, schedule, timezone,
       extract(epoch FROM start_grace)::float8,
       extract(epoch FROM max_duration)::float8,
       depends_on,
       extract(epoch FROM stall_after)::float8,
       extract(epoch FROM synced_at)::float8
FROM pipeline_task_schedule
"""

# Per scheduled task: runs started in [since, since + grace], and since `since` at all. The
# arrays travel in binary and times as epoch seconds: dumping 1,000 quoted names, datetimes and
# timedeltas per scrape cost more than the statement (cron times are whole seconds, exact as
# float8 and through to_timestamp).
STARTS_SQL = """
SELECT d.task_name,
       count(r.execution_start) FILTER (WHERE r.execution_start <= d.since + d.grace),
       count(r.execution_start)
FROM (SELECT u.task_name, to_timestamp(u.since) AS since, make_interval(secs => u.grace) AS grace
      FROM unnest(%b::text[], %b::float8[], %b::float8[]) AS u(task_name, since, grace)) AS d
LEFT JOIN pipeline_runs AS r ON r.task_name = d.task_name AND r.execution_start >= d.since
GROUP BY d.task_name
"""


@dataclass(frozen=True)
class Declared:
    """One declared task as the scrape sees it; times are Unix seconds."""

    task: str
    stage: str | None
    schedule: str | None
    timezone: str
    start_grace: float
    max_duration: float | None
    depends_on: tuple[str, ...]
    stall_after: float | None
    synced_at: float
    previous_start: float | None = None
    next_start: float | None = None
    started_in_grace: int = 0
    started_since: int = 0

    def cron(self) -> DeclaredTask:
        return DeclaredTask(
            name=self.task, stage=self.stage or "", schedule=self.schedule, timezone=self.timezone
        )


class _CronCache:
    """(schedule, zone) -> (previous, next) expected start, valid until ``next`` passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[float | None, float]] = {}

    def around(self, schedule: str, zone: str, at: float) -> tuple[float | None, float | None]:
        key = (schedule, zone)
        with self._lock:
            hit = self._known.get(key)
        if hit is not None and hit[0] is not None and hit[0] <= at < hit[1]:
            return hit
        task = DeclaredTask(name="", stage="", schedule=schedule, timezone=zone)
        moment = datetime.fromtimestamp(at, timezone.utc)
        before, after = task.previous_start(moment), task.next_start(moment)
        found = (
            None if before is None else before.timestamp(),
            None if after is None else after.timestamp(),
        )
        if found[1] is not None:
            with self._lock:
                if len(self._known) > 10_000:  # schedules are few; never grow without bound
                    self._known.clear()
                self._known[key] = (found[0], found[1])
        return found


CRON = _CronCache()
_WARNED: set[tuple[str, str, str]] = set()


def _warn_once(task: str, schedule: str, zone: str, exc: Exception) -> None:
    key = (task, schedule, zone)
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(
            "declared task %s: cannot use schedule %r in time zone %r (%s); ignoring it",
            task,
            schedule,
            zone,
            exc,
        )


def read_declared(cur: psycopg.Cursor[tuple[Any, ...]], at: float) -> tuple[Declared, ...]:
    """The declarations, with expected starts around ``at`` and the runs started since.

    1. Read the declarations; look up each schedule's expected starts around ``at``.
    2. Count, for the scheduled ones, the runs started since their last expected start.
    3. Build each Declared once, from all of that (a frozen dataclass built twice per task, as
       dataclasses.replace does, cost more than the statements at 1,000 tasks).
    """
    rows = []
    for task, stage, schedule, zone, grace, longest, depends, stall, synced in cur.execute(
        SCHEDULE_SQL
    ).fetchall():
        name, cron, zone_name = str(task), None if schedule is None else str(schedule), str(zone)
        around: tuple[float | None, float | None] = (None, None)
        if cron is not None:
            try:
                around = CRON.around(cron, zone_name, at)
            except Exception as exc:
                # A row written around `pipetrack tasks sync` (which validates) must not cost
                # every other task its series: this one is served as if it had no schedule.
                _warn_once(name, cron, zone_name, exc)
                cron = None
        fields = (
            name,
            None if stage is None else str(stage),
            cron,
            zone_name,
            float(grace),
            None if longest is None else float(longest),
            tuple(str(d) for d in depends or ()),
            None if stall is None else float(stall),
            float(synced),
        )
        rows.append((fields, around))
    since = [(fields, before) for fields, (before, _) in rows if before is not None]
    counts: dict[str, tuple[int, int]] = {}
    if since:
        counts = {
            str(task): (int(in_grace), int(total))
            for task, in_grace, total in cur.execute(
                STARTS_SQL,
                (
                    [fields[0] for fields, _ in since],
                    [before for _, before in since],
                    [fields[4] for fields, _ in since],
                ),
            ).fetchall()
        }
    return tuple(
        Declared(*fields, before, after, *counts.get(fields[0], (0, 0)))
        for fields, (before, after) in rows
    )


def missed_start(declared: Declared, at: float) -> bool:
    """No run started within the grace after the last expected start, once the grace is over.

    Expected starts from before the declaration last changed (``synced_at``) do not count: a
    task declared at 10:00 with a 02:00 schedule has not missed today's start.
    """
    before = declared.previous_start
    if before is None or before < declared.synced_at:
        return False
    return at > before + declared.start_grace and declared.started_in_grace == 0


def started_before_dependency(
    run_start: float,
    dependencies: Sequence[Declared],
    last_success: dict[str, float],
) -> bool:
    """Whether a run that started at ``run_start`` did so before a dependency was done.

    A dependency is not done when it never succeeded, when its latest success ended after the
    run started, or (for a scheduled dependency) when it has not succeeded since its own last
    expected start before the run started.
    """
    for dependency in dependencies:
        success = last_success.get(dependency.task)
        if success is None or success > run_start:
            return True
        if dependency.schedule is not None:
            if dependency.previous_start is not None and dependency.previous_start <= run_start:
                # No cron time between its last one and now, so none after the run's start:
                # the common case, without stepping a cron iterator per scrape.
                expected: float | None = dependency.previous_start
            else:
                moment = dependency.cron().previous_start(
                    datetime.fromtimestamp(run_start, timezone.utc)
                )
                expected = None if moment is None else moment.timestamp()
            if expected is not None and success < expected:
                return True
    return False
