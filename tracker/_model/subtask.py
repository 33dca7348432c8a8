"""One subtask's state: its items, percent and message, and the row a snapshot writes of it.

The caller's thread changes it under its run's lock (``advance()`` touches ``_complete`` and
``_limit`` only); the writer's snapshot reads its row through the attributes the declared
columns name (``tracker._model.columns``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from tracker._model.counts import Counts
from tracker._model.snapshot import utc
from tracker._model.usage import NO_USAGE, Usage

if TYPE_CHECKING:
    from tracker._model.state import RunCore

UNLIMITED = 2**63 - 1
CLOSED_LIMIT = -1
"""A closed subtask's ``_limit``: any advance takes the slow path, which reports the misuse."""
SUBTASK_FINAL = ("COMPLETED", "FAILED")
"""The statuses a subtask ends in."""


class SubtaskCore:
    """One subtask's state. ``_complete``/``_limit`` are what the hot path touches."""

    __slots__ = (
        "_complete",
        "_counts",
        "_limit",
        "_lock",
        "_percent",
        "_row_seq",
        "_run",
        "_started_at",
        "_total",
        "_written",
        "ended",
        "has_children",
        "index",
        "is_unit",
        "message",
        "name",
        "parent_index",
        "peak_rss_bytes",
        "started",
        "status",
        "thread",
        "usage",
    )

    def __init__(
        self,
        run: RunCore,
        index: int,
        name: str,
        *,
        parent_index: int | None,
        items_total: int | None,
        thread: int,
        started: float,
    ) -> None:
        self._run = run
        self._lock = run._lock
        self.index = index
        self.parent_index = parent_index
        self.name = name
        self.status = "RUNNING"
        self.started = started
        self._started_at: datetime | None = None
        self.ended: float | None = None
        self._complete = 0
        self._total = items_total
        self._limit = UNLIMITED if items_total is None else items_total
        self._percent: float | None = None
        # What the last row written of it held (items, total, message, counts version), None
        # before the first: an open subtask is written again only when one of them moved.
        self._written: tuple[int, int | None, str | None, int] | None = None
        self._row_seq = 0
        self.message: str | None = None
        self.is_unit = True
        self.has_children = False
        self.thread = thread
        # Set when it ends, by the writer's measure (tracker._record.measure); counts on demand.
        self.usage: Usage = NO_USAGE
        self.peak_rss_bytes: int | None = None
        self._counts: Counts | None = None

    @property
    def items_complete(self) -> int:
        return self._complete

    @property
    def items_total(self) -> int | None:
        return self._total

    @property
    def closed(self) -> bool:
        return self.ended is not None

    def _set_total(self, total: int | None) -> None:
        self._total = total
        if self.ended is None:
            self._limit = UNLIMITED if total is None else total

    def fraction(self) -> float:
        """How much of this subtask is done, 0-1, never counting unfinished items as done."""
        if self.status == "COMPLETED":
            return 1.0
        if self._percent is not None:
            return self._percent / 100.0
        if self._total:
            return min(self._complete, self._total) / self._total
        return 0.0

    def percent(self) -> float | None:
        if self.status == "COMPLETED":
            return 100.0
        if self._percent is not None:
            return float(self._percent)
        if self._total is None:
            return None
        if self._total == 0:
            return 0.0
        return round(100.0 * min(self._complete, self._total) / self._total, 2)

    # -- the row (read by the snapshot through the columns' sources) --------------------------
    @property
    def counts(self) -> Counts:
        """Its work counts (made on first use: most subtasks count nothing)."""
        if self._counts is None:
            self._counts = Counts()
        return self._counts

    def _counted(self) -> int:
        return 0 if self._counts is None else self._counts.version

    def changed_since_written(self) -> bool:
        return self._written != (self._complete, self._total, self.message, self._counted())

    def mark_written(self, seq: int) -> None:
        """The next row of this subtask is taken now, under ``seq``."""
        self._row_seq = seq
        self._written = (self._complete, self._total, self.message, self._counted())

    @property
    def was_written(self) -> bool:
        return self._written is not None

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def _row_name(self) -> str:
        return self._run.cleaned("subtask_name", self.name) or ""

    @property
    def _row_message(self) -> str | None:
        return self._run.cleaned("message", self.message)

    @property
    def _row_started(self) -> datetime:
        if self._started_at is None:
            self._started_at = utc(self._run.wall(self.started))
        return self._started_at

    @property
    def _row_ended(self) -> datetime | None:
        return None if self.ended is None else utc(self._run.wall(self.ended))

    @property
    def _row_counts(self) -> str | None:
        return None if self._counts is None else self._counts.json()
