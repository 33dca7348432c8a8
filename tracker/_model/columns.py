"""The canonical record's columns, declared once: each column's name, kind, role and source.

Everything that handles a row is derived from these two lists: the model's snapshot reads each
column's ``source`` (an attribute of the run or subtask state, ``tracker._model.state``), the
writer's statements cast each column's parameter to its kind and decide what an update may
change (``tracker._record.statements``), text is cleaned to its column's width
(``tracker._model.text``), and the spool reads rows back by name (``tracker._model.snapshot``).
Adding a column to a table means one migration in ``sql/`` and one line here (plus the
attribute it reads, where the state does not hold it yet); a test checks the lists against the
database's catalog.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from tracker._model.usage import Usage

TEXT_MAX = 65_536
"""Characters kept of a TEXT value (messages, error details): a 1 MB message is a mistake, and
every heartbeat would carry it again."""


class Kind(enum.Enum):
    """A column's type, as the writer's parameter is cast (never with a length: a value too long
    for its column must fail as an assignment does, not be cut short by a cast) and as a value
    read back from the spool is turned into its Python type."""

    UUID = "uuid"
    TEXT = "text"
    INTEGER = "integer"
    BIGINT = "bigint"
    NUMERIC = "numeric"
    DOUBLE = "double precision"
    TIMESTAMP = "timestamptz"
    JSON = "jsonb"


class Role(enum.Enum):
    """What a column says about a run, which decides how an upsert treats it."""

    KEY = "key"  # identifies the row; never updated
    FIXED = "fixed"  # set when the run starts and never changed (a trigger forbids it)
    IDENTITY = "identity"  # what and where the run is: may come a moment late, never goes NULL
    INSERT_ONLY = "insert only"  # captured when the run starts, written by the insert alone
    STATE = "state"  # what the run is doing: every snapshot writes it as it is now


class Column(NamedTuple):
    """One column of a table the writer upserts into. (A NamedTuple: ``dataclasses`` would
    add ``inspect`` to ``import tracker``.)"""

    name: str
    kind: Kind
    role: Role
    #: the attribute of the run (or subtask) state holding the value; default: the name
    source: str = ""
    #: the VARCHAR width of a text column; TEXT columns keep TEXT_MAX characters
    width: int | None = None
    #: a state column a progress update writes: those that move with every item counted, and
    #: the run's status (which the database's keep-final trigger judges); a row whose other
    #: columns are as stored is written with these alone (``tracker._record.statements``)
    progress: bool = False

    @property
    def attribute(self) -> str:
        return self.source or self.name

    @property
    def limit(self) -> int:
        """How many characters of a text value the column keeps."""
        return self.width or TEXT_MAX


def _text(name: str, role: Role, width: int | None = None, source: str = "") -> Column:
    return Column(name, Kind.TEXT, role, source, width)


def _progress(name: str, kind: Kind, source: str = "", width: int | None = None) -> Column:
    """A state column a progress update writes (see ``Column.progress``)."""
    return Column(name, kind, Role.STATE, source, width, progress=True)


K, F, I, O, S = Role.KEY, Role.FIXED, Role.IDENTITY, Role.INSERT_ONLY, Role.STATE  # noqa: E741


def _usage() -> tuple[Column, ...]:
    """The totals columns (sql/0010), read from the state's ``usage`` (tracker._model.usage)."""
    return tuple(
        Column(name, Kind.DOUBLE if name == "cpu_seconds" else Kind.BIGINT, S, f"usage.{name}")
        for name in Usage._fields
    )


STATUS_COLUMNS: tuple[Column, ...] = (
    Column("run_id", Kind.UUID, K),
    _text("task_name", F, 255),
    Column("execution_start", Kind.TIMESTAMP, F, "_row_started"),
    _text("task_stage", I, 50),
    _text("task_type", I, 10),
    _text("hostname", I, 255),
    Column("process_id", Kind.INTEGER, I),
    _text("user_name", I, 100),
    _text("script_path", I, 500),
    _text("script_file", I, 255),
    _text("log_path", I, 500),
    _text("log_file", I, 255),
    _text("git_commit", I, 64),
    _text("trace_id", I, 32),
    Column("parent_run_id", Kind.UUID, I),
    Column("environment", Kind.JSON, O),
    _progress("execution_status", Kind.TEXT, "status", 20),
    Column("execution_end", Kind.TIMESTAMP, S, "_row_ended"),
    Column("total_subtasks", Kind.INTEGER, S),
    Column("current_subtask", Kind.INTEGER, S, "_row_current_subtask"),
    _text("subtask_name", S, 500, "_row_shown_name"),
    _text("subtask_status", S, 20, "_row_shown_status"),
    _progress("overall_percent_complete", Kind.NUMERIC, "_row_overall_percent"),
    _text("overall_progress_message", S, source="_row_overall_message"),
    _progress("subtask_percent_complete", Kind.NUMERIC, "_row_shown_percent"),
    _text("subtask_progress_message", S, source="_row_shown_message"),
    Column("subtask_items_total", Kind.BIGINT, S, "_row_shown_items_total"),
    _progress("subtask_items_complete", Kind.BIGINT, "_row_shown_items_complete"),
    Column("memory_mb", Kind.INTEGER, S),
    Column("peak_memory_mb", Kind.INTEGER, S),
    Column("cpu_percent", Kind.NUMERIC, S, "_row_cpu_percent"),
    _text("error_message", S, source="_row_error_message"),
    _text("error_detail", S, source="_row_error_detail"),
    Column("exit_code", Kind.INTEGER, S),
    _progress("last_update", Kind.TIMESTAMP, "_row_updated"),
    _progress("last_progress", Kind.TIMESTAMP, "_row_progressed"),
    _progress("seq", Kind.BIGINT),
    *_usage(),  # the run's totals so far
    Column("counts", Kind.JSON, S, "_row_counts"),
)
"""``pipeline_status``: one row per run (sql/0001, 0002, 0010)."""

SUBTASK_COLUMNS: tuple[Column, ...] = (
    Column("run_id", Kind.UUID, K),
    Column("subtask_index", Kind.INTEGER, K, "index"),
    Column("parent_index", Kind.INTEGER, S),
    _text("subtask_name", S, 500, "_row_name"),
    _text("subtask_status", S, 20, "status"),
    Column("started_at", Kind.TIMESTAMP, S, "_row_started"),
    Column("ended_at", Kind.TIMESTAMP, S, "_row_ended"),
    Column("items_total", Kind.BIGINT, S),
    _progress("items_complete", Kind.BIGINT),
    _text("message", S, source="_row_message"),
    _progress("seq", Kind.BIGINT, "_row_seq"),
    # What the process (tree) did while the subtask was open: set when it ends.
    *_usage(),
    Column("peak_rss_bytes", Kind.BIGINT, S),
    Column("counts", Kind.JSON, S, "_row_counts"),
)
"""``pipeline_subtask``: one row per subtask of a run (sql/0002, 0010)."""

SAMPLE_COLUMNS: tuple[Column, ...] = (
    Column("run_id", Kind.UUID, K),
    Column("sampled_at", Kind.TIMESTAMP, K),
    Column("subtask_index", Kind.INTEGER, O),
    Column("processes", Kind.INTEGER, O),
    Column("rss_bytes", Kind.BIGINT, O),
    Column("cpu_percent", Kind.DOUBLE, O),
    Column("cpu_seconds", Kind.DOUBLE, O),
    Column("disk_read_bytes", Kind.BIGINT, O),
    Column("disk_write_bytes", Kind.BIGINT, O),
    Column("tcp_received_bytes", Kind.BIGINT, O),
    Column("tcp_sent_bytes", Kind.BIGINT, O),
    Column("db_connections", Kind.INTEGER, O),
    Column("other_connections", Kind.INTEGER, O),
    Column("open_fds", Kind.INTEGER, O),
)
"""``pipeline_run_sample``: one row per kept resource sample of a run (sql/0010); rows are
inserted once and never updated. Built by ``tracker._record.measure`` in this order."""

STATUS_NAMES = tuple(c.name for c in STATUS_COLUMNS)
SUBTASK_NAMES = tuple(c.name for c in SUBTASK_COLUMNS)
SAMPLE_NAMES = tuple(c.name for c in SAMPLE_COLUMNS)
IDENTITY_NAMES = tuple(c.name for c in STATUS_COLUMNS if c.role is not Role.STATE)
"""The columns a run's identity tuple holds (everything but its state), in table order."""
WIDTHS = {c.name: c.limit for c in (*STATUS_COLUMNS, *SUBTASK_COLUMNS) if c.kind is Kind.TEXT}
"""Characters each text column keeps, by name (the same name has the same width in both
tables)."""


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    import json  # read from the spool only: `import tracker` stays free of it

    return json.dumps(value, separators=(",", ":"), default=str)


_READERS: dict[Kind, Callable[[Any], Any]] = {
    Kind.UUID: str,
    Kind.TEXT: str,
    Kind.INTEGER: int,
    Kind.BIGINT: int,
    Kind.NUMERIC: float,
    Kind.DOUBLE: float,
    Kind.TIMESTAMP: _timestamp,
    Kind.JSON: _json_text,
}


def read_value(column: Column, value: Any) -> Any:
    """``value`` as read from JSON (a spool line), in the Python type the writer sends for
    ``column``: a batch's values of one column must all be of one type."""
    if value is None:
        return None
    return _READERS[column.kind](value)
