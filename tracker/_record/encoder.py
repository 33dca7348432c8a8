"""Snapshots as the parameters of the writer's four statements (``tracker._record.batch``).

A snapshot goes one of two ways:

* whole: every column, through the upserts (``STATUS``, ``SUBTASK``). A run whose row is
  known to hold its identity columns sends them as NULL (the update keeps what the row has):
  most of a row's bytes, and of the server's parsing, spared. Were the row gone meanwhile,
  the insert of such a slim row breaks a NOT NULL constraint, the batch is refused, and the
  writer's retry sends full rows.
* a progress tick: when every earlier snapshot of the run is in the database (so its rows are
  as they were written) and only ``PROGRESS_COLUMNS`` changed since the last one, the status
  row goes through ``STATUS_PROGRESS`` and the subtask rows whose item count alone moved
  through ``SUBTASK_PROGRESS``: a third of the columns. A row such an update misses (gone,
  or changed by someone else) comes back from the database; the writer then writes the batch
  whole, and that run never ticks again.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from tracker._model.state import IDENTITY_COLUMNS, PROGRESS_COLUMNS, Snapshot
from tracker._record.arrays import element, encoder_for
from tracker._record.batch import (
    STATUS,
    STATUS_PROGRESS,
    SUBTASK,
    SUBTASK_PROGRESS,
    Progress,
    Table,
)

STATEMENTS: tuple[Table | Progress, ...] = (STATUS, STATUS_PROGRESS, SUBTASK, SUBTASK_PROGRESS)
"""The writer's statements, in the order ``Encoded`` gives their parameters."""
_IDENTITY_COUNT = len(IDENTITY_COLUMNS)
# A stored run's identity columns: its id, and NULL for the rest.
_SLIM_TAIL = ["NULL"] * (_IDENTITY_COUNT - 1)
_SUBTASK_VALUES = operator.itemgetter(*SUBTASK.columns)
_SUBTASK_TICK_VALUES = operator.itemgetter(*SUBTASK_PROGRESS.columns)
_LAST_UPDATE = PROGRESS_COLUMNS.index("last_update")
_LAST_PROGRESS = PROGRESS_COLUMNS.index("last_progress")

Column = Callable[[Sequence[Any]], str]


class Encoded(NamedTuple):
    """A batch's parameters, per statement (None where the batch has no row for it), and how
    many rows each progress update must change."""

    statuses: list[str] | None  # STATUS
    status_ticks: list[str] | None  # STATUS_PROGRESS
    subtasks: list[str] | None  # SUBTASK
    subtask_ticks: list[str] | None  # SUBTASK_PROGRESS
    status_tick_rows: int = 0
    subtask_tick_rows: int = 0

    def parameters(self) -> tuple[list[str] | None, ...]:
        """The statements' parameters, in ``STATEMENTS`` order."""
        return self.statuses, self.status_ticks, self.subtasks, self.subtask_ticks

    def rows(self) -> tuple[int | None, ...]:
        """How many rows each statement must change, where that is checked (the updates)."""
        return None, self.status_tick_rows, None, self.subtask_tick_rows


class _Known:
    """What the encoder knows of a run's row."""

    __slots__ = ("elements", "identity", "stored_seq", "stored_stable", "ticks")

    def __init__(self, identity: tuple[Any, ...]) -> None:
        self.identity = identity
        self.elements = [element(v) for v in identity]
        self.stored_seq = 0  # the newest of the run's snapshots the database took
        self.stored_stable: tuple[Any, ...] = ()  # its stable columns (Snapshot.stable)
        self.ticks = True  # False once a progress update missed the row


class BatchEncoder:
    """Encodes batches for one connection, remembering what the database took of each run.

    ``types`` (``column_types()`` of the database) picks the quick encoding of each column.
    """

    def __init__(self, types: Mapping[str, Mapping[str, str]]) -> None:
        self._known: dict[str, _Known] = {}
        self.ticked = 0  # snapshots encoded as progress ticks (for tests and benchmarks)
        status = [encoder_for(types[STATUS.name][c]) for c in STATUS.columns]
        self._changing_kinds = status[_IDENTITY_COUNT:]
        # The run id travels as its cached element; the rest as the snapshot's tail.
        self._tick_kinds = [encoder_for(types[STATUS.name][c]) for c in STATUS_PROGRESS.columns[1:]]
        self._subtask_kinds = [encoder_for(types[SUBTASK.name][c]) for c in SUBTASK.columns]
        self._subtask_tick_kinds = [
            encoder_for(types[SUBTASK.name][c]) for c in SUBTASK_PROGRESS.columns
        ]

    def encode(self, snapshots: Sequence[Snapshot], *, full: bool = False) -> Encoded:
        """The batch's parameters; ``full``: every snapshot whole, with its identity.

        A row appears once, at its highest ``seq``: one statement cannot update a row twice,
        and the older versions would lose to the newest anyway.
        """
        if len({s.run_id for s in snapshots}) != len(snapshots):
            snapshots = _newest(snapshots)  # a run twice (a replayed spool): its newest only
        whole: list[Snapshot] = []
        identities: list[list[str]] = []
        ticks: list[Snapshot] = []
        tick_ids: list[str] = []
        rows: list[dict[str, Any]] = []
        row_ticks: list[dict[str, Any]] = []
        for snapshot in snapshots:
            known = self._known_of(snapshot)
            # Every earlier snapshot of the run is in the database: its rows are as written.
            chained = not full and known.ticks and 0 < known.stored_seq == snapshot.seq - 1
            stable = snapshot.stable
            if (
                chained
                and (stable is known.stored_stable or stable == known.stored_stable)
                # Never-moved progress cannot be told from "as last_update" (STATUS_PROGRESS).
                and snapshot.progress[_LAST_PROGRESS] is not None
            ):
                ticks.append(snapshot)
                tick_ids.append(known.elements[0])
            else:
                whole.append(snapshot)
                stored = known.stored_seq and not full
                identities.append([known.elements[0], *_SLIM_TAIL] if stored else known.elements)
            moved = snapshot.moved
            if chained and moved:
                if moved == len(snapshot.subtask_rows):
                    row_ticks += snapshot.subtask_rows
                else:
                    rows += snapshot.subtask_rows[:-moved]
                    row_ticks += snapshot.subtask_rows[-moved:]
            else:
                rows += snapshot.subtask_rows
            if snapshot.final:
                del self._known[snapshot.run_id]
        statuses = None
        if whole:
            statuses = ["{" + ",".join(column) + "}" for column in zip(*identities, strict=True)]
            statuses += _columns([s.stable + s.progress for s in whole], self._changing_kinds)
        status_ticks = None
        if ticks:
            self.ticked += len(ticks)
            status_ticks = ["{" + ",".join(tick_ids) + "}"]
            columns = list(zip(*[s.progress for s in ticks], strict=True))
            # Progress that moved at this tick: last_progress is last_update, sent as NULL.
            columns[_LAST_PROGRESS] = tuple(
                None if progress is update else progress
                for progress, update in zip(
                    columns[_LAST_PROGRESS], columns[_LAST_UPDATE], strict=True
                )
            )
            status_ticks += [
                kind(column) for kind, column in zip(self._tick_kinds, columns, strict=True)
            ]
        return Encoded(
            statuses,
            status_ticks,
            _subtask_columns(rows, _SUBTASK_VALUES, SUBTASK.columns, self._subtask_kinds),
            _subtask_columns(
                row_ticks, _SUBTASK_TICK_VALUES, SUBTASK_PROGRESS.columns, self._subtask_tick_kinds
            ),
            len(ticks),
            len(row_ticks),
        )

    def stored(self, snapshots: Sequence[Snapshot]) -> None:
        """The database took ``snapshots``: their rows are as written."""
        for snapshot in snapshots:
            known = self._known.get(snapshot.run_id)
            if known is not None and snapshot.seq > known.stored_seq:
                known.stored_seq = snapshot.seq
                known.stored_stable = snapshot.stable

    def missed(self, run_ids: Sequence[str]) -> None:
        """A progress update missed these runs' rows: write them whole from now on."""
        for run_id in run_ids:
            known = self._known.get(run_id)
            if known is not None:
                known.ticks = False

    def _known_of(self, snapshot: Snapshot) -> _Known:
        known = self._known.get(snapshot.run_id)
        identity = snapshot.identity
        # A run hands out the same tuple while its identity holds: mostly no comparing.
        if known is None or (known.identity is not identity and known.identity != identity):
            # New, or its identity changed (a git commit or a trace id that came late): sent
            # whole, identity and all, until the database has taken it.
            ticks = known is None or known.ticks
            known = self._known[snapshot.run_id] = _Known(identity)
            known.ticks = ticks
        return known


def _columns(rows: list[tuple[Any, ...]], kinds: list[Column]) -> list[str]:
    columns = zip(*rows, strict=True)
    return [kind(column) for kind, column in zip(kinds, columns, strict=True)]


def _subtask_columns(
    rows: list[dict[str, Any]],
    values: Callable[[dict[str, Any]], tuple[Any, ...]],
    names: tuple[str, ...],
    kinds: list[Column],
) -> list[str] | None:
    if not rows:
        return None
    try:
        return _columns(list(map(values, rows)), kinds)
    except KeyError:  # a row spooled by an older version, without some column
        return _columns([tuple(row.get(c) for c in names) for row in rows], kinds)


def _newest(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """One snapshot per run, its newest, carrying the newest version of each subtask row."""
    newest: dict[str, Snapshot] = {}
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for snapshot in snapshots:
        held = newest.get(snapshot.run_id)
        if held is None or held.seq < snapshot.seq:
            newest[snapshot.run_id] = snapshot
        for row in snapshot.subtask_rows:
            key = (str(row["run_id"]), int(row["subtask_index"]))
            previous = rows.get(key)
            if previous is None or previous["seq"] < row["seq"]:
                rows[key] = row
    # Every row came with a snapshot of its run, so each run's rows go with its newest.
    by_run: dict[str, list[dict[str, Any]]] = {}
    for (run_id, _), row in rows.items():
        by_run.setdefault(run_id, []).append(row)
    return [
        Snapshot(
            s.run_id,
            s.seq,
            s.identity,
            s.stable,
            s.progress,
            subtask_rows=by_run.pop(s.run_id, []),
            final=s.final,
        )
        for s in newest.values()
    ]
