"""A snapshot: what one write of a run carries, and its form in the spool.

The status row is two tuples in ``STATUS_COLUMNS`` order: ``identity`` (every column but the
run's state; a run hands out the same tuple while those columns hold) and ``state``. Subtask
rows are tuples in ``SUBTASK_COLUMNS`` order. In the spool a snapshot is JSON with its rows by
column name, so a spool outlives a change of column order, and a row written by an older
version (a column it did not know) reads back with NULL there.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tracker._model.columns import (
    IDENTITY_NAMES,
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
    return datetime.fromtimestamp(epoch, timezone.utc)


class Snapshot:
    """A run's status row and the subtask rows that changed, under one ``seq``."""

    __slots__ = ("final", "identity", "run_id", "seq", "state", "subtasks")

    def __init__(
        self,
        run_id: str,
        seq: int,
        identity: tuple[Any, ...],
        state: tuple[Any, ...],
        *,
        subtasks: list[tuple[Any, ...]],
        final: bool,
    ) -> None:
        self.run_id = run_id
        self.seq = seq
        self.identity = identity
        self.state = state
        self.subtasks = subtasks
        self.final = final

    @property
    def status_row(self) -> dict[str, Any]:
        return dict(zip(STATUS_NAMES, self.identity + self.state, strict=True))

    @property
    def subtask_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(SUBTASK_NAMES, row, strict=True)) for row in self.subtasks]

    def to_json(self) -> dict[str, Any]:
        return {"run": self.status_row, "subtasks": self.subtask_rows}

    @classmethod
    def from_row(cls, row: dict[str, Any], subtask_rows: list[dict[str, Any]]) -> Snapshot:
        """A snapshot of rows given by column name (the spool's JSON, a test's dict); each
        value in the type the writer sends for its column."""
        values = tuple(read_value(c, row.get(c.name)) for c in STATUS_COLUMNS)
        subtasks = [
            tuple(read_value(c, sub.get(c.name)) for c in SUBTASK_COLUMNS) for sub in subtask_rows
        ]
        return cls(
            str(row["run_id"]),
            int(row["seq"]),
            values[:_IDENTITY_COUNT],
            values[_IDENTITY_COUNT:],
            subtasks=subtasks,
            final=row.get("execution_status") in TERMINAL,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls.from_row(data["run"], list(data.get("subtasks") or []))
