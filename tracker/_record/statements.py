"""The writer's statements: a batch of rows of one table in one upsert, derived from its columns.

Rows travel column-wise, one array literal per column (a text parameter the server casts to the
column's type); no temporary table, so a transaction-pooling proxy in front of the database is
fine. psycopg can send a Python list as a binary array, but its list dumpers are Python code that
visits every element (0.4 µs each in psycopg 3.3): 20 µs a snapshot, more than taking the
snapshot, which left the writer at about half the database's own rate. An array literal is one
``str.join`` per column (``_LITERALS``): every text element quoted and escaped, numbers and
timestamps as Python spells them, so nothing needs checking. The statement updates the rows
that exist and inserts the rest, both guarded by ``seq`` so that a late or replayed snapshot
never regresses a row::

    WITH v AS (SELECT * FROM unnest(%s::uuid[], …) AS v(run_id, …)),
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

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
        arrays = ", ".join(f"%s::{_TRAVELS_AS.get(c.kind, c.kind.value)}[]" for c in columns)
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
        arrays = ", ".join(f"%s::{c.kind.value}[]" for c in columns)
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


@dataclass(frozen=True)
class StateUpdate:
    """An update of the state columns of rows the writer knows the table holds, naming the
    rows it did not update (gone, archived, ended by the reaper, or newer already): the writer
    writes those again whole. Rows known to exist are nearly all writes, and this carries 21
    of the status row's 37 columns and skips the insert arm: a third less for the database to
    read and the writer to encode."""

    table: str
    columns: tuple[Column, ...]

    @property
    def key(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role is Role.KEY)

    @property
    def sent(self) -> tuple[Column, ...]:
        """The columns it sends, in order: the key, then the state."""
        return (*self.key, *(c for c in self.columns if c.role is Role.STATE))

    @property
    def sql(self) -> str:
        table, sent = f"{SCHEMA}.{self.table}", self.sent
        names = ", ".join(c.name for c in sent)
        arrays = ", ".join(f"%s::{c.kind.value}[]" for c in sent)
        key = [c.name for c in self.key]
        sets = ", ".join(f"{c.name} = v.{c.name}" for c in sent if c.role is Role.STATE)
        match = " AND ".join(f"t.{k} = v.{k}" for k in key)
        returned = ", ".join(f"t.{k}" for k in key)
        missed = ", ".join(f"v.{k}::text" if k == "run_id" else f"v.{k}" for k in key)
        return (
            f"WITH v AS (SELECT * FROM unnest({arrays}) AS v({names})), "
            f"u AS (UPDATE {table} AS t SET {sets} FROM v "
            f"WHERE {match} AND t.seq < v.seq RETURNING {returned}) "
            f"SELECT {missed} FROM v "
            f"WHERE ({', '.join(f'v.{k}' for k in key)}) NOT IN (SELECT {', '.join(key)} FROM u)"
        )


STATUS = Upsert("pipeline_status", STATUS_COLUMNS)
SUBTASK = Upsert("pipeline_subtask", SUBTASK_COLUMNS)
STATUS_STATE = StateUpdate("pipeline_status", STATUS_COLUMNS)
SUBTASK_STATE = StateUpdate("pipeline_subtask", SUBTASK_COLUMNS)
SAMPLE = InsertNew("pipeline_run_sample", SAMPLE_COLUMNS)


class Known:
    """What the writer knows the tables hold: each run's identity as stored, and the subtask
    rows stored. Told by the store after each committed transaction; a row the database no
    longer has is found by the state update that misses it."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[Any, ...]] = {}
        self.subtasks: dict[str, set[int]] = {}

    def stored(self, snapshots: Sequence[Snapshot]) -> None:
        for snapshot in snapshots:
            run_id = snapshot.run_id
            if snapshot.final:
                self.forget(run_id)
                continue
            self.runs[run_id] = snapshot.identity
            self.subtasks.setdefault(run_id, set()).update(row[_INDEX] for row in snapshot.subtasks)

    def forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        self.subtasks.pop(run_id, None)


class Statement(NamedTuple):
    sql: str
    params: list[str]
    checked: bool  # returns the rows it missed (a StateUpdate)


def batch_statements(snapshots: Sequence[Snapshot], known: Known | None = None) -> list[Statement]:
    """The statements writing ``snapshots``, each with its parameters (one array literal per
    column): rows ``known`` to be stored by state updates, the others by upserts.

    A row appears once, at its highest ``seq``: one statement cannot update a row twice, and the
    older versions would lose to the newest anyway.
    """
    if len({s.run_id for s in snapshots}) != len(snapshots):
        snapshots = newest(snapshots)  # a run twice (a replayed spool): its newest only
    runs = known.runs if known is not None else {}
    subtasks = known.subtasks if known is not None else {}
    whole: list[tuple[Any, ...]] = []
    state: list[tuple[Any, ...]] = []
    new_rows: list[tuple[Any, ...]] = []
    known_rows: list[tuple[Any, ...]] = []
    for s in snapshots:
        stored = runs.get(s.run_id)
        if stored is not None and (stored is s.identity or stored == s.identity):
            state.append((*s.state, s.run_id))
        else:
            whole.append(s.identity + s.state)
        if s.subtasks:
            indexes = subtasks.get(s.run_id, ())
            for row in s.subtasks:
                (known_rows if row[_INDEX] in indexes else new_rows).append(row)
    statements: list[Statement] = []
    if whole:
        statements.append(Statement(STATUS.sql, _literals(_STATUS_LITERALS, whole), False))
    if state:
        statements.append(
            Statement(STATUS_STATE.sql, _literals(_STATE_LITERALS, state, _STATE_AT), True)
        )
    if new_rows:
        statements.append(Statement(SUBTASK.sql, _literals(_SUBTASK_LITERALS, new_rows), False))
    if known_rows:
        statements.append(
            Statement(SUBTASK_STATE.sql, _literals(_SUBTASK_LITERALS, known_rows), True)
        )
    samples = [row for s in snapshots for row in s.samples]
    if samples:
        statements.append(Statement(SAMPLE.sql, _literals(_SAMPLE_LITERALS, samples), False))
    return statements


def _text_array(values: Sequence[str | None]) -> str:
    return (
        "{"
        + ",".join(
            [
                "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                for v in values
            ]
        )
        + "}"
    )


def _number_array(values: Sequence[float | None]) -> str:
    # repr spells ints and floats as PostgreSQL reads them (the model sends nothing else).
    return "{" + ",".join(["NULL" if v is None else repr(v) for v in values]) + "}"


def _timestamp_array(values: Sequence[datetime | None]) -> str:
    return (
        "{" + ",".join(["NULL" if v is None else '"' + v.isoformat() + '"' for v in values]) + "}"
    )


_LITERAL_OF: dict[Kind, Callable[[Sequence[Any]], str]] = {
    Kind.UUID: _text_array,
    Kind.TEXT: _text_array,
    Kind.JSON: _text_array,
    Kind.INTEGER: _number_array,
    Kind.BIGINT: _number_array,
    Kind.NUMERIC: _number_array,
    Kind.DOUBLE: _number_array,
    Kind.TIMESTAMP: _timestamp_array,
}
_STATUS_LITERALS = [_LITERAL_OF[c.kind] for c in STATUS_COLUMNS]
_SUBTASK_LITERALS = [_LITERAL_OF[c.kind] for c in SUBTASK_COLUMNS]
_SAMPLE_LITERALS = [_LITERAL_OF[c.kind] for c in SAMPLE_COLUMNS]
# A state update's rows are a snapshot's state tuple followed by the run id: where each column it
# sends is in such a row (-1: the run id, last).
_STATE_NAMES = [c.name for c in STATUS_COLUMNS if c.role is Role.STATE]
_STATE_AT = [-1 if c.role is Role.KEY else _STATE_NAMES.index(c.name) for c in STATUS_STATE.sent]
_STATE_LITERALS = [_LITERAL_OF[c.kind] for c in STATUS_STATE.sent]


def _literals(
    encoders: list[Callable[[Sequence[Any]], str]],
    rows: list[tuple[Any, ...]],
    positions: list[int] | None = None,
) -> list[str]:
    columns = list(zip(*rows, strict=True))
    if positions is not None:
        columns = [columns[at] for at in positions]
    return [encode(column) for encode, column in zip(encoders, columns, strict=True)]


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
