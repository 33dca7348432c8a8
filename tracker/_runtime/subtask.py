"""``Subtask``: one step of a run as scripts hold it (a context manager), and ``advance``.

``advance`` is the hot path: one type check, a lock, an add, a compare and two stores. Everything
else validates through the run's checker, and reports misuse (calls after close, counts past the
total) as a warning, or an error in strict mode.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from tracker._model.checks import IGNORE, SUBTASK_STATUSES
from tracker._model.subtask import SubtaskCore
from tracker._runtime import observers
from tracker._runtime.counting import add_count
from tracker._runtime.guards import false, guarded, none
from tracker.errors import InvalidValue, SubtaskOrderError

if TYPE_CHECKING:
    from tracker._runtime.run import Run

# Any int 1 is this object in CPython (small ints are shared); another 1 takes the checked path,
# which counts it just the same.
_ONE = 1


class Subtask(SubtaskCore):
    """One step of a run (a ``genter``/``gexit`` block). Use it as a context manager.

    ``with run.subtask("Loading Delaware", items_total=8) as st: ... st.advance()``
    """

    __slots__ = ()

    _run: Run

    def advance(self, n: int = 1) -> None:
        """``n`` more items done (the hot path: no I/O, no clock; one item takes no lock)."""
        if n is _ONE:
            if next(self._ticks) < self._room:
                self._run._moved = True
                return
            self._past_room()
            return
        if n.__class__ is not int or n < 1:
            self._advance_slow(n)
            return
        with self._lock:
            complete = self._complete + n
            if complete > self._limit:
                self._advance_slow(n)
                return
            self._complete = complete
            self._run._moved = True

    def _past_room(self) -> None:
        """An item counted past the total, or after the end: judged by the checked path."""
        with self._lock:
            self._untick()
        self._advance_slow(1)

    def _advance_slow(self, n: object) -> None:
        run = self._run
        count = run._checker.count(n, "n")
        if not isinstance(count, int):
            return
        with self._lock:
            if not self._usable("advance"):
                return
            complete = self._complete + count
            if self._total is not None and complete > self._total:
                run._checker.problem(
                    InvalidValue(
                        f"subtask {self.name!r}: {complete} items complete exceeds the total "
                        f"{self._total}; the percentage stays at 100",
                        run_id=run.run_id,
                        argument="items_complete",
                        value=complete,
                    ),
                    "items:over",
                )
            self._complete = complete
            run._moved = True

    @guarded(none)
    def update(
        self,
        complete: int | None = None,
        *,
        total: int | None = None,
        percent: float | None = None,
        message: str | None = None,
    ) -> None:
        """Set the items done and/or total, an explicit percent, or a message."""
        self._update(complete, total, percent, message)

    def _update(
        self,
        complete: int | None,
        total: int | None,
        percent: float | None,
        message: str | None,
    ) -> None:
        run = self._run
        if (
            isinstance(complete, int)
            and complete.__class__ is int
            and percent is None
            and (total is None or total.__class__ is int)
            and (message is None or message.__class__ is str)
        ):
            # The common case inside a loop (track_task_progress(i, n, msg)): plain numbers,
            # nothing to report; anything unusual takes the checked path below.
            with self._lock:
                limit = self._limit_value if total is None else total
                if 0 <= complete <= limit and self.ended is None and run.status == "RUNNING":
                    if total is not None and total != self._total:
                        self._set_total(total)
                        run._dirty = True
                    if complete != self._base or self._ticked_since_set():
                        self._complete = complete
                        run._moved = True
                    if message is not None:
                        self.message = message
                        run._dirty = True
                    return
        checker = run._checker
        new_total = checker.count(total, "items_total") if total is not None else IGNORE
        new_complete = checker.count(complete, "items_complete") if complete is not None else IGNORE
        new_percent = checker.percent(percent, "subtask_percent") if percent is not None else IGNORE
        new_message = checker.text(message, "message") if message is not None else IGNORE
        with self._lock:
            if not self._usable("update"):
                return
            total_now = new_total if isinstance(new_total, int) else self._total
            if isinstance(new_complete, int) and total_now is not None and new_complete > total_now:
                checker.problem(
                    InvalidValue(
                        f"subtask {self.name!r}: {new_complete} items complete exceeds the "
                        f"total {total_now}; the percentage stays at 100",
                        run_id=run.run_id,
                        argument="items_complete",
                        value=new_complete,
                    ),
                    "items:over",
                )
            moved = False
            if isinstance(new_total, int) and new_total != self._total:
                self._set_total(new_total)
                moved = True
            if isinstance(new_complete, int) and new_complete != self._complete:
                self._complete = new_complete
                moved = True
            if isinstance(new_percent, float) and new_percent != self._percent:
                self._percent = new_percent
                moved = True
            if isinstance(new_message, str):
                self.message = new_message
            run.begin_work()
            run.mark(moved=moved)
        run._wake_if_urgent()

    def _usable(self, action: str) -> bool:
        run = self._run
        if self.index == 0 and self.ended is not None:
            return False  # a detached handle (see detached): already reported when made
        if run.terminal:
            run._closed(action)
            return False
        if self.ended is not None:
            run._checker.problem(
                SubtaskOrderError(
                    f"cannot {action} subtask {self.name!r}: it already ended", run_id=run.run_id
                ),
                "subtask:ended",
            )
            return False
        return True

    @guarded(none)
    def close(self, status: str = "COMPLETED") -> None:
        """End this subtask (and any of its children still open in the same thread)."""
        run = self._run
        checked = run._checker.status(status, SUBTASK_STATUSES[2:], "subtask_status")
        if checked is IGNORE:
            checked = "COMPLETED"
        # Its end's resource figures: taken here, outside the lock, just as it ends.
        writer = run._tracker.writer
        sample = None if self.ended is not None or run.terminal else writer.boundary_sample()
        with self._lock:
            if self.ended is not None:
                return
            if run.terminal:
                return
            children = run.above(self)
            if children:
                names = ", ".join(repr(c.name) for c in children)
                run._checker.problem(
                    SubtaskOrderError(
                        f"subtask {self.name!r} ended while {names} inside it were open; "
                        "closing them too",
                        run_id=run.run_id,
                    ),
                    "subtask:order",
                )
            ended = [*reversed(children), self]
            run.close(self, str(checked))
            writer.at_boundary(run, sample, list(ended))
        run._wake()
        for sub in ended:
            observers.notify("on_subtask_end", run, sub)

    @guarded(false)
    def count(self, name: str, n: int = 1) -> bool:
        """Add ``n`` to this subtask's work count ``name``, and so to the run's (a subtask's
        counts are what was counted while it was the one counted on; a parent's do not include
        its children's). True if counted; see ``Run.count``."""
        if self.index == 0 and self.ended is not None:
            return False  # a detached handle (see detached): already reported when made
        return add_count(self._run, self if self.index else None, name, n)

    def fail(self) -> None:
        """End this subtask as FAILED."""
        self.close("FAILED")

    @property
    def run(self) -> Run:
        return self._run

    def __enter__(self) -> Subtask:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failed = exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        self.close("FAILED" if failed else "COMPLETED")

    def __repr__(self) -> str:
        return f"<Subtask {self.index} {self.name!r} {self.status} {self._complete}/{self._total}>"


def detached(run: Run, name: str) -> Subtask:
    """A subtask handle for a call made after the run ended: accepts calls, records nothing."""
    sub = Subtask(run, 0, name, parent_index=None, items_total=None, thread=0, started=0.0)
    sub.ended = 0.0
    sub._limit = -1
    sub.status = "FAILED"
    return sub
