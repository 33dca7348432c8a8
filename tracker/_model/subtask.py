"""One subtask's state: its items, percent and message, and the row a snapshot writes of it.

The caller's thread changes it under its run's lock, except for the hot path: one more item
(``advance()``, ``tracker.progress``) is ``next()`` on the subtask's ``itertools.count``, which the
interpreter runs as one step, so concurrent threads lose no item without a lock. The count of
items is ``_base`` plus the ticks counted; setting it (``_complete = n``, under the lock) starts
a new count from ``_base = n``: a concurrent tick on the old count is one that came before.
``_room`` is how many ticks fit before the total (or a closed subtask) needs the checked path.
The writer's snapshot reads the row through the attributes the declared columns name
(``tracker._model.columns``).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from tracker._model.columns import SUBTASK_COLUMNS
from tracker._model.counts import Counts
from tracker._model.snapshot import utc
from tracker._model.usage import NO_USAGE, Usage

if TYPE_CHECKING:
    from tracker._model.state import RunCore

_ROW_VALUES = attrgetter(*(c.attribute for c in SUBTASK_COLUMNS))
_NAMES = [c.name for c in SUBTASK_COLUMNS]
# The last row with a new count and seq put in, in one step: positions into ``last + (count,
# seq)``.
_ROW_MOVED = itemgetter(
    *(
        len(_NAMES) if name == "items_complete" else len(_NAMES) + 1 if name == "seq" else at
        for at, name in enumerate(_NAMES)
    )
)

UNLIMITED = 2**63 - 1
CLOSED_LIMIT = -1
"""A closed subtask's ``_limit``: any advance takes the slow path, which reports the misuse."""
SUBTASK_FINAL = ("COMPLETED", "FAILED")
"""The statuses a subtask ends in."""


class SubtaskCore:
    """One subtask's state. ``_complete``/``_limit`` are what the hot path touches."""

    __slots__ = (
        "_base",
        "_counts",
        "_frozen",
        "_limit_value",
        "_lock",
        "_percent",
        "_room",
        "_row",
        "_row_seq",
        "_run",
        "_started_at",
        "_ticks",
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
        self._ticks = itertools.count()
        self._base = 0
        self._room = 0
        self._total = items_total
        self._limit_value = 0
        self._limit = UNLIMITED if items_total is None else items_total
        self._percent: float | None = None
        # What the last row written of it held (items, total, message, counts version), None
        # before the first: an open subtask is written again only when one of them moved.
        self._written: tuple[int, int | None, str | None, int] | None = None
        self._row_seq = 0
        self._row: tuple[Any, ...] | None = None  # the last row taken (see moved_row)
        self._frozen: int | None = None  # the count as a snapshot read it once (see freeze)
        self.message: str | None = None
        self.is_unit = True
        self.has_children = False
        self.thread = thread
        # Set when it ends, by the writer's measure (tracker._record.measure); counts on demand.
        self.usage: Usage = NO_USAGE
        self.peak_rss_bytes: int | None = None
        self._counts: Counts | None = None

    # -- the item count: _base plus the ticks (see the module docstring) ---------------------
    @property
    def _complete(self) -> int:
        frozen = self._frozen
        if frozen is not None:
            return frozen
        return self._base + _ticked(self._ticks)

    @_complete.setter
    def _complete(self, value: int) -> None:  # the caller holds the lock
        self._frozen = None
        # A fresh count instead of reading the old one: a tick that lands on the old count
        # meanwhile is one that came before this setting, which it overrides anyway.
        self._ticks = itertools.count()
        self._base = value
        self._room = self._limit_value - value

    @property
    def _limit(self) -> int:
        """The count past which an item takes the checked path (the total; CLOSED_LIMIT)."""
        return self._limit_value

    @_limit.setter
    def _limit(self, value: int) -> None:  # the caller holds the lock
        self._limit_value = value
        self._room = value - self._base

    def freeze(self) -> None:
        """Read the count once for a whole snapshot (the caller holds the lock): each figure of
        the snapshot then shows the same count, and it is read once, not at every figure. An
        item counted meanwhile is the next snapshot's (the run's flags were cleared first)."""
        self._frozen = None
        self._frozen = self._complete

    def thaw(self) -> None:
        self._frozen = None

    def _ticked_since_set(self) -> bool:
        """Whether an item was counted since the count was last set (cheaper than reading it:
        a fresh count's repr is ``count(0)``)."""
        return repr(self._ticks) != "count(0)"

    def _untick(self) -> None:
        """Take back the tick of an item the checked path is to judge (caller holds the lock)."""
        self._frozen = None
        self._base -= 1
        self._room = self._limit_value - self._base

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

    def mark_written(self, seq: int) -> tuple[int, int | None, str | None, int]:
        """The next row of this subtask is taken now, under ``seq``; what it holds."""
        self._row_seq = seq
        self._written = written = (self._complete, self._total, self.message, self._counted())
        return written

    def next_row(self, seq: int) -> tuple[Any, ...]:
        """Its row as of now, every column read, under ``seq`` (the caller holds the lock): a
        boundary or the end (status, times and totals move)."""
        self.mark_written(seq)
        self._row = row = _ROW_VALUES(self)
        return row

    def moved_row(self, seq: int) -> tuple[Any, ...] | None:
        """Its row under ``seq`` if it changed since the last (None if not), for an open
        subtask (the caller holds the lock). A row whose only change is its count is the last
        with the count and ``seq`` put in: what a loop of ``advance()`` changes, snapshot after
        snapshot."""
        written, last = self._written, self._row
        now = (self._complete, self._total, self.message, self._counted())
        if now == written:
            return None
        self._row_seq, self._written = seq, now
        if last is not None and written is not None and written[1:] == now[1:]:
            row: tuple[Any, ...] = _ROW_MOVED((*last, now[0], seq))
        else:
            row = _ROW_VALUES(self)
        self._row = row
        return row

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


def _ticked(ticks: itertools.count[int]) -> int:
    """How many times ``next()`` ran on ``ticks`` (its repr is ``count(n)``; no other public
    reading leaves it as it is)."""
    return int(repr(ticks)[6:-1])
