"""The writer's statements: a batch of rows of one table in one upsert, derived from its columns.

Rows travel column-wise, one array parameter per column, sent in binary (psycopg's C dumpers
turn a Python list into a PostgreSQL array) and cast to the column's type; no temporary table,
so a transaction-pooling proxy in front of the database is fine. The statement updates the rows
that exist and inserts the rest, both guarded by ``seq`` so that a late or replayed snapshot
never regresses a row::

    WITH v AS (SELECT * FROM unnest(%b::uuid[], …) AS v(run_id, …)),
         updated AS (UPDATE pipetrack.pipeline_status AS t SET … FROM v
                     WHERE t.run_id = v.run_id AND t.seq < v.seq)
    INSERT INTO pipetrack.pipeline_status (…) SELECT … FROM v
    WHERE NOT EXISTS (SELECT FROM pipetrack.pipeline_status AS p WHERE p.run_id = v.run_id)
    ON CONFLICT (run_id) DO UPDATE SET … WHERE pipeline_status.seq < EXCLUDED.seq

Updating first and inserting only the new rows spares existing rows the insert-side trigger
(the archived-run check); the ON CONFLICT arm covers a row another session inserts meanwhile.
Resource samples (``pipeline_run_sample``) are inserted, never updated, after the status rows
of the same transaction: a sample already there (a replay) is skipped, and so is a sample of a
run that is not in ``pipeline_status`` (archived meanwhile), which would otherwise fail its
foreign key and the whole batch with it.
What an update sets follows each column's role (``tracker._model.columns``): state as it is
now; identity kept where a snapshot has none (it never goes back to NULL); key, fixed and
insert-only columns never. Tables are named with their schema, so the writer needs no
``search_path`` (which a transaction pooler would not keep).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tracker._model.columns import (
    SAMPLE_COLUMNS,
    STATUS_COLUMNS,
    SUBTASK_COLUMNS,
    Column,
    Kind,
    Role,
)
from tracker._model.snapshot import Snapshot

SCHEMA = "pipetrack"
# A JSON column travels as text: an insert-only one (the environment) is parsed for a new row
# alone, so the updates that make up nearly all writes never parse it.
_TRAVELS_AS = {Kind.JSON: "text"}


@dataclass(frozen=True)
class Upsert:
    """The upsert of one table's rows, one array parameter per column."""

    table: str
    columns: tuple[Column, ...]

    @property
    def sql(self) -> str:
        table, columns = f"{SCHEMA}.{self.table}", self.columns
        names = ", ".join(c.name for c in columns)
        arrays = ", ".join(f"%b::{_TRAVELS_AS.get(c.kind, c.kind.value)}[]" for c in columns)
        inserted = ", ".join(
            f"v.{c.name}::{c.kind.value}" if c.kind in _TRAVELS_AS else f"v.{c.name}"
            for c in columns
        )
        key = [c.name for c in columns if c.role is Role.KEY]
        changing = [c for c in columns if c.role in (Role.IDENTITY, Role.STATE)]
        sets = ", ".join(_assignment(c, "v", "t") for c in changing)
        excluded = ", ".join(_assignment(c, "EXCLUDED", self.table) for c in changing)
        match = " AND ".join(f"t.{k} = v.{k}" for k in key)
        exists = " AND ".join(f"p.{k} = v.{k}" for k in key)
        return (
            f"WITH v AS (SELECT * FROM unnest({arrays}) AS v({names})), "
            f"updated AS (UPDATE {table} AS t SET {sets} FROM v "
            f"WHERE {match} AND t.seq < v.seq) "
            f"INSERT INTO {table} ({names}) SELECT {inserted} FROM v "
            f"WHERE NOT EXISTS (SELECT FROM {table} AS p WHERE {exists}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {excluded} "
            f"WHERE {self.table}.seq < EXCLUDED.seq"
        )


@dataclass(frozen=True)
class InsertNew:
    """The insert of rows written once (samples), one array parameter per column: a row whose
    key exists is skipped, and so is a row whose run is not in ``pipeline_status``."""

    table: str
    columns: tuple[Column, ...]

    @property
    def sql(self) -> str:
        table, columns = f"{SCHEMA}.{self.table}", self.columns
        names = ", ".join(c.name for c in columns)
        arrays = ", ".join(f"%b::{c.kind.value}[]" for c in columns)
        key = ", ".join(c.name for c in columns if c.role is Role.KEY)
        # FOR KEY SHARE, as the foreign key's own check: a run being archived by another
        # session is waited for, then found gone, and its samples skipped.
        return (
            f"INSERT INTO {table} ({names}) "
            f"SELECT * FROM unnest({arrays}) AS v({names}) "
            f"WHERE EXISTS (SELECT FROM {SCHEMA}.pipeline_status AS p "
            f"WHERE p.run_id = v.run_id FOR KEY SHARE) "
            f"ON CONFLICT ({key}) DO NOTHING"
        )


def _assignment(column: Column, new: str, old: str) -> str:
    name = column.name
    # A JSON state column (work counts, a few dozen bytes) is parsed at each update: the
    # updates that do not set one (no counts yet: NULL) parse nothing.
    value = f"{new}.{name}::{column.kind.value}" if column.kind in _TRAVELS_AS else f"{new}.{name}"
    if column.role is Role.IDENTITY:
        return f"{name} = COALESCE({value}, {old}.{name})"
    return f"{name} = {value}"


STATUS = Upsert("pipeline_status", STATUS_COLUMNS)
SUBTASK = Upsert("pipeline_subtask", SUBTASK_COLUMNS)
SAMPLE = InsertNew("pipeline_run_sample", SAMPLE_COLUMNS)


def batch_statements(snapshots: Sequence[Snapshot]) -> list[tuple[str, list[list[Any]]]]:
    """The statements writing ``snapshots``, each with its parameters (one list per column).

    A row appears once, at its highest ``seq``: one statement cannot update a row twice, and the
    older versions would lose to the newest anyway.
    """
    if len({s.run_id for s in snapshots}) != len(snapshots):
        snapshots = newest(snapshots)  # a run twice (a replayed spool): its newest only
    statements = [(STATUS.sql, _arrays([s.identity + s.state for s in snapshots]))]
    subtasks = [row for s in snapshots for row in s.subtasks]
    if subtasks:
        statements.append((SUBTASK.sql, _arrays(subtasks)))
    samples = [row for s in snapshots for row in s.samples]
    if samples:
        statements.append((SAMPLE.sql, _arrays(samples)))
    return statements


def _arrays(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def newest(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """One snapshot per run, its newest, carrying the newest version of each subtask row and
    the samples of all of them (each sample travels in one snapshot only)."""
    by_run: dict[str, Snapshot] = {}
    rows: dict[tuple[str, int], tuple[Any, ...]] = {}
    samples: dict[str, list[tuple[Any, ...]]] = {}
    for snapshot in snapshots:
        if snapshot.samples:
            samples.setdefault(snapshot.run_id, []).extend(snapshot.samples)
        held = by_run.get(snapshot.run_id)
        if held is None or held.seq < snapshot.seq:
            by_run[snapshot.run_id] = snapshot
        for row in snapshot.subtasks:
            key = (str(row[_RUN]), int(row[_INDEX]))
            previous = rows.get(key)
            if previous is None or previous[_SEQ] < row[_SEQ]:
                rows[key] = row
    # Every row came with a snapshot of its run, so each run's rows go with its newest.
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for (run_id, _), row in rows.items():
        grouped.setdefault(run_id, []).append(row)
    return [
        Snapshot(
            s.run_id,
            s.seq,
            s.identity,
            s.state,
            subtasks=grouped.pop(s.run_id, []),
            final=s.final,
            samples=samples.get(s.run_id, []),
        )
        for s in by_run.values()
    ]


_SUBTASK_NAMES = [c.name for c in SUBTASK_COLUMNS]
_RUN, _INDEX, _SEQ = (
    _SUBTASK_NAMES.index("run_id"),
    _SUBTASK_NAMES.index("subtask_index"),
    _SUBTASK_NAMES.index("seq"),
)
