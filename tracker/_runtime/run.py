"""``Run``: one execution of a script as scripts hold it (a context manager), and ``progress()``.

Everything here runs on the caller's thread and does no I/O: it validates, updates the state in
``_model`` under the run's lock, and wakes the writer only at transitions (ordinary progress is
picked up by the writer's timer through the run's dirty flags). Its subtasks are
``tracker._runtime.subtask.Subtask``.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from threading import get_ident
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from tracker._model.checks import IGNORE, Checker
from tracker._model.state import RunCore
from tracker._runtime import observers
from tracker._runtime.counting import add_count
from tracker._runtime.guards import false, guarded, none
from tracker._runtime.subtask import Subtask, detached
from tracker.errors import InvalidValue, RunClosed

if TYPE_CHECKING:
    from tracker._runtime.trackers import Tracker

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("tracker")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def _detached_for(run: Run, name: object = "", *_: Any) -> Subtask:
    return detached(run, str(name))


class Run(RunCore):
    """One execution of a pipeline script, as recorded in ``pipeline_status``.

    Create one with ``tracker.run(...)`` (a context manager) or ``track_init(...)``.
    """

    def __init__(self, tracker: Tracker, *, checker: Checker, **core: Any) -> None:
        super().__init__(**core)
        self._tracker = tracker
        self._checker = checker
        # Progress reported while no subtask is open (track_task_progress without genter).
        self.implicit: Subtask = Subtask(
            self, 0, "", parent_index=None, items_total=None, thread=0, started=self.start_mono
        )

    # -- read-only view -----------------------------------------------------------------
    @property
    def stage(self) -> str:
        return self.task_stage

    @property
    def parent_run_id(self) -> str | None:
        value = self.context.get("parent_run_id")
        return str(value) if value else None

    def set_trace_id(self, trace_id: str) -> None:
        """Record the OpenTelemetry trace this run belongs to (32 lowercase hex digits)."""
        if not isinstance(trace_id, str) or not _TRACE_ID.match(trace_id):
            self._checker.problem(
                InvalidValue(
                    f"trace_id {trace_id!r} is not 32 lowercase hex digits; ignored",
                    run_id=self.run_id,
                    argument="trace_id",
                    value=trace_id,
                ),
                "trace_id",
            )
            return
        with self._lock:
            self.set_identity(trace_id=trace_id)
            self.mark()

    @property
    def subtasks_open(self) -> list[Subtask]:
        with self._lock:
            return [s for s in self.open if isinstance(s, Subtask)]

    def innermost_subtask(self) -> Subtask | None:
        """The innermost open subtask of the calling thread (else of the run's thread)."""
        with self._lock:
            sub = self.innermost(get_ident())
        return sub if isinstance(sub, Subtask) else None

    # -- transitions ----------------------------------------------------------------------
    @guarded(_detached_for)
    def subtask(self, name: str, *, items_total: int | None = None) -> Subtask:
        """Enter a subtask now; leave it with ``close()`` or by ending the ``with`` block."""
        checker = self._checker
        text = checker.text(name, "subtask_name")
        if text is IGNORE:
            text = ""
        total = checker.count(items_total, "items_total") if items_total is not None else None
        # Its start's resource figures: taken here, outside the lock, just before it begins.
        writer = self._tracker.writer
        sample = None if self.terminal else writer.boundary_sample()
        with self._lock:
            if self.terminal:
                self._closed("start a subtask")
                return detached(self, str(text))
            if self.total_subtasks is not None:
                units = self.done_units + sum(1 for s in self.open if s.is_unit)
                parent = self.innermost(get_ident())
                extra = 0 if parent is not None and parent.is_unit else 1
                if units + extra > self.total_subtasks:
                    checker.problem(
                        InvalidValue(
                            f"subtask {units + extra} ({str(text)!r}) exceeds total_subtasks="
                            f"{self.total_subtasks}; overall progress stays at 100",
                            run_id=self.run_id,
                            argument="total_subtasks",
                            value=self.total_subtasks,
                        ),
                        "subtasks:over",
                    )
            sub = self.enter(Subtask, str(text), total if isinstance(total, int) else None)
            writer.at_boundary(self, sample)
        if not isinstance(sub, Subtask):  # enter() builds what it is given
            raise TypeError(sub)
        self._wake()
        observers.notify("on_subtask_start", self, sub)
        return sub

    def progress(
        self, iterable: Iterable[T], desc: str | None = None, *, total: int | None = None
    ) -> Iterator[T]:
        """Iterate ``iterable`` inside a subtask named ``desc``, counting items as they pass."""
        return _progress(self, iterable, desc, total)

    @guarded(false)
    def count(self, name: str, n: int = 1) -> bool:
        """Add ``n`` (a whole number >= 0) to the run's work count ``name`` (at most 32 names
        a run): ``run.count("rows_written", len(batch))``. True if counted; a bad name or
        amount is refused as a whole (a warning, or an error in strict mode)."""
        return add_count(self, None, name, n)

    @guarded(none)
    def message(self, text: str) -> None:
        """Set the run's progress message (``overall_progress_message``)."""
        value = self._checker.text(text, "message")
        if value is IGNORE:
            return
        with self._lock:
            if self.terminal:
                self._closed("set a message")
                return
            self.overall_message = str(value)
            self.begin_work()
            self.mark()
        self._wake_if_urgent()
        observers.notify("on_message", self, str(value))

    @guarded(none)
    def set_progress(self, percent: float | None = None, *, message: str | None = None) -> None:
        """An explicit overall percentage (it holds until the next subtask boundary)."""
        value = self._checker.percent(percent, "overall_percent") if percent is not None else IGNORE
        text = self._checker.text(message, "message") if message is not None else IGNORE
        with self._lock:
            if self.terminal:
                self._closed("set progress")
                return
            if isinstance(value, float):
                self.overall_explicit = value
            if isinstance(text, str):
                self.overall_message = text
            self.begin_work()
            self.mark(moved=isinstance(value, float))
        self._wake_if_urgent()

    @guarded(false)
    def finish(self, message: str | None = None) -> bool:
        """End the run as FINISHED. A second finish (or one after a failure) is a warned no-op."""
        text = self._checker.text(message, "message") if message is not None else IGNORE
        with self._lock:
            if self.terminal:
                self._checker.problem(
                    RunClosed(
                        f"run already ended as {self.status}; finish() ignored",
                        run_id=self.run_id,
                        status=self.status,
                    ),
                    "finish:twice",
                    always_warn=True,
                )
                return False
            if isinstance(text, str):
                self.overall_message = text
            self.end("FINISHED")
        self._ended()
        return True

    @guarded(false)
    def fail(
        self,
        error: BaseException | str | None = None,
        detail: str | None = None,
        *,
        exit_code: int | None = None,
    ) -> bool:
        """End the run as FAILED with an error message (an exception gives its traceback)."""
        message, trace = _describe(error)
        if detail is not None:
            checked = self._checker.text(detail, "error_detail")
            trace = str(checked) if checked is not IGNORE else trace
        return self._end_with("FAILED", message, trace, exit_code)

    @guarded(false)
    def cancel(self, reason: str | None = None, *, exit_code: int | None = None) -> bool:
        """End the run as CANCELLED (what a signal does)."""
        return self._end_with("CANCELLED", reason or "cancelled", None, exit_code)

    def _end_with(
        self, status: str, message: str | None, detail: str | None, exit_code: int | None
    ) -> bool:
        with self._lock:
            if self.terminal:
                self._closed(f"mark it {status}")
                return False
            self._end_state(status, message, detail, exit_code)
        self._ended()
        return True

    def _end_state(
        self, status: str, message: str | None, detail: str | None, exit_code: int | None
    ) -> None:
        """The final state, under the lock the caller holds (or was lent: see _handoff)."""
        self.error_message = message
        if detail is not None:
            self.error_detail = detail
        self.end(status, exit_code=exit_code)

    def _cancel_quietly(self, reason: str, exit_code: int) -> bool:
        """CANCELLED if still going, telling no one (the signal worker wakes the writer and
        notifies the observers itself, in its own order); False if it had already ended."""
        with self._lock:
            if self.terminal:
                return False
            self._end_state("CANCELLED", reason, None, exit_code)
        return True

    def _ended(self) -> None:
        self._wake()
        observers.notify("on_run_end", self)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until this process's tracking state is written (or spooled); False on timeout."""
        return self._tracker.flush(timeout)

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.terminal:
                if exc is None:
                    self.finish()
                else:
                    self.end_from_exception(exc)
        finally:
            self._tracker._forget(self)

    def end_from_exception(self, exc: BaseException) -> None:
        """FAILED (CANCELLED for KeyboardInterrupt; per exit code for SystemExit)."""
        if isinstance(exc, KeyboardInterrupt):
            self.cancel("KeyboardInterrupt", exit_code=130)
        elif isinstance(exc, SystemExit):
            code = exc.code
            if code in (0, None):
                self.finish()
            else:
                self.fail(f"SystemExit: {code}", exit_code=code if isinstance(code, int) else 1)
        else:
            self.fail(exc, exit_code=1)

    # -- plumbing -------------------------------------------------------------------------
    def _closed(self, action: str) -> None:
        self._checker.problem(
            RunClosed(
                f"cannot {action}: run {self.task_name!r} already ended as {self.status}",
                run_id=self.run_id,
                status=self.status,
            ),
            f"closed:{action}",
        )

    def _wake(self) -> None:
        self._tracker._wake()

    def _wake_if_urgent(self) -> None:
        if self._urgent:
            self._tracker._wake()

    def report_text(self, column: str, problems: tuple[str, ...]) -> None:
        self._checker.warn(f"{column}: {'; '.join(problems)}", f"text:{column}")

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.task_name!r} {self.status}>"


def _describe(error: BaseException | str | None) -> tuple[str | None, str | None]:
    if error is None:
        return None, None
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return text, trace
    return str(error), None


def _progress(run: Run, iterable: Iterable[T], desc: str | None, total: int | None) -> Iterator[T]:
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except (TypeError, AttributeError):
            total = None
    sub = run.subtask(desc if desc is not None else "progress", items_total=total)
    try:
        for item in iterable:
            yield item
            # Subtask.advance(), inlined: this loop is as hot as the caller's.
            if next(sub._ticks) < sub._room:
                run._moved = True
            else:
                sub._past_room()
    except GeneratorExit:
        # The loop ended early (a break, or an exception in its body that the run records).
        sub.close()
        raise
    except BaseException:
        sub.close("FAILED")  # the iterable itself raised
        raise
    sub.close()
