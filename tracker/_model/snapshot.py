"""A snapshot: what one write of a run carries, and its form in the spool.

The status row is two tuples in ``STATUS_COLUMNS`` order: ``identity`` (every column but the
run's state; a run hands out the same tuple while those columns hold) and ``state``. Subtask
rows are tuples in ``SUBTASK_COLUMNS`` order, resource sample rows in ``SAMPLE_COLUMNS`` order
(the samples kept since the run's previous snapshot: each travels in exactly one snapshot). In
the spool a snapshot is JSON with its rows by column name, so a spool outlives a change of
column order, and a row written by an older version (a column it did not know, or a snapshot
without ``samples``) reads back with NULL there (or no samples).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tracker._model.columns import (
    IDENTITY_NAMES,
    SAMPLE_COLUMNS,
    SAMPLE_NAMES,
    STATUS_COLUMNS,
    STATUS_NAMES,
    SUBTASK_COLUMNS,
    SUBTASK_NAMES,
    read_value,
)

TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELLED"})
_IDENTITY_COUNT = len(IDENTITY_NAMES)


def utc(epoch: float) -> datetime:
    """``epoch`` as an aware UTC datetime (what the writer sends for a timestamp column)."""
    # The writer takes a batch's snapshots at one time, read by two columns of each: the last
    # conversion is kept (one tuple, swapped whole: safe from any thread).
    last = _LAST_UTC[0]
    if last[0] == epoch:
        return last[1]
    value = datetime.fromtimestamp(epoch, timezone.utc)
    _LAST_UTC[0] = (epoch, value)
    return value


_LAST_UTC: list[tuple[float, datetime]] = [(float("nan"), datetime.fromtimestamp(0, timezone.utc))]


class Snapshot:
    """A run's status row, the subtask rows that changed and the samples kept, under one
    ``seq``."""

    __slots__ = ("based_on", "final", "identity", "run_id", "samples", "seq", "state", "subtasks")

    def __init__(
        self,
        run_id: str,
        seq: int,
        identity: tuple[Any, ...],
        state: tuple[Any, ...],
        *,
        subtasks: list[tuple[Any, ...]],
        final: bool,
        samples: list[tuple[Any, ...]] | None = None,
        based_on: int = 0,
    ) -> None:
        self.run_id = run_id
        self.seq = seq
        self.identity = identity
        self.state = state
        self.subtasks = subtasks
        self.final = final
        self.samples: list[tuple[Any, ...]] = samples if samples is not None else []
        # The seq of the run's snapshot whose state this one's is with the progress columns
        # read again (the one before; 0: read whole): the writer need not compare them.
        self.based_on = based_on

    @property
    def status_row(self) -> dict[str, Any]:
        return dict(zip(STATUS_NAMES, self.identity + self.state, strict=True))

    @property
    def subtask_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(SUBTASK_NAMES, row, strict=True)) for row in self.subtasks]

    @property
    def sample_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(SAMPLE_NAMES, row, strict=True)) for row in self.samples]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run": self.status_row, "subtasks": self.subtask_rows}
        if self.samples:  # most snapshots have none; a spool line without the key reads the same
            data["samples"] = self.sample_rows
        return data

    @classmethod
    def from_row(
        cls,
        row: dict[str, Any],
        subtask_rows: list[dict[str, Any]],
        sample_rows: list[dict[str, Any]] | None = None,
    ) -> Snapshot:
        """A snapshot of rows given by column name (the spool's JSON, a test's dict); each
        value in the type the writer sends for its column."""
        values = tuple(read_value(c, row.get(c.name)) for c in STATUS_COLUMNS)
        subtasks = [
            tuple(read_value(c, sub.get(c.name)) for c in SUBTASK_COLUMNS) for sub in subtask_rows
        ]
        samples = [
            tuple(read_value(c, sample.get(c.name)) for c in SAMPLE_COLUMNS)
            for sample in sample_rows or ()
        ]
        return cls(
            str(row["run_id"]),
            int(row["seq"]),
            values[:_IDENTITY_COUNT],
            values[_IDENTITY_COUNT:],
            subtasks=subtasks,
            final=row.get("execution_status") in TERMINAL,
            samples=samples,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls.from_row(
            data["run"], list(data.get("subtasks") or []), list(data.get("samples") or [])
        )
