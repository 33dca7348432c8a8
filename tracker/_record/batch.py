"""The writer's statements: every row of a batch in one statement per table and kind.

Rows travel column-wise, one PostgreSQL array literal per column (a text parameter the
server casts to the column type; ``tracker._record.arrays``), decoded faster than JSON and
which needs no temporary table, so a transaction-pooling proxy in front of the database is
fine. A ``Table``'s statement updates the rows that exist and inserts the rest, both guarded by
``seq`` so that a late or replayed snapshot never regresses a row::

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
alone. A ``Progress`` statement updates the few columns a progress tick changes (see its
docstring and ``tracker._record.encoder``). The columns' types are read from the catalog when the
connection opens (``COLUMN_TYPES_SQL``), so the statements follow the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracker._model.state import IDENTITY_COLUMNS, PROGRESS_COLUMNS, STATUS_COLUMNS


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


class Progress:
    """An update of a few columns of rows known to exist.

    A progress tick changes a handful of columns of a row the writer wrote a moment ago:
    only those travel, and the rest of the row stays as it is. ``guard`` says when a row is
    as the writer left it; a row it excludes (gone, changed by someone else) is not updated,
    which the statement's row count tells, and ``missed_statement`` then names those rows so
    that the writer can write them whole::

        UPDATE pipeline_status AS t SET … FROM unnest($1::uuid[], …) AS v(run_id, …)
        WHERE t.run_id = v.run_id AND <guard>

    ``assignments`` spells the columns that are not a plain copy of the value sent.
    """

    def __init__(
        self,
        table: Table,
        columns: tuple[str, ...],
        guard: str,
        assignments: Mapping[str, str] | None = None,
    ) -> None:
        self.table = table
        self.name = table.name
        self.columns = table.key + columns
        self.guard = guard
        self.assignments = dict(assignments or {})

    def _arrays(
        self, columns: Sequence[str], types: Mapping[str, str], placeholder: Callable[[int], str]
    ) -> str:
        return ", ".join(f"{placeholder(i)}::{types[c]}[]" for i, c in enumerate(columns, start=1))

    def statement(self, types: Mapping[str, str], placeholder: Callable[[int], str]) -> str:
        key = self.table.key
        sets = ", ".join(
            f"{c} = {self.assignments.get(c, f'v.{c}')}" for c in self.columns if c not in key
        )
        match = " AND ".join(f"t.{c} = v.{c}" for c in key)
        return (
            f"UPDATE {self.table.name} AS t SET {sets} "
            f"FROM unnest({self._arrays(self.columns, types, placeholder)}) "
            f"AS v({', '.join(self.columns)}) WHERE {match} AND {self.guard}"
        )

    def missed_statement(self, types: Mapping[str, str], placeholder: Callable[[int], str]) -> str:
        """The run ids of the rows a ``statement`` left alone: not at its ``seq``. Its
        parameters are the statement's key and ``seq`` arrays (``missed_parameters``)."""
        key = self.table.key
        columns = (*key, "seq")
        match = " AND ".join(f"t.{c} = v.{c}" for c in columns)
        return (
            f"SELECT v.run_id FROM unnest({self._arrays(columns, types, placeholder)}) "
            f"AS v({', '.join(columns)}) "
            f"WHERE NOT EXISTS (SELECT FROM {self.table.name} AS t WHERE {match})"
        )

    def missed_parameters(self, parameters: Sequence[str]) -> list[str]:
        """The key and ``seq`` arrays out of a ``statement``'s parameters."""
        keys = len(self.table.key)
        return [*parameters[:keys], parameters[self.columns.index("seq")]]


STATUS_PROGRESS = Progress(
    STATUS,
    PROGRESS_COLUMNS,
    # Exactly the row this writer wrote last (the encoder knows that seq was stored), not
    # ended: a run the reaper declared lost meanwhile is written in full, so its final state
    # stays final (see sql/0006_operations.sql). Spelt NOT IN: the planner would otherwise
    # scan the partial index of active runs, every active run, for every batch.
    "t.seq = v.seq - 1 AND t.execution_status NOT IN ('FINISHED', 'FAILED', 'CANCELLED')",
    # A tick that moved progress has last_progress = last_update: sent as NULL, spared a
    # second timestamp to parse.
    {"last_progress": "COALESCE(v.last_progress, v.last_update)"},
)
SUBTASK_PROGRESS = Progress(SUBTASK, ("items_complete", "seq"), "t.seq < v.seq")
