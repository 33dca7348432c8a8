"""Applies what a wrapped command reports (protocol commands, resource samples) to its Run.

The tracker's public ``Run``/``Subtask`` API does the work; the few things it has no method for
(setting the total or the stage of a running run, resources measured in another process) are
done here under the run's lock, the same way the tracker's own writer does them. The tree's
totals, its subtasks' and its sample rows are the writer's (``tracker._record.measure``), from
the same tree sampler; the supervisor's every-second samples keep memory and CPU current here.
"""

from __future__ import annotations

import logging
from pathlib import PurePath
from typing import TYPE_CHECKING

from tracker._wrap._outcome import Outcome
from tracker._wrap.protocol import (
    Command,
    Count,
    Enter,
    Error,
    Exit,
    Finish,
    Init,
    Message,
    Percent,
    Progress,
    Total,
)

if TYPE_CHECKING:
    from tracker._runtime.run import Run
    from tracker._sampling import ResourceSample

__all__ = ["RunDriver"]

logger = logging.getLogger("tracker")
_REJECTED_WARNINGS = 5


def _coalesced(commands: list[Command]) -> list[Command]:
    """``commands`` with each run of consecutive Progress lines reduced to its last (the
    subtask's latest state wins anyway), keeping the last message any of them carried."""
    if len(commands) < 2:
        return commands
    kept: list[Command] = []
    for command in commands:
        previous = kept[-1] if kept else None
        if isinstance(command, Progress) and isinstance(previous, Progress):
            kept[-1] = Progress(
                command.done,
                previous.total if command.total is None else command.total,
                previous.message if command.message is None else command.message,
            )
        else:
            kept.append(command)
    return kept


class RunDriver:
    """The wrapper's Listener: turns commands into Run calls and remembers what ends the run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.reported_error: Error | None = None
        self.finish_message: str | None = None
        self.rejected_count = 0

    # -- Listener ---------------------------------------------------------------------------
    def commands(self, commands: list[Command]) -> None:
        for command in _coalesced(commands):
            try:
                self._apply(command)
            except Exception as exc:
                # Even in strict mode: the wrapper carries the command's output, and a tracking
                # problem must never stop that.
                logger.warning("pipetrack: could not apply %r: %s", command, exc)

    def rejected(self, line: bytes, reason: str) -> None:
        self.rejected_count += 1
        if self.rejected_count <= _REJECTED_WARNINGS:
            logger.warning("pipetrack: not a valid protocol line (%s): %.120r", reason, line)
        elif self.rejected_count == _REJECTED_WARNINGS + 1:
            logger.warning("pipetrack: more invalid protocol lines; no further warnings")

    def sampled(self, sample: ResourceSample) -> None:
        # Memory only: the CPU figure is the writer's, over 2 s or more (this sample may be
        # milliseconds after the writer's own, and CPU time moves in 10 ms ticks).
        run = self.run
        with run._lock:
            if sample.rss_bytes > 0:  # 0: the command has exited, only its zombie is left
                run.memory_mb = sample.memory_mb
            run.peak_memory_mb = max(run.peak_memory_mb or 0, sample.peak_memory_mb)
            run._dirty = True

    # -- commands ---------------------------------------------------------------------------
    def _apply(self, command: Command) -> None:  # noqa: PLR0912 - one branch per command
        run = self.run
        if isinstance(command, Init):
            self._configure(command.task, command.subtasks, command.stage)
        elif isinstance(command, Total):
            self._configure(None, command.subtasks, None)
        elif isinstance(command, Enter):
            run.subtask(command.name, items_total=command.items)
        elif isinstance(command, Exit):
            sub = run.innermost_subtask()
            if sub is None:
                logger.warning("pipetrack: exit without an open subtask; ignored")
                return
            if command.message is not None:
                sub.update(message=command.message)
            sub.close(command.status)
        elif isinstance(command, Progress):
            sub = run.innermost_subtask()
            if sub is not None:
                sub.update(command.done, total=command.total, message=command.message)
                return
            # No subtask open: the run's own items, as tracker.track_task_progress does.
            run.implicit.update(command.done, total=command.total, message=command.message)
            with run._lock:
                run.show_implicit()
        elif isinstance(command, Percent):
            self._percent(command)
        elif isinstance(command, Message):
            sub = run.innermost_subtask() if command.scope == "subtask" else None
            if sub is not None:
                sub.update(message=command.text)
            else:
                run.message(command.text)
        elif isinstance(command, Count):
            # The innermost subtask's (and so the run's), as tracker.gcount counts.
            sub = run.innermost_subtask()
            (sub or run).count(command.name, command.n)
        elif isinstance(command, Error):
            self.reported_error = command
        elif isinstance(command, Finish):
            self.finish_message = command.message

    def _percent(self, command: Percent) -> None:
        value = min(max(command.value, 0.0), 100.0)
        if command.scope == "subtask":
            sub = self.run.innermost_subtask()
            if sub is None:
                logger.warning("pipetrack: a subtask percentage outside a subtask; ignored")
                return
            sub.update(percent=value, message=command.message)
        else:
            self.run.set_progress(value, message=command.message)

    def _configure(self, task: str | None, subtasks: int | None, stage: str | None) -> None:
        run = self.run
        if task and run.task_name not in (task, PurePath(task).stem):
            # The name keys the run's history and cannot change once the row exists.
            logger.warning(
                "pipetrack: the run is named %r (from `pipetrack run`); %r from track_init is "
                "not used — pass --task to name it",
                run.task_name,
                task,
            )
        with run._lock:
            if subtasks is not None:
                run.total_subtasks = subtasks
            if stage:
                run.set_identity(task_stage=stage)
            run.mark(urgent=True, moved=subtasks is not None)
        run._wake()

    # -- the end ----------------------------------------------------------------------------
    def end(self, outcome: Outcome) -> None:
        """Record the outcome ``decide()`` reached, with the finish message the child sent."""
        run = self.run
        if outcome.status == "FINISHED":
            with run._lock:
                run.exit_code = outcome.exit_code
            run.finish(self.finish_message)
        elif outcome.status == "CANCELLED":
            run.cancel(outcome.error_message, exit_code=outcome.exit_code)
            if outcome.error_detail:
                with run._lock:
                    run.error_detail = outcome.error_detail
                    run.mark(urgent=True)
        else:
            run.fail(outcome.error_message, outcome.error_detail, exit_code=outcome.exit_code)
