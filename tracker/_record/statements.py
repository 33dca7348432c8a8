"""The writer's statements: a batch of rows of one table in one upsert, derived from its columns.

Rows travel column-wise, one array literal per column (a text parameter the server casts to the
column's type; ``tracker._record.literals``); no temporary table, so a transaction-pooling proxy
in front of the database is fine. psycopg's own list dumpers cost 20 µs a snapshot, more than
taking it, which left the writer at about half the database's own rate. The statement updates
the rows that exist and inserts the rest, both guarded by ``seq`` so that a late or replayed
snapshot never regresses a row::

    WITH v AS (SELECT * FROM unnest(%s::uuid[], …) AS v(run_id, …)),
         updated AS (UPDATE pipetrack.pipeline_status AS t SET … FROM v
                     WHERE t.run_id = v.run_id AND t.seq < v.seq)
    INSERT INTO pipetrack.pipeline_status (…) SELECT … FROM v
    WHERE NOT EXISTS (SELECT FROM pipetrack.pipeline_status AS p WHERE p.run_id = v.run_id)
    ON CONFLICT (run_id) DO UPDATE SET … WHERE pipeline_status.seq < EXCLUDED.seq

Updating first and inserting only the new rows spares existing rows the insert-side trigger
(the archived-run check); the ON CONFLICT arm covers a row another session inserts meanwhile.
Rows the writer has stored before (``Known``) go by lighter statements: a state update (the
state columns) or, when only the progress columns differ from the stored row, a progress update
(``ProgressUpdate``: a run in a loop of ``advance()`` writes eight columns, not 43).
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
from functools import cached_property
from operator import itemgetter
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
from tracker._record.literals import LITERAL_OF, number_array, text_array, timestamp_array

SCHEMA = "pipetrack"
# A JSON column travels as text: an insert-only one (the environment) is parsed for a new row
# alone, so the updates that make up nearly all writes never parse it.
_TRAVELS_AS = {Kind.JSON: "text"}


@dataclass(frozen=True)
class Upsert:
    """The upsert of one table's rows, one array parameter per column."""

    table: str
    columns: tuple[Column, ...]

    @cached_property
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

    @cached_property
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
    writes those again whole. Rows known to exist are nearly all writes, and this carries 28
    of the status row's 43 columns and skips the insert arm: a third less for the database to
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

    @cached_property
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


@dataclass(frozen=True)
class ProgressUpdate:
    """An update of the progress columns (``Column.progress``) of rows whose other columns are
    as this writer last stored them: a run inside a loop changes only its item count, and so
    its percentages and times. It applies only to a row still at the ``seq`` it was stored
    with (the ``stored_seq`` sent with each row): a row anyone else wrote meanwhile (a replayed
    spool, the reaper) is missed, named like a state update's, and written again whole. The
    status goes too, unchanged, so that the database's keep-final trigger skips the update of
    a run that has ended, as it skips a state update. Eight of the status row's 43 columns and
    four of the subtask row's 18: at 1,000 runs in one process, the difference between the
    writer keeping up with about half of what the database alone can write and two thirds of
    it (bench/bench_writes.py)."""

    table: str
    columns: tuple[Column, ...]

    @property
    def key(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role is Role.KEY)

    @property
    def moving(self) -> tuple[Column, ...]:
        """The progress columns."""
        return tuple(c for c in self.columns if c.progress)

    @property
    def sent(self) -> tuple[Column, ...]:
        """The columns it sends, in order (then each row's stored seq): the progress columns,
        then the key."""
        return (*self.moving, *self.key)

    @cached_property
    def sql(self) -> str:
        table, key, moving = f"{SCHEMA}.{self.table}", self.key, self.moving
        names = ", ".join(c.name for c in self.sent)
        arrays = ", ".join(f"%s::{c.kind.value}[]" for c in self.sent)
        sets = ", ".join(f"{c.name} = v.{c.name}" for c in moving)
        keys = [c.name for c in key]
        match = " AND ".join(f"t.{k} = v.{k}" for k in keys)
        returned = ", ".join(f"t.{k}" for k in keys)
        missed = ", ".join(f"v.{k}::text" if k == "run_id" else f"v.{k}" for k in keys)
        return (
            f"WITH v AS (SELECT * FROM unnest({arrays}, %s::bigint[]) AS v({names}, stored_seq)), "
            f"u AS (UPDATE {table} AS t SET {sets} FROM v "
            f"WHERE {match} AND t.seq = v.stored_seq RETURNING {returned}) "
            f"SELECT {missed} FROM v "
            f"WHERE ({', '.join(f'v.{k}' for k in keys)}) NOT IN (SELECT {', '.join(keys)} FROM u)"
        )


# A run that has ended has no subtask running: the rows of its subtasks still open in the table
# below its final snapshot's seq are closed as the run's end closes its open subtasks (COMPLETED if
# it finished, else FAILED), at its end. The final snapshot's own rows are written first and carry
# its seq; this catches a row whose closing was taken but never stored (a snapshot the database
# refused, a spool line cut short), which would otherwise show RUNNING for ever. The reaper does the
# same for a run it finds lost.
CLOSE_LEFT_OPEN = (
    f"UPDATE {SCHEMA}.pipeline_subtask AS t"
    " SET subtask_status = CASE WHEN v.status = 'FINISHED' THEN 'COMPLETED' ELSE 'FAILED' END,"
    " ended_at = greatest(v.ended_at, t.started_at)"
    " FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::bigint[])"
    " AS v(run_id, status, ended_at, seq)"
    " WHERE t.run_id = v.run_id AND t.subtask_status IN ('STARTED', 'RUNNING') AND t.seq < v.seq"
)
STATUS = Upsert("pipeline_status", STATUS_COLUMNS)
SUBTASK = Upsert("pipeline_subtask", SUBTASK_COLUMNS)
STATUS_STATE = StateUpdate("pipeline_status", STATUS_COLUMNS)
SUBTASK_STATE = StateUpdate("pipeline_subtask", SUBTASK_COLUMNS)
STATUS_PROGRESS = ProgressUpdate("pipeline_status", STATUS_COLUMNS)
SUBTASK_PROGRESS = ProgressUpdate("pipeline_subtask", SUBTASK_COLUMNS)
SAMPLE = InsertNew("pipeline_run_sample", SAMPLE_COLUMNS)


class Known:
    """What the writer knows the tables hold, as this writer last stored it: each run's newest
    stored snapshot, and its stored subtask rows. Told by the store after each committed
    transaction; a row the database no longer has (or that someone else changed) is found by
    the update that misses it."""

    def __init__(self) -> None:
        self.runs: dict[str, Snapshot] = {}
        self.subtasks: dict[str, dict[int, tuple[Any, ...]]] = {}

    def stored(self, snapshots: Sequence[Snapshot]) -> None:
        for snapshot in snapshots:
            run_id = snapshot.run_id
            if snapshot.final:
                self.forget(run_id)
                continue
            held = self.runs.get(run_id)
            if held is not None and held.seq >= snapshot.seq:
                continue  # an older one (a replayed spool): the row kept the newer
            self.runs[run_id] = snapshot
            rows = self.subtasks.setdefault(run_id, {})
            for row in snapshot.subtasks:
                rows[row[_INDEX]] = row

    def forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        self.subtasks.pop(run_id, None)


class Statement(NamedTuple):
    sql: str
    params: list[str]
    checked: bool  # returns the rows it missed (a state or progress update)


def batch_statements(snapshots: Sequence[Snapshot], known: Known | None = None) -> list[Statement]:
    """The statements writing ``snapshots``, each with its parameters (one array literal per
    column): rows ``known`` to be stored by state updates (by progress updates where only their
    progress columns differ from the stored row), the others by upserts.

    A row appears once, at its highest ``seq``: one statement cannot update a row twice, and the
    older versions would lose to the newest anyway.
    """
    if len({s.run_id for s in snapshots}) != len(snapshots):
        snapshots = newest(snapshots)  # a run twice (a replayed spool): its newest only
    rows = _Sorted(known or Known())
    for s in snapshots:
        rows.add(s)
    plan = (
        (STATUS.sql, _STATUS_LITERALS, None, False, rows.whole),
        (STATUS_STATE.sql, _STATE_LITERALS, _STATE_AT, True, rows.state),
        (STATUS_PROGRESS.sql, _STATUS_PROGRESS_LITERALS, None, True, rows.progress),
        (SUBTASK.sql, _SUBTASK_LITERALS, None, False, rows.new_subtasks),
        (SUBTASK_STATE.sql, _SUBTASK_LITERALS, None, True, rows.known_subtasks),
        (SUBTASK_PROGRESS.sql, _SUBTASK_PROGRESS_LITERALS, None, True, rows.moved_subtasks),
        (SAMPLE.sql, _SAMPLE_LITERALS, None, False, rows.samples),
    )
    statements = [
        Statement(sql, _literals(encoders, batch, positions), checked)
        for sql, encoders, positions, checked, batch in plan
        if batch
    ]
    if rows.ended:
        statements.append(Statement(CLOSE_LEFT_OPEN, _literals(_ENDED_LITERALS, rows.ended), False))
    return statements


class _Sorted:
    """A batch's rows, sorted by the statement that writes each."""

    def __init__(self, known: Known) -> None:
        self.known = known
        self.whole: list[tuple[Any, ...]] = []  # status rows not known: upserted
        self.state: list[tuple[Any, ...]] = []  # known: their state columns
        self.progress: list[tuple[Any, ...]] = []  # known, only progress columns changed
        self.new_subtasks: list[tuple[Any, ...]] = []
        self.known_subtasks: list[tuple[Any, ...]] = []
        self.moved_subtasks: list[tuple[Any, ...]] = []
        self.samples: list[tuple[Any, ...]] = []
        self.ended: list[tuple[Any, ...]] = []  # final snapshots: (run, status, end, seq)

    def add(self, s: Snapshot) -> None:
        if s.final:
            self.ended.append((s.run_id, *_STATE_ENDED(s.state), s.seq))
        stored = self.known.runs.get(s.run_id)
        if stored is None or not (stored.identity is s.identity or stored.identity == s.identity):
            self.whole.append(s.identity + s.state)
        elif s.based_on == stored.seq or _STATE_STILL(stored.state) == _STATE_STILL(s.state):
            self.progress.append((*_STATE_MOVING(s.state), s.run_id, stored.seq))
        else:
            self.state.append((*s.state, s.run_id))
        if s.subtasks:
            held_rows = self.known.subtasks.get(s.run_id, {})
            for row in s.subtasks:
                held = held_rows.get(row[_INDEX])
                if held is None:
                    self.new_subtasks.append(row)
                elif _SUBTASK_STILL(held) == _SUBTASK_STILL(row):
                    self.moved_subtasks.append((*_SUBTASK_MOVING_KEYED(row), held[_SEQ]))
                else:
                    self.known_subtasks.append(row)
        if s.samples:
            self.samples.extend(s.samples)


_STATUS_LITERALS = [LITERAL_OF[c.kind] for c in STATUS_COLUMNS]
_SUBTASK_LITERALS = [LITERAL_OF[c.kind] for c in SUBTASK_COLUMNS]
_SAMPLE_LITERALS = [LITERAL_OF[c.kind] for c in SAMPLE_COLUMNS]
# A state update's rows are a snapshot's state tuple followed by the run id: where each column it
# sends is in such a row (-1: the run id, last).
_STATE_NAMES = [c.name for c in STATUS_COLUMNS if c.role is Role.STATE]
_STATE_AT = [-1 if c.role is Role.KEY else _STATE_NAMES.index(c.name) for c in STATUS_STATE.sent]
_STATE_LITERALS = [LITERAL_OF[c.kind] for c in STATUS_STATE.sent]
# A progress update's rows: the progress columns' values, the key, then the stored seq.
_STATE_COLUMNS = [c for c in STATUS_COLUMNS if c.role is Role.STATE]
_STATE_STILL = itemgetter(*(i for i, c in enumerate(_STATE_COLUMNS) if not c.progress))
_STATE_MOVING = itemgetter(*(i for i, c in enumerate(_STATE_COLUMNS) if c.progress))
_STATE_ENDED = itemgetter(*(_STATE_NAMES.index(n) for n in ("execution_status", "execution_end")))
_ENDED_LITERALS: list[Callable[[Sequence[Any]], str]] = [
    text_array,
    text_array,
    timestamp_array,
    number_array,
]
_STATUS_PROGRESS_LITERALS = [*(LITERAL_OF[c.kind] for c in STATUS_PROGRESS.sent), number_array]


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
# A subtask row's columns that do not move with progress, and those a progress update sends.
_SUBTASK_STILL = itemgetter(*(i for i, c in enumerate(SUBTASK_COLUMNS) if not c.progress))
_SUBTASK_MOVING_KEYED = itemgetter(*(SUBTASK_COLUMNS.index(c) for c in SUBTASK_PROGRESS.sent))
_SUBTASK_PROGRESS_LITERALS = [
    *(LITERAL_OF[c.kind] for c in SUBTASK_PROGRESS.sent),
    number_array,
]
