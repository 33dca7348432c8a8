"""The in-memory state of a run and its subtasks, and the rows a snapshot of it writes.

Callers mutate this state under the run's lock (a progress call only bumps a counter); the writer
thread takes snapshots of it. Two-level progress is derived here, at snapshot time:

1. A *unit* is a subtask without children (a subtask that gains a child stops being one), so an
   enclosing ``genter`` does not count against ``total_subtasks`` — the original design's worked
   example (1 outer + 2 x 56 inner against a total of 112) comes out right.
2. overall = (completed units + Σ fraction of open units) / total_subtasks, clamped to 0-100; a
   unit's fraction is its explicit percent, else complete/total of its items (complete capped at
   total), else 0 — unfinished work never shows as done.
3. An explicit overall percentage holds until the next subtask boundary; FINISHED shows 100.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from tracker._model.text import clean_column

logger = logging.getLogger("tracker")

TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELLED"})
UNLIMITED = 2**63 - 1
CLOSED_LIMIT = -1
# The statuses a subtask ends in.
_SUBTASK_FINAL = ("COMPLETED", "FAILED")
MASKED_COLUMNS = frozenset({"error_message", "error_detail"})
"""Columns that hold stderr tails and tracebacks: secrets in them are masked
(``tracker._model.secrets``)."""
"""A closed subtask's ``_limit``: any advance takes the slow path, which reports the misuse."""


_second: list[tuple[int, str]] = [(0, "1970-01-01T00:00:00")]  # swapped whole: thread-safe
_last: list[tuple[float, str]] = [(math.nan, "")]


def iso(epoch: float) -> str:
    """``epoch`` in ISO 8601, UTC, to the microsecond.

    The writer stamps a batch's snapshots with one time, and a snapshot's timestamps are
    mostly within the same second: the last result is kept, and the date and time up to the
    second are formatted once per second.
    """
    last = _last[0]
    if last[0] == epoch:
        return last[1]
    whole = math.floor(epoch)
    micro = round((epoch - whole) * 1_000_000)  # as datetime.fromtimestamp rounds
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    held = _second[0]
    if held[0] != whole:
        held = (whole, datetime.fromtimestamp(whole, timezone.utc).isoformat()[:-6])
        _second[0] = held
    text = f"{held[1]}.{micro:06d}+00:00"
    _last[0] = (epoch, text)
    return text


_CLEANED_IDENTITY_COLUMNS = (
    "task_name",
    "task_stage",
    "task_type",
    "hostname",
    "user_name",
    "script_path",
    "script_file",
    "log_path",
    "log_file",
    "git_commit",
)


class SubtaskCore:
    """One subtask's state. ``_complete``/``_limit`` are what the hot path touches."""

    __slots__ = (
        "_complete",
        "_limit",
        "_lock",
        "_percent",
        "_run",
        "_started_text",
        "_total",
        "_written_complete",
        "_written_message",
        "_written_row",
        "_written_total",
        "ended",
        "has_children",
        "index",
        "is_unit",
        "message",
        "name",
        "parent_index",
        "started",
        "status",
        "thread",
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
        self._started_text = ""
        self.ended: float | None = None
        self._complete = 0
        self._total = items_total
        self._limit = UNLIMITED if items_total is None else items_total
        self._percent: float | None = None
        # What the last row written of this subtask held (see RunCore.snapshot).
        self._written_complete = -1
        self._written_total: int | None = None
        self._written_message: str | None = None
        self._written_row: dict[str, Any] = {}
        self.message: str | None = None
        self.is_unit = True
        self.has_children = False
        self.thread = thread

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
            return self._percent
        if self._total is None:
            return None
        if self._total == 0:
            return 0.0
        return round(100.0 * min(self._complete, self._total) / self._total, 2)

    def _start_iso(self, run: RunCore) -> str:
        self._started_text = iso(run.wall(self.started))
        return self._started_text

    def written_row(self, run: RunCore, seq: int) -> dict[str, Any]:
        """``row()``, remembered as the last row written of this subtask."""
        row = self._written_row = self.row(run, seq)
        self._written_complete = self._complete
        self._written_total, self._written_message = self._total, self.message
        return row

    def row(self, run: RunCore, seq: int) -> dict[str, Any]:
        name = run.cleaned("subtask_name", self.name) or ""
        message = run.cleaned("message", self.message)
        return {
            "run_id": run.run_id,
            "subtask_index": self.index,
            "parent_index": self.parent_index,
            "subtask_name": name,
            "subtask_status": self.status,
            "started_at": self._started_text or self._start_iso(run),
            "ended_at": iso(run.wall(self.ended)) if self.ended is not None else None,
            "items_total": self._total,
            "items_complete": self._complete,
            "message": message,
            "seq": seq,
        }


IDENTITY_COLUMNS = (
    "run_id",
    "task_name",
    "task_stage",
    "task_type",
    "hostname",
    "process_id",
    "user_name",
    "script_path",
    "script_file",
    "log_path",
    "log_file",
    "execution_start",
    "git_commit",
    "environment",
    "trace_id",
    "parent_run_id",
)
"""The status row's columns that say what and where a run is: set at the start (the git commit
and the trace id may come a moment later), the same in every later snapshot."""
CHANGING_COLUMNS = (
    "execution_end",
    "execution_status",
    "total_subtasks",
    "subtask_name",
    "subtask_status",
    "overall_progress_message",
    "subtask_progress_message",
    "subtask_items_total",
    "error_message",
    "error_detail",
    "exit_code",
    # Sampled at heartbeats, or moved at subtask boundaries: a snapshot that changes these is
    # written whole, which is rare enough.
    "current_subtask",
    "memory_mb",
    "peak_memory_mb",
    "cpu_percent",
    # From here on: what a progress tick changes (PROGRESS_COLUMNS).
    "overall_percent_complete",
    "subtask_percent_complete",
    "subtask_items_complete",
    "last_update",
    "last_progress",
    "seq",
)
"""The status row's other columns, in the order a snapshot holds them."""
PROGRESS_START = CHANGING_COLUMNS.index("overall_percent_complete")
PROGRESS_COLUMNS = CHANGING_COLUMNS[PROGRESS_START:]
"""The columns a progress tick changes: a snapshot whose other columns equal the last one
written can be written as an update of these alone (``tracker._record.batch``)."""
STATUS_COLUMNS = IDENTITY_COLUMNS + CHANGING_COLUMNS
# The identity columns a run's context dict holds (the rest are the run's own attributes).
_CONTEXT_COLUMNS = tuple(
    c
    for c in IDENTITY_COLUMNS
    if c not in ("run_id", "task_name", "task_stage", "execution_start", "trace_id")
)


class Snapshot:
    """What one write carries: the run's row and the subtask rows that changed, one ``seq``.

    The status row is three tuples, in ``IDENTITY_COLUMNS`` and ``CHANGING_COLUMNS`` order:
    ``identity``, ``stable`` (what a progress tick leaves alone) and ``progress``. A run hands
    out the same ``identity`` tuple object for as long as those columns do not change, and
    keeps ``stable`` apart, which spares an encoder comparing or slicing them. ``status_row``
    is the row as a dict.
    """

    __slots__ = (
        "_row",
        "final",
        "identity",
        "moved",
        "progress",
        "run_id",
        "seq",
        "stable",
        "subtask_rows",
    )

    def __init__(
        self,
        run_id: str,
        seq: int,
        identity: tuple[Any, ...],
        stable: tuple[Any, ...],
        progress: tuple[Any, ...],
        *,
        subtask_rows: list[dict[str, Any]],
        final: bool,
        moved: int = 0,
    ) -> None:
        self.run_id = run_id
        self.seq = seq
        self.identity = identity
        self.stable = stable
        self.progress = progress
        self.subtask_rows = subtask_rows
        self.final = final
        # The last ``moved`` subtask rows differ from the run's previous snapshot's only in
        # their item count (and seq).
        self.moved = moved
        self._row: dict[str, Any] | None = None

    @property
    def status_row(self) -> dict[str, Any]:
        if self._row is None:
            values = self.identity + self.stable + self.progress
            self._row = dict(zip(STATUS_COLUMNS, values, strict=True))
        return self._row

    def to_json(self) -> dict[str, Any]:
        return {"run": self.status_row, "subtasks": self.subtask_rows}

    @classmethod
    def from_row(cls, row: dict[str, Any], subtask_rows: list[dict[str, Any]]) -> Snapshot:
        return cls(
            str(row["run_id"]),
            int(row["seq"]),
            tuple(row.get(c) for c in IDENTITY_COLUMNS),
            tuple(row.get(c) for c in CHANGING_COLUMNS[:PROGRESS_START]),
            tuple(row.get(c) for c in PROGRESS_COLUMNS),
            subtask_rows=subtask_rows,
            final=row.get("execution_status") in TERMINAL,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls.from_row(data["run"], list(data.get("subtasks") or []))


class RunCore:
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
        self.seq = 0
        self.last_progress: float | None = None
        self._progress_text: str | None = None  # last_progress in ISO 8601
        self.last_update = self.start_wall
        # Flags the writer polls: _dirty (something changed), _moved (progress moved),
        # _urgent (a transition: write at once).
        self._dirty = True
        self._moved = False
        self._urgent = True
        self._pending: dict[int, SubtaskCore] = {}
        self._cleaned: dict[str, tuple[str, str | None]] = {}  # column -> (value as given, cleaned)
        self._identity: tuple[Any, ...] | None = None  # built by the next snapshot
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
        if sub.status not in _SUBTASK_FINAL:
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

    def _queue_row(self, sub: SubtaskCore) -> None:
        self._pending.pop(sub.index, None)
        if len(self._pending) >= self.max_pending:
            self._drop_a_pending_row(sub)
        self._pending[sub.index] = sub

    def _drop_a_pending_row(self, keep: SubtaskCore) -> None:
        """Bounded: drop the oldest closed row waiting that was never written (open ones are
        written again anyway with their latest state). A closed subtask written before while
        open is kept whatever the bound, or the database would show it RUNNING for ever; there
        are at most as many of those as were open at the last snapshot."""
        for index, waiting in self._pending.items():
            if waiting.ended is not None and waiting is not keep and not waiting._written_row:
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
            # Never before the run's start, whatever the wall clock did meanwhile.
            now_wall = max(now_wall, self.start_wall)
            now_text = iso(now_wall)
            if self._moved:
                self.last_progress = now_wall
                self._progress_text = now_text
            self.last_update = now_wall
            self.seq += 1
            seq = self.seq
            rows: list[dict[str, Any]] = []
            moved: list[dict[str, Any]] = []  # rows whose item count alone changed
            for sub in self._pending.values():
                rows.append(sub.written_row(self, seq))
            self._pending.clear()
            for sub in self.open:
                if sub._total != sub._written_total or sub.message is not sub._written_message:
                    rows.append(sub.written_row(self, seq))
                elif sub._complete != sub._written_complete:
                    # The last row written but for the count: no cleaning, no formatting.
                    row = {**sub._written_row, "items_complete": sub._complete, "seq": seq}
                    sub._written_row, sub._written_complete = row, sub._complete
                    moved.append(row)
            stable, progress = self._changing_values(seq, now_text)
            self._dirty = self._moved = self._urgent = False
            final = self.status in TERMINAL
            if final:
                self.final_seq = seq
            identity = self._identity or self._identity_values()
            if moved:
                rows += moved
            return Snapshot(
                self.run_id,
                seq,
                identity,
                stable,
                progress,
                subtask_rows=rows,
                final=final,
                moved=len(moved),
            )

    def _changing_values(self, seq: int, now_text: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The row's ``CHANGING_COLUMNS``, in that order, before and from ``PROGRESS_START``
        (``now_text``: last_update)."""
        shown = self.shown
        cleaned = self.cleaned
        if shown is None:
            name = status = percent = message = total = complete = None
        else:
            name = cleaned("subtask_name", shown.name or None)
            status, total, complete = shown.status, shown._total, shown._complete
            percent = shown.percent()
            message = shown.message
            if message is not None:
                message = cleaned("subtask_progress_message", message)
        # Mostly None: no call for those.
        overall, error, detail = self.overall_message, self.error_message, self.error_detail
        return (
            iso(self.wall(self.end_mono)) if self.end_mono is not None else None,
            self.status,
            self.total_subtasks,
            name,
            status,
            overall if overall is None else cleaned("overall_progress_message", overall),
            message,
            total,
            error if error is None else cleaned("error_message", error),
            detail if detail is None else cleaned("error_detail", detail),
            self.exit_code,
            self.current_subtask(),
            self.memory_mb,
            self.peak_memory_mb,
            self.cpu_percent,
        ), (
            self.overall_percent(),
            percent,
            complete,
            now_text,
            self._progress_text,
            seq,
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
        """The row's ``IDENTITY_COLUMNS``, cleaned: the same tuple object until
        ``set_identity`` changes one of them."""
        if self._identity is not None:
            return self._identity
        ctx = self._context
        given: dict[str, Any] = {
            "run_id": self.run_id,
            "task_name": self.task_name,
            "task_stage": self.task_stage,
            "execution_start": iso(self.start_wall),
            "trace_id": self.trace_id,
            **{name: ctx.get(name) for name in _CONTEXT_COLUMNS},
        }
        given["hostname"] = given["hostname"] or "unknown"
        given["process_id"] = given["process_id"] or 0
        for column in _CLEANED_IDENTITY_COLUMNS:
            given[column] = self.cleaned(column, given[column])
        self._identity = tuple(given[c] for c in IDENTITY_COLUMNS)
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
            # Imported here: most runs never fail, and `import tracker` stays quick.
            from tracker._model.secrets import mask_secrets

            value = mask_secrets(value)
        text, problems = clean_column(column, value)
        if problems:
            self.report_text(column, problems)
        self._cleaned[column] = (value, text)
        return text

    def report_text(self, column: str, problems: tuple[str, ...]) -> None:
        """Told when a value had to be sanitized to be stored (the public Run logs it)."""
