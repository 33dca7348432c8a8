"""A run's in-memory state, the two-level progress derived from it, and its snapshots.

Callers mutate this state under the run's lock (a progress call only bumps a counter); the writer
thread takes snapshots of it. Two-level progress is derived here, at snapshot time:

1. A *unit* is a subtask without children (a subtask that gains a child stops being one), so an
   enclosing ``genter`` does not count against ``total_subtasks`` — the original design's worked
   example (1 outer + 2 x 56 inner against a total of 112) comes out right.
2. overall = (completed units + Σ fraction of open units) / total_subtasks, clamped to 0-100; a
   unit's fraction is its explicit percent, else complete/total of its items (complete capped at
   total), else 0 — unfinished work never shows as done.
3. An explicit overall percentage holds until the next subtask boundary; FINISHED shows 100.

A snapshot reads the row through the attributes the declared columns name
(``tracker._model.columns``): the ``_row_*`` properties below are those of the status row.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from operator import attrgetter, itemgetter
from types import MappingProxyType
from typing import Any

from tracker._model.columns import STATUS_COLUMNS, Kind, Role
from tracker._model.counts import Counts
from tracker._model.secrets import mask_secrets
from tracker._model.snapshot import TERMINAL, Snapshot, utc
from tracker._model.status_row import StatusRow
from tracker._model.subtask import CLOSED_LIMIT, SUBTASK_FINAL, SubtaskCore
from tracker._model.text import clean_column
from tracker._model.usage import NO_USAGE, Usage

logger = logging.getLogger("tracker")

MASKED_COLUMNS = frozenset({"error_message", "error_detail"})
"""Columns that hold stderr tails and tracebacks: secrets in them are masked
(``tracker._model.secrets``)."""

_IDENTITY = tuple(c for c in STATUS_COLUMNS if c.role is not Role.STATE)
_STATE = tuple(c for c in STATUS_COLUMNS if c.role is Role.STATE)
_STATE_VALUES = attrgetter(*(c.attribute for c in _STATE))
# The state columns a progress update writes (tracker._model.columns): where each is in the
# state, and their values.
_PROGRESS_VALUES = attrgetter(*(c.attribute for c in _STATE if c.progress))
# The last state with the progress values put in, in one step: positions into ``last + values``.
_PROGRESS_AT = [i for i, c in enumerate(_STATE) if c.progress]
_STATE_MOVED = itemgetter(
    *(len(_STATE) + _PROGRESS_AT.index(i) if c.progress else i for i, c in enumerate(_STATE))
)
# The identity columns a run's context dict holds (the rest are attributes of the run).
_CONTEXT_COLUMNS = frozenset(
    c.name
    for c in _IDENTITY
    if c.name not in ("run_id", "task_name", "task_stage", "execution_start", "trace_id")
)


class RunCore(StatusRow):
    """A run's state: identity, context, status, subtasks, and the flags the writer polls."""

    def __init__(
        self,
        *,
        run_id: str,
        task_name: str,
        task_stage: str,
        total_subtasks: int | None,
        context: dict[str, Any],
        max_pending: int,
    ) -> None:
        self._lock = threading.RLock()
        self.run_id = run_id
        self.task_name = task_name
        self.task_stage = task_stage
        self.total_subtasks = total_subtasks
        self._context = dict(context)
        # Read-only: identity changes go through set_identity(), which the snapshot's cached
        # identity tuple relies on.
        self.context: Mapping[str, Any] = MappingProxyType(self._context)
        self.trace_id: str | None = None
        self.start_wall = time.time()
        self.start_mono = time.monotonic()
        self.end_mono: float | None = None
        self.status = "STARTED"
        self.owner_thread = threading.get_ident()
        self.done_units = 0
        self.next_index = 1
        self.open: list[SubtaskCore] = []
        self.stacks: dict[int, list[SubtaskCore]] = {}
        self.shown: SubtaskCore | None = None
        self.implicit = SubtaskCore(
            self, 0, "", parent_index=None, items_total=None, thread=0, started=self.start_mono
        )
        self.implicit_active = False
        self.current_override: int | None = None
        self.overall_explicit: float | None = None
        self.overall_message: str | None = None
        self.error_message: str | None = None
        self.error_detail: str | None = None
        self.exit_code: int | None = None
        self.memory_mb: int | None = None
        self.peak_memory_mb: int | None = None
        self.cpu_percent: float | None = None
        # Measured by the writer (tracker._record.measure): totals since the run started, what
        # the process (tree) held at the last sample, and the sample rows not yet snapshotted.
        self.usage: Usage = NO_USAGE
        self.open_fds: int | None = None
        self.db_connections: int | None = None
        self.other_connections: int | None = None
        self.samples: list[tuple[Any, ...]] = []
        self.counts = Counts()
        self.seq = 0
        self.last_progress: float | None = None
        self.last_update = self.start_wall
        # Flags the writer polls: _dirty (something changed), _moved (progress moved),
        # _urgent (a transition: write at once).
        self._dirty = True
        self._moved = False
        self._urgent = True
        self._pending: dict[int, SubtaskCore] = {}
        # Those of them the bound may drop (closed, never written), oldest queued first: found
        # at once, where a walk of _pending past the rows it must keep was quadratic.
        self._droppable: OrderedDict[int, SubtaskCore] = OrderedDict()
        self._cleaned: dict[str, tuple[str, str | None]] = {}  # column -> (value as given, cleaned)
        self._identity: tuple[Any, ...] | None = None  # built by the next snapshot
        self._state: tuple[Any, ...] | None = None  # the last snapshot's state
        self.max_pending = max_pending
        self.dropped_rows = 0
        self.exported_seq = 0
        self.final_seq = 0

    # -- time -----------------------------------------------------------------------------
    def wall(self, mono: float) -> float:
        """A monotonic reading as wall time: monotonic offsets keep end ≥ start when the clock
        steps back."""
        return self.start_wall + max(mono - self.start_mono, 0.0)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    # -- mutations (caller holds self._lock) ------------------------------------------------
    def mark(self, *, urgent: bool = False, moved: bool = False) -> None:
        self._dirty = True
        if moved:
            self._moved = True
        if urgent:
            self._urgent = True

    def begin_work(self) -> bool:
        """STARTED → RUNNING; True if this call made the transition."""
        if self.status == "STARTED":
            self.status = "RUNNING"
            self.mark(urgent=True)
            return True
        return False

    def show_implicit(self) -> None:
        """Show the run's own items (progress reported with no subtask open)."""
        active = self.implicit.status == "RUNNING"
        if self.shown is not self.implicit or self.implicit_active != active:
            self.shown = self.implicit
            self.implicit_active = active
            self.mark()

    def innermost(self, thread: int) -> SubtaskCore | None:
        stack = self.stacks.get(thread)
        if stack:
            return stack[-1]
        stack = self.stacks.get(self.owner_thread)
        return stack[-1] if stack else None

    def enter(self, sub_factory: Any, name: str, items_total: int | None) -> SubtaskCore:
        thread = threading.get_ident()
        parent = self.innermost(thread)
        if parent is not None and not parent.has_children:
            parent.has_children = True
            parent.is_unit = False  # its children are the units now
        sub: SubtaskCore = sub_factory(
            self,
            self.next_index,
            name,
            parent_index=parent.index if parent is not None else None,
            items_total=items_total,
            thread=thread,
            started=time.monotonic(),
        )
        self.next_index += 1
        self.open.append(sub)
        self.stacks.setdefault(thread, []).append(sub)
        self.shown = sub
        self.implicit_active = False
        self.overall_explicit = None
        self.current_override = None
        self._queue_row(sub)
        self.begin_work()
        self.mark(urgent=True, moved=True)
        return sub

    def above(self, sub: SubtaskCore) -> list[SubtaskCore]:
        """Subtasks of ``sub``'s thread entered after it and still open (its unclosed children)."""
        stack = self.stacks.get(sub.thread, [])
        if sub not in stack:
            return []
        return stack[stack.index(sub) + 1 :]

    def close(self, sub: SubtaskCore, status: str, *, at: float | None = None) -> None:
        """End ``sub``; also completes a close left half done. A signal's worker may end the run
        while the main thread, frozen by the handler, is in here (see tracker._runtime.handoff): the
        row is queued before the subtask leaves the open list, so that whichever the worker
        finds, an open one or a queued row, its final state is written."""
        if sub.ended is not None and sub not in self.open:
            return
        if sub.ended is None:
            for child in reversed(self.above(sub)):
                self.close(child, status, at=at)
            sub.ended = time.monotonic() if at is None else at
        if sub.status not in SUBTASK_FINAL:
            sub.status = status
            if sub.is_unit and status == "COMPLETED":
                self.done_units += 1
        sub._limit = CLOSED_LIMIT
        self._queue_row(sub)
        if sub in self.open:
            self.open.remove(sub)
        stack = self.stacks.get(sub.thread)
        if stack and sub in stack:
            stack.remove(sub)
            if not stack:
                del self.stacks[sub.thread]
        # The row shows the newest open subtask, or this one (COMPLETED) when none is open.
        self.shown = self.open[-1] if self.open else sub
        self.overall_explicit = None
        self.current_override = None
        self.mark(urgent=True, moved=True)

    def end(self, status: str, *, exit_code: int | None = None) -> bool:
        """Reach a final status; False (and no change) if the run already had one."""
        if self.terminal:
            return False
        now = time.monotonic()
        for sub in reversed(list(self.open)):
            self.close(sub, "COMPLETED" if status == "FINISHED" else "FAILED", at=now)
        self.status = status
        self.end_mono = now
        if exit_code is not None:
            self.exit_code = exit_code
        self.mark(urgent=True, moved=status == "FINISHED")
        return True

    def rewrite(self, sub: SubtaskCore) -> None:
        """Write ``sub``'s row again (the writer measured it after its last row went out)."""
        self._queue_row(sub)
        self.mark()

    def _queue_row(self, sub: SubtaskCore) -> None:
        self._pending.pop(sub.index, None)
        self._droppable.pop(sub.index, None)
        if len(self._pending) >= self.max_pending:
            self._drop_a_pending_row()
        self._pending[sub.index] = sub
        if sub.ended is not None and not sub.was_written:
            self._droppable[sub.index] = sub

    def _drop_a_pending_row(self) -> None:
        """Bounded: drop the oldest closed row waiting that was never written (open ones are
        written again anyway with their latest state). A subtask written before is kept
        whatever the bound: the database would show it RUNNING for ever, or without the
        figures the writer measured after (a starved writer's many rewrites)."""
        while self._droppable:
            index, waiting = self._droppable.popitem(last=False)
            # (Checked again: a signal's worker may run while the main thread is in here.)
            if self._pending.get(index) is waiting and not waiting.was_written:
                del self._pending[index]
                break
        else:
            return
        self.dropped_rows += 1
        if math.log10(self.dropped_rows).is_integer():
            logger.warning(
                "run %s: %d finished subtask row(s) dropped so far: more than %d waiting to be "
                "written",
                self.run_id,
                self.dropped_rows,
                self.max_pending,
            )

    # -- derived figures ------------------------------------------------------------------
    @property
    def current_subtask(self) -> int | None:
        if self.current_override is not None:
            return self.current_override
        if self.next_index == 1 and not self.implicit_active and self.done_units == 0:
            return None
        open_units = 0
        for s in self.open:
            if s.is_unit:
                open_units += 1
        return self.done_units + (open_units or (1 if self.implicit_active else 0))

    def overall_percent(self) -> float | None:
        if self.status == "FINISHED":
            return 100.0
        if self.overall_explicit is not None:
            return self.overall_explicit
        total = self.total_subtasks
        if not total:
            return None
        fractions, units = 0.0, False
        for s in self.open:
            if s.is_unit:
                fractions += s.fraction()
                units = True
        if not units and self.implicit_active:
            fractions = self.implicit.fraction()
        done = min(self.done_units + fractions, float(total))
        return round(min(max(100.0 * done / total, 0.0), 100.0), 2)

    # -- snapshot (writer thread, or the main thread at exit) -------------------------------
    def snapshot(self, now_wall: float | None = None) -> Snapshot:
        """The rows to write now, under a fresh seq; clears the dirty flags."""
        with self._lock:
            now_wall = time.time() if now_wall is None else now_wall
            # Flags first: an item counted from here on (lock-free) is the next snapshot's.
            moved, dirty = self._moved, self._dirty
            self._dirty = self._moved = self._urgent = False
            # Never before the run's start, whatever the wall clock did meanwhile.
            self.last_update = max(now_wall, self.start_wall)
            if moved:
                self.last_progress = self.last_update
            self.seq += 1
            seq = self.seq
            # Nothing but counts moved since the last snapshot (no mark(): no boundary, message,
            # sample or status): its state is the last one's with the progress columns read
            # again. tests/test_snapshot_progress.py holds this against a full reading.
            counts_only = not dirty and not self._pending and self._state is not None
            open_subtasks = self.open
            for sub in open_subtasks:
                sub.freeze()
            try:
                # Entered or closed since the last snapshot, then open ones that moved.
                rows = [sub.next_row(seq) for sub in self._pending.values()]
                self._pending.clear()
                self._droppable.clear()
                for sub in open_subtasks:
                    row = sub.moved_row(seq)
                    if row is not None:
                        rows.append(row)
                last = self._state
                if counts_only and last is not None:
                    self._state = _STATE_MOVED(last + _PROGRESS_VALUES(self))
                    based_on = seq - 1
                else:
                    self._state = _STATE_VALUES(self)
                    based_on = 0
            finally:
                for sub in open_subtasks:
                    sub.thaw()
            final = self.status in TERMINAL
            if final:
                self.final_seq = seq
            identity = self._identity or self._identity_values()
            samples, self.samples = self.samples, []
            return Snapshot(
                self.run_id,
                seq,
                identity,
                self._state,
                subtasks=rows,
                final=final,
                samples=samples,
                based_on=based_on,
            )

    def set_identity(self, **changes: Any) -> None:
        """Change identity columns after the start (caller holds the lock): ``task_stage``,
        ``trace_id``, or what the context holds (``git_commit``, ``script_path`` …)."""
        for name, value in changes.items():
            if name in ("task_stage", "trace_id"):
                setattr(self, name, value)
            elif name in _CONTEXT_COLUMNS:
                self._context[name] = value
            else:
                raise ValueError(f"{name} is not an identity column that can change")
        self._identity = None

    def _identity_values(self) -> tuple[Any, ...]:
        """The row's identity columns, cleaned: the same tuple object until ``set_identity``
        changes one of them."""
        if self._identity is not None:
            return self._identity
        ctx = self._context
        own: dict[str, Any] = {
            "run_id": self.run_id,
            "task_name": self.task_name,
            "task_stage": self.task_stage,
            "execution_start": utc(self.start_wall),
            "trace_id": self.trace_id,
        }
        values = []
        for column in _IDENTITY:
            name = column.name
            value = ctx.get(name) if name in _CONTEXT_COLUMNS else own[name]
            if name == "hostname":
                value = value or "unknown"
            elif name == "process_id":
                value = value or 0
            elif column.kind is Kind.JSON and value is not None:
                import json  # once per run, on the writer thread

                value = json.dumps(value, separators=(",", ":"), default=str)
            elif column.kind is Kind.TEXT and value is not None:
                value = self.cleaned(name, str(value))
            values.append(value)
        self._identity = tuple(values)
        return self._identity

    def cleaned(self, column: str, value: str | None) -> str | None:
        """``value`` made storable in ``column``; problems go to ``report_text``."""
        if value is None:
            return None
        # Most values are the same object snapshot after snapshot (the task name, a message
        # not changed since): clean each once, not at every write.
        held = self._cleaned.get(column)
        if held is not None and held[0] is value:
            return held[1]
        if column in MASKED_COLUMNS:
            value = mask_secrets(value)
        text, problems = clean_column(column, value)
        if problems:
            self.report_text(column, problems)
        self._cleaned[column] = (value, text)
        return text

    def report_text(self, column: str, problems: tuple[str, ...]) -> None:
        """Told when a value had to be sanitized to be stored (the public Run logs it)."""
