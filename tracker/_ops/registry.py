"""The registry of declared tasks: what should run, when, for how long, and after what.

A TOML file kept in the repository of pipelines, loaded into ``pipeline_task_schedule`` with
``pipetrack tasks sync``::

    [defaults]
    start_grace = "15m"          # how late a start may be before it counts as missed
    timezone = "UTC"             # the cron schedules' time zone

    [tasks.DAILY_01_BDC_Locations]
    schedule = "0 2 * * *"       # cron, 5 fields; omit for tasks started by hand
    max_duration = "3h"
    stall_after = "45m"          # no progress this long while heartbeating: stalled (default 30m)
    depends_on = ["PREREQ_01_download"]
    # stage = "DAILY"            # derived from the name's prefix when omitted

A sync replaces the table's contents with the file's, in one transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tracker._model.stage import stage_of
from tracker._ops.durations import parse_duration
from tracker.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

DEFAULT_GRACE = timedelta(minutes=15)
_TASK_KEYS = {
    "stage",
    "schedule",
    "timezone",
    "start_grace",
    "max_duration",
    "stall_after",
    "depends_on",
    "description",
}
_DEFAULT_KEYS = {"start_grace", "timezone"}
_NAME_LIMIT = 255


@dataclass(frozen=True)
class DeclaredTask:
    name: str
    stage: str
    schedule: str | None = None
    timezone: str = "UTC"
    start_grace: timedelta = DEFAULT_GRACE
    max_duration: timedelta | None = None
    depends_on: tuple[str, ...] = ()
    description: str | None = None
    stall_after: timedelta | None = None

    def previous_start(self, at: datetime) -> datetime | None:
        """The latest scheduled start at or before ``at`` (None without a schedule)."""
        return self._cron(at, reverse=True)

    def next_start(self, at: datetime) -> datetime | None:
        """The first scheduled start after ``at`` (None without a schedule)."""
        return self._cron(at, reverse=False)

    def _cron(self, at: datetime, *, reverse: bool) -> datetime | None:
        if self.schedule is None:
            return None
        from cronsim import CronSim

        local = at.astimezone(ZoneInfo(self.timezone))
        if reverse:
            # CronSim steps strictly past its start; one second on makes "at or before" inclusive.
            local = local.replace(microsecond=0) + timedelta(seconds=1)
        found: datetime = next(CronSim(self.schedule, local, reverse=reverse))
        return found.astimezone(at.tzinfo)


@dataclass(frozen=True)
class SyncResult:
    added: tuple[str, ...]
    updated: tuple[str, ...]
    removed: tuple[str, ...]


def load(path: Path) -> list[DeclaredTask]:
    """The tasks declared in ``path``; ConfigurationError saying where a value is wrong."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, from PyPI
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(document) - {"defaults", "tasks"}
    if unknown:
        raise ConfigurationError(f"{path}: unknown section(s) {sorted(unknown)}")
    defaults = _table(document.get("defaults", {}), f"{path}: [defaults]")
    if set(defaults) - _DEFAULT_KEYS:
        raise ConfigurationError(
            f"{path}: [defaults] takes only {sorted(_DEFAULT_KEYS)}, not "
            f"{sorted(set(defaults) - _DEFAULT_KEYS)}"
        )
    tasks = _table(document.get("tasks", {}), f"{path}: [tasks]")
    declared = [
        _task(name, _table(body, f"{path}: [tasks.{name}]"), defaults, f"{path}: [tasks.{name}]")
        for name, body in tasks.items()
    ]
    names = {task.name for task in declared}
    for task in declared:
        missing = [d for d in task.depends_on if d not in names]
        if missing:
            raise ConfigurationError(
                f"{path}: [tasks.{task.name}] depends on undeclared task(s) {missing}"
            )
    return declared


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a table")
    return value


def _task(
    name: str, body: Mapping[str, Any], defaults: Mapping[str, Any], where: str
) -> DeclaredTask:
    if not name or len(name) > _NAME_LIMIT or "\x00" in name:
        raise ConfigurationError(f"{where}: a task name must be 1 to {_NAME_LIMIT} characters")
    extra = set(body) - _TASK_KEYS
    if extra:
        raise ConfigurationError(f"{where}: unknown key(s) {sorted(extra)}")
    merged = {**defaults, **body}

    def text(key: str) -> str | None:
        value = merged.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{where}: {key} must be a string, not {value!r}")
        return value

    schedule = text("schedule")
    if schedule is not None:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(schedule, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ConfigurationError(f"{where}: schedule {schedule!r} is not cron: {exc}") from None
    zone = text("timezone") or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{where}: unknown time zone {zone!r}") from None
    grace = text("start_grace")
    longest = text("max_duration")
    depends = merged.get("depends_on", [])
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise ConfigurationError(f"{where}: depends_on must be a list of task names")
    if name in depends:
        raise ConfigurationError(f"{where}: a task cannot depend on itself")
    max_duration = parse_duration(longest, what=f"{where} max_duration") if longest else None
    if max_duration is not None and max_duration <= timedelta(0):
        raise ConfigurationError(f"{where}: max_duration must be positive")
    stall = text("stall_after")
    stall_after = parse_duration(stall, what=f"{where} stall_after") if stall else None
    if stall_after is not None and stall_after <= timedelta(0):
        raise ConfigurationError(f"{where}: stall_after must be positive")
    return DeclaredTask(
        name=name,
        stage=text("stage") or stage_of(name),
        schedule=schedule,
        timezone=zone,
        start_grace=parse_duration(grace, what=f"{where} start_grace") if grace else DEFAULT_GRACE,
        max_duration=max_duration,
        depends_on=tuple(depends),
        description=text("description"),
        stall_after=stall_after,
    )


def sync(conn: psycopg.Connection[tuple[object, ...]], tasks: list[DeclaredTask]) -> SyncResult:
    """Make ``pipeline_task_schedule`` hold exactly ``tasks``. ``conn`` must be autocommit."""
    with conn.transaction():
        before = {
            str(r[0]): r[1:] for r in conn.execute(f"SELECT {_COLUMNS} FROM pipeline_task_schedule")
        }
        added, updated = [], []
        for task in tasks:
            row = _row(task)
            if task.name not in before:
                added.append(task.name)
            elif tuple(before[task.name]) != row[1:]:
                updated.append(task.name)
            else:
                continue
            conn.execute(
                f"INSERT INTO pipeline_task_schedule ({_COLUMNS}, synced_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
                " ON CONFLICT (task_name) DO UPDATE SET task_stage = EXCLUDED.task_stage,"
                " schedule = EXCLUDED.schedule, timezone = EXCLUDED.timezone,"
                " start_grace = EXCLUDED.start_grace, max_duration = EXCLUDED.max_duration,"
                " depends_on = EXCLUDED.depends_on, description = EXCLUDED.description,"
                " stall_after = EXCLUDED.stall_after,"
                " synced_at = now()",
                row,
            )
        removed = sorted(set(before) - {t.name for t in tasks})
        if removed:
            conn.execute("DELETE FROM pipeline_task_schedule WHERE task_name = ANY(%s)", (removed,))
    return SyncResult(tuple(added), tuple(updated), tuple(removed))


_COLUMNS = (
    "task_name, task_stage, schedule, timezone, start_grace, max_duration, depends_on, description,"
    " stall_after"
)


def _row(task: DeclaredTask) -> tuple[object, ...]:
    return (
        task.name,
        task.stage,
        task.schedule,
        task.timezone,
        task.start_grace,
        task.max_duration,
        list(task.depends_on),
        task.description,
        task.stall_after,
    )


def declared(conn: psycopg.Connection[tuple[object, ...]]) -> list[DeclaredTask]:
    """The tasks in ``pipeline_task_schedule``, by name."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM pipeline_task_schedule ORDER BY task_name")
    return [
        DeclaredTask(
            name=str(name),
            stage=str(stage),
            schedule=None if schedule is None else str(schedule),
            timezone=str(zone),
            start_grace=grace if isinstance(grace, timedelta) else DEFAULT_GRACE,
            max_duration=longest if isinstance(longest, timedelta) else None,
            depends_on=tuple(str(d) for d in depends) if isinstance(depends, list) else (),
            description=None if description is None else str(description),
            stall_after=stall if isinstance(stall, timedelta) else None,
        )
        for name, stage, schedule, zone, grace, longest, depends, description, stall in rows
    ]
