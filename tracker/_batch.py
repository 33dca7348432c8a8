"""A batch of snapshots as two statements: every row of a table in one upsert.

Rows travel column-wise, one PostgreSQL array literal per column (a text parameter the server
casts to the column's type), which the server decodes faster than JSON and which needs no
temporary table, so a transaction-pooling proxy in front of the database is fine. Each
statement updates the rows that exist and inserts the rest, both guarded by ``seq`` so that a
late or replayed snapshot never regresses a row::

    WITH v AS (SELECT * FROM unnest($1::uuid[], …) AS v(run_id, …)),
         updated AS (UPDATE pipeline_status AS t SET … FROM v
                     WHERE t.run_id = v.run_id AND t.seq < v.seq)
    INSERT INTO pipeline_status (…) SELECT … FROM v
    WHERE NOT EXISTS (SELECT FROM pipeline_status AS p WHERE p.run_id = v.run_id)
    ON CONFLICT (run_id) DO UPDATE SET … WHERE pipeline_status.seq < EXCLUDED.seq

Updating first and inserting only the new rows measured no slower than a plain upsert, and
spares existing rows the insert-side trigger (the archived-run check). The ON CONFLICT arm
covers a row another session inserts meanwhile. The columns' types are read from the catalog
when the connection opens (``COLUMN_TYPES_SQL``), so the statements follow the schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracker._model import Snapshot


class Table:
    """A table the writer upserts into: its columns, key, and the columns never updated."""

    def __init__(self, name: str, columns: tuple[str, ...], key: tuple[str, ...]) -> None:
        self.name = name
        self.columns = columns
        self.key = key
        # The key, and what a trigger forbids changing (task_name, execution_start).
        self.fixed = key + tuple(c for c in ("task_name", "execution_start") if c in columns)

    def statement(self, types: Mapping[str, str], placeholder: Callable[[int], str]) -> str:
        """The upsert reading one array parameter per column, in ``columns`` order."""
        names = ", ".join(self.columns)
        arrays = ", ".join(
            f"{placeholder(i)}::{types[c]}[]" for i, c in enumerate(self.columns, start=1)
        )
        changing = [c for c in self.columns if c not in self.fixed]
        sets = ", ".join(f"{c} = v.{c}" for c in changing)
        excluded = ", ".join(f"{c} = EXCLUDED.{c}" for c in changing)
        match = " AND ".join(f"t.{c} = v.{c}" for c in self.key)
        exists = " AND ".join(f"p.{c} = v.{c}" for c in self.key)
        return (
            f"WITH v AS (SELECT * FROM unnest({arrays}) AS v({names})), "
            f"updated AS (UPDATE {self.name} AS t SET {sets} FROM v "
            f"WHERE {match} AND t.seq < v.seq) "
            f"INSERT INTO {self.name} ({names}) SELECT {names} FROM v "
            f"WHERE NOT EXISTS (SELECT FROM {self.name} AS p WHERE {exists}) "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {excluded} "
            f"WHERE {self.name}.seq < EXCLUDED.seq"
        )


STATUS = Table(
    "pipeline_status",
    (
        # What a run's row says about where and what it is: the same from its first snapshot
        # to its last (BatchEncoder encodes these once per run) ...
        "run_id",
        "task_name",
        "task_stage",
        "task_type",
        "hostname",
        "process_id",
        "user_name",
        "script_path",
        "script_file",
        "log_path",
        "log_file",
        "execution_start",
        "git_commit",
        "environment",
        "trace_id",
        "parent_run_id",
        # ... and what changes.
        "execution_end",
        "last_update",
        "last_progress",
        "execution_status",
        "total_subtasks",
        "current_subtask",
        "subtask_name",
        "subtask_status",
        "overall_percent_complete",
        "overall_progress_message",
        "subtask_percent_complete",
        "subtask_progress_message",
        "subtask_items_total",
        "subtask_items_complete",
        "memory_mb",
        "peak_memory_mb",
        "cpu_percent",
        "error_message",
        "error_detail",
        "exit_code",
        "seq",
    ),
    ("run_id",),
)
_FIXED_COUNT = STATUS.columns.index("execution_end")

SUBTASK = Table(
    "pipeline_subtask",
    (
        "run_id",
        "subtask_index",
        "parent_index",
        "subtask_name",
        "subtask_status",
        "started_at",
        "ended_at",
        "items_total",
        "items_complete",
        "message",
        "seq",
    ),
    ("run_id", "subtask_index"),
)

COLUMN_TYPES_SQL = (
    "SELECT c.relname, a.attname, format_type(a.atttypid, NULL)"
    " FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid"
    " WHERE a.attrelid IN ('pipeline_status'::regclass, 'pipeline_subtask'::regclass)"
    " AND a.attnum > 0 AND NOT a.attisdropped"
)
"""The tables' column types, without length or precision: a value too long for its column then
fails as an assignment does, instead of being cut short by the cast."""


def column_types(rows: Sequence[Sequence[Any]]) -> dict[str, dict[str, str]]:
    """``COLUMN_TYPES_SQL``'s rows as {table: {column: type}}."""
    types: dict[str, dict[str, str]] = {}
    for table, column, type_name in rows:
        types.setdefault(str(table), {})[str(column)] = str(type_name)
    return types


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_JSON = json.JSONEncoder(separators=(",", ":")).encode


def element(value: Any) -> str:
    """``value`` as one element of an array literal (the server casts it to the column type)."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value)
    if isinstance(value, bool):
        text = "t" if value else "f"
    elif isinstance(value, (dict, list)):
        text = _JSON(value)
    else:
        text = str(value)
    return '"' + text.translate(_ESCAPES) + '"'


def _number(value: float) -> str:
    if isinstance(value, int) or math.isfinite(value):
        return repr(value)
    # numeric's own spellings; the table's checks then say what is wrong with the row.
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _arrays(rows: list[list[str]]) -> list[str]:
    return ["{" + ",".join(column) + "}" for column in zip(*rows, strict=True)]


class BatchEncoder:
    """Snapshots as the array parameters of ``STATUS`` and ``SUBTASK``'s statements.

    A row appears once, at its highest ``seq``: one statement cannot update a row twice, and
    the older versions would lose to the newest anyway. A run's unchanging columns (its
    environment above all) are encoded once and kept until its final snapshot.
    """

    def __init__(self) -> None:
        self._fixed: dict[str, tuple[tuple[Any, ...], list[str]]] = {}

    def encode(self, snapshots: Sequence[Snapshot]) -> tuple[list[str], list[str] | None]:
        """(status parameters, subtask parameters or None when no subtask row changed)."""
        newest: dict[str, Snapshot] = {}
        subtasks: dict[tuple[str, int], dict[str, Any]] = {}
        for snapshot in snapshots:
            held = newest.get(snapshot.run_id)
            if held is None or held.seq < snapshot.seq:
                newest[snapshot.run_id] = snapshot
            for row in snapshot.subtask_rows:
                key = (str(row["run_id"]), int(row["subtask_index"]))
                previous = subtasks.get(key)
                if previous is None or previous["seq"] < row["seq"]:
                    subtasks[key] = row
        statuses = _arrays([self._status(s) for s in newest.values()])
        if not subtasks:
            return statuses, None
        rows = [[element(row.get(c)) for c in SUBTASK.columns] for row in subtasks.values()]
        return statuses, _arrays(rows)

    def _status(self, snapshot: Snapshot) -> list[str]:
        row = snapshot.status_row
        columns = STATUS.columns
        fixed = tuple(row.get(c) for c in columns[:_FIXED_COUNT])
        held = self._fixed.get(snapshot.run_id)
        if held is None or held[0] != fixed:
            held = (fixed, [element(v) for v in fixed])
            self._fixed[snapshot.run_id] = held
        if snapshot.final:
            del self._fixed[snapshot.run_id]
        return held[1] + [element(row.get(c)) for c in columns[_FIXED_COUNT:]]
