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
covers a row another session inserts meanwhile. The environment, captured once when the run
starts, is written by the insert only: it travels as text and is parsed as JSON for a new row
alone. The columns' types are read from the catalog
when the connection opens (``COLUMN_TYPES_SQL``), so the statements follow the schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracker._model import IDENTITY_COLUMNS, STATUS_COLUMNS, Snapshot


class Table:
    """A table the writer upserts into: its columns, key, and the columns never updated."""

    def __init__(
        self,
        name: str,
        columns: tuple[str, ...],
        key: tuple[str, ...],
        insert_only: tuple[str, ...] = (),
        kept: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.columns = columns
        self.key = key
        # The key, and what a trigger forbids changing (task_name, execution_start).
        self.never_updated = key + tuple(
            c for c in ("task_name", "execution_start") if c in columns
        )
        # Written once, by the insert: they travel as text and are cast only for a new row,
        # so the updates that make up nearly all writes never parse them.
        self.insert_only = insert_only
        # Sent as NULL once the row is known to hold them (BatchEncoder), so an update keeps
        # what the row has: they never go back to NULL.
        self.kept = kept

    def _assignment(self, column: str, new: str, old: str) -> str:
        if column in self.kept:
            return f"{column} = COALESCE({new}.{column}, {old}.{column})"
        return f"{column} = {new}.{column}"

    def statement(self, types: Mapping[str, str], placeholder: Callable[[int], str]) -> str:
        """The upsert reading one array parameter per column, in ``columns`` order."""
        names = ", ".join(self.columns)
        arrays = ", ".join(
            f"{placeholder(i)}::{'text' if c in self.insert_only else types[c]}[]"
            for i, c in enumerate(self.columns, start=1)
        )
        inserted = ", ".join(
            f"v.{c}::{types[c]}" if c in self.insert_only else f"v.{c}" for c in self.columns
        )
        changing = [c for c in self.columns if c not in self.never_updated + self.insert_only]
        sets = ", ".join(self._assignment(c, "v", "t") for c in changing)
        excluded = ", ".join(self._assignment(c, "EXCLUDED", self.name) for c in changing)
        match = " AND ".join(f"t.{c} = v.{c}" for c in self.key)
        exists = " AND ".join(f"p.{c} = v.{c}" for c in self.key)
        return (
            f"WITH v AS (SELECT * FROM unnest({arrays}) AS v({names})), "
            f"updated AS (UPDATE {self.name} AS t SET {sets} FROM v "
            f"WHERE {match} AND t.seq < v.seq) "
            f"INSERT INTO {self.name} ({names}) SELECT {inserted} FROM v "
            f"WHERE NOT EXISTS (SELECT FROM {self.name} AS p WHERE {exists}) "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {excluded} "
            f"WHERE {self.name}.seq < EXCLUDED.seq"
        )


STATUS = Table(
    "pipeline_status",
    STATUS_COLUMNS,
    ("run_id",),
    # Captured when the run starts, never changed after.
    insert_only=("environment",),
    # The rest of a run's identity may come a moment after the first write (git commit, trace
    # id), but never goes back to NULL.
    kept=tuple(
        c
        for c in IDENTITY_COLUMNS
        if c not in ("run_id", "task_name", "execution_start", "environment")
    ),
)
_IDENTITY_COUNT = len(IDENTITY_COLUMNS)
# A stored run's identity columns: its id, and NULL for the rest (see BatchEncoder).
_SLIM_TAIL = ["NULL"] * (_IDENTITY_COUNT - 1)

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


_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
_FLOAT_TYPES = frozenset({"numeric", "real", "double precision"})
_NUMBER_CHARACTERS = frozenset("0123456789.-+e,NUL")


def _text_array(values: list[Any]) -> str:
    # The common case inline (no call per value): text, timestamps as ISO strings, NULLs.
    return (
        "{"
        + ",".join(
            "NULL"
            if v is None
            else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if type(v) is str
            else element(v)
            for v in values
        )
        + "}"
    )


def _number_array(values: list[Any]) -> str:
    # repr() spells ints and finite floats as PostgreSQL reads them; anything else (nan, inf,
    # a bool) takes element(), which knows PostgreSQL's spellings.
    text = ",".join(map(repr, values)).replace("None", "NULL")
    if not _NUMBER_CHARACTERS.issuperset(text):
        return "{" + ",".join(map(element, values)) + "}"
    return "{" + text + "}"


class BatchEncoder:
    """Snapshots as the array parameters of ``STATUS`` and ``SUBTASK``'s statements.

    A row appears once, at its highest ``seq``: one statement cannot update a row twice, and
    the older versions would lose to the newest anyway. A run's unchanging columns (its
    environment above all) are encoded once and kept until its final snapshot. ``types``
    (``column_types()`` of the database) picks the quick encoding of each column.
    """

    def __init__(self, types: Mapping[str, Mapping[str, str]]) -> None:
        # run id -> [identity values, their elements, whether the row is known to hold them]
        self._identity: dict[str, list[Any]] = {}
        self._status_kinds = [_kind(types[STATUS.name][c]) for c in STATUS.columns]
        self._subtask_kinds = [_kind(types[SUBTASK.name][c]) for c in SUBTASK.columns]

    def encode(
        self, snapshots: Sequence[Snapshot], *, full: bool = False
    ) -> tuple[list[str], list[str] | None]:
        """(status parameters, subtask parameters or None when no subtask row changed).

        A run whose row is known to hold its identity columns (``stored``) sends them as
        NULL, unless ``full``: most of a row's bytes, and of the server's parsing, spared. Were
        the row gone meanwhile, the insert of such a slim row breaks a NOT NULL constraint,
        the batch is refused, and the writer's one-by-one retry sends full rows.
        """
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
        identities = [self._identity_elements(s, full) for s in newest.values()]
        statuses = ["{" + ",".join(column) + "}" for column in zip(*identities, strict=True)]
        changing = [s.changing for s in newest.values()]
        for position, kind in enumerate(self._status_kinds[_IDENTITY_COUNT:]):
            statuses.append(kind([values[position] for values in changing]))
        if not subtasks:
            return statuses, None
        sub_rows = list(subtasks.values())
        return statuses, [
            kind([row.get(column) for row in sub_rows])
            for column, kind in zip(SUBTASK.columns, self._subtask_kinds, strict=True)
        ]

    def stored(self, snapshots: Sequence[Snapshot]) -> None:
        """The database took ``snapshots``: their rows hold their runs' identity columns."""
        for snapshot in snapshots:
            held = self._identity.get(snapshot.run_id)
            if held is not None:
                held[2] = True

    def _identity_elements(self, snapshot: Snapshot, full: bool) -> list[str]:
        held = self._identity.get(snapshot.run_id)
        identity = snapshot.identity
        # A run hands out the same tuple while its identity holds: mostly no comparing.
        if held is None or (held[0] is not identity and held[0] != identity):
            held = [identity, [element(v) for v in identity], False]
            self._identity[snapshot.run_id] = held
        if snapshot.final:
            del self._identity[snapshot.run_id]
        elements: list[str] = held[1]
        if held[2] and not full:
            return [elements[0], *_SLIM_TAIL]
        return elements


def _kind(type_name: str) -> Callable[[list[Any]], str]:
    if type_name in _INTEGER_TYPES or type_name in _FLOAT_TYPES:
        return _number_array
    return _text_array
