"""What every query of the monitor shares: rows as dicts, JSON-ready values, filters' checks.

Rows are plain dicts keyed by column name (every column a view selects, so a column a later
migration adds shows up without a change here); derived figures are added under their own keys.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tracker._ops.durations import parse_duration
from tracker.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

Row = dict[str, Any]

ACTIVE = ("STARTED", "RUNNING")
FINAL = ("FINISHED", "FAILED", "CANCELLED")
RUN_STATUSES = ("STARTED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")
CONDITIONS = ("LOST", "STALLED", "OVERDUE")
# The order stages are shown in: the order a pipeline runs them.
STAGE_ORDER = (
    "STATIC",
    "PREREQ",
    "DAILY",
    "ANNUAL_DEC",
    "ANNUAL_JUNE",
    "ANNUAL_SEPT",
    "PERIODIC",
    "UNKNOWN",
)
MAX_LIMIT = 1000
_GLOB_SPECIAL = re.compile(r"([%_\\])")


def fetch(
    conn: psycopg.Connection[Any], sql: str, params: Sequence[object] | dict[str, object] = ()
) -> list[Row]:
    """Every row of ``sql`` as a dict."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    """The database's clock: ages and ETAs do not depend on the reader's."""
    row = conn.execute("SELECT statement_timestamp()").fetchone()
    if row is None:  # a SELECT without FROM always returns its one row
        raise RuntimeError("the database returned no time")
    at: datetime = row[0]
    return at


def jsonable(value: object) -> object:
    """``value`` as json.dumps takes it: times as ISO 8601, intervals as seconds, UUIDs as text."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def stage_rank(stage: str | None) -> int:
    """Where ``stage`` sorts among STAGE_ORDER (unknown names after the known ones)."""
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def glob_to_like(pattern: str) -> str:
    """A shell-style glob (``*``, ``?``) as a LIKE pattern; ``%``, ``_`` and ``\\`` are literal."""
    escaped = _GLOB_SPECIAL.sub(r"\\\1", pattern)
    return escaped.replace("*", "%").replace("?", "_")


def text_filter(value: str, *, what: str, limit: int = 255) -> str:
    """A filter's text, refused if it could never match a stored value (NUL, too long)."""
    if "\x00" in value:
        raise ConfigurationError(f"{what} must not contain a NUL character")
    if len(value) > limit:
        raise ConfigurationError(f"{what} is longer than {limit} characters")
    return value


def moment(text: str, *, what: str, now: datetime | None = None) -> datetime:
    """A point in time from ``2026-01-05``, ``2026-01-05T02:00:00+00:00`` or an age such as
    ``24h`` (that long before ``now``). Times without a zone are UTC."""
    value = text_filter(text.strip(), what=what, limit=64)
    if value and value[-1].isalpha() and value[:1].isdigit() and "-" not in value:
        return (now or datetime.now(timezone.utc)) - parse_duration(value, what=what)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"{what}: {text!r} is neither a time (2026-01-05, 2026-01-05T02:00) nor an age "
            "(90m, 24h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def limit_of(value: int | str, *, what: str = "limit") -> int:
    """A row limit of 1 to MAX_LIMIT."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{what} must be a whole number, not {value!r}") from None
    if not 1 <= number <= MAX_LIMIT:
        raise ConfigurationError(f"{what} must be 1 to {MAX_LIMIT}, not {number}")
    return number


def choices(values: Sequence[str], allowed: Sequence[str], *, what: str) -> tuple[str, ...]:
    """``values`` (upper-cased, split on commas) if each is one of ``allowed``."""
    chosen = tuple(
        part.strip().upper() for value in values for part in value.split(",") if part.strip()
    )
    unknown = [value for value in chosen if value not in allowed]
    if unknown:
        raise ConfigurationError(
            f"{what}: unknown value(s) {', '.join(map(repr, unknown))} "
            f"(one of {', '.join(allowed)})"
        )
    return chosen


def elapsed_sql(start: str = "execution_start", end: str = "execution_end") -> str:
    """Seconds from ``start`` to ``end`` or, while it runs, to now (the server's clock)."""
    return f"EXTRACT(EPOCH FROM (coalesce({end}, now()) - {start}))::float8"
