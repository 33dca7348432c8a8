"""The original design's API, working: ``track_*`` functions and ``genter``/``gexit``/``gmessage``.

They act on the default Tracker's current run. Parameter names of the original sketch are
accepted too (``script_name``, ``total_tasks``, ``category``; ``current_task``, ``task_*`` in
``track_status``), so code written against it runs. Messages of ``genter``, ``gmessage``,
``track_task_progress`` and ``track_finish`` take ``{name}`` fields from the caller's variables, as
R's glue did. None of these functions raises into the caller except in strict mode.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable
from threading import get_ident
from typing import Any, TypeVar

from tracker._model.checks import IGNORE, RUN_STATUSES, SUBTASK_STATUSES, Checker
from tracker._model.terminal import printable
from tracker._model.text import InterpolationError, interpolate
from tracker._runtime import observers, trackers
from tracker._runtime.run import Run
from tracker._runtime.subtask import Subtask
from tracker._runtime.trackers import Tracker, default_tracker
from tracker.errors import InvalidValue, NoActiveRun, SubtaskOrderError, TrackerError

logger = logging.getLogger("tracker")

F = TypeVar("F", bound=Callable[..., Any])


def _safe(function: F) -> F:
    """Tracking never breaks the pipeline: an unexpected error is logged, not raised (strict
    mode's TrackerErrors are raised, as asked)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except TrackerError:
            raise
        except Exception:
            logger.exception("pipetrack: %s failed; the pipeline continues", function.__name__)
            return None

    return wrapper  # type: ignore[return-value]


def _text(checker: Checker, template: object, argument: str, depth: int = 2) -> str | None:
    """``template`` interpolated in the scope of the user's caller (``depth`` frames up)."""
    if template is None:
        return None
    text = checker.text(template, argument)
    if not isinstance(text, str):
        return None
    if "{" not in text and "}" not in text:
        return text
    try:
        return interpolate(text, sys._getframe(depth + 1))
    except InterpolationError as exc:
        checker.problem(
            InvalidValue(f"{exc}; kept as written", argument=argument, value=text),
            f"{argument}:interpolation",
        )
        return text


def _console(tracker: Tracker, depth: int, marker: str, text: str) -> None:
    if not tracker.settings.console:
        return
    stamp = time.strftime("%H:%M:%S")
    # A closed or broken stderr must not break the pipeline.
    with contextlib.suppress(OSError, ValueError):
        line = f"[{stamp}] {'  ' * depth}{marker}{printable(text)}"
        print(line, file=sys.stderr, flush=True)


def _run_or_problem(tracker: Tracker, action: str) -> Run | None:
    run = tracker.active_run(start=False)
    if run is None:
        tracker.checker.problem(
            NoActiveRun(f"{action}: no run is being tracked (call track_init() or genter() first)"),
            f"norun:{action}",
        )
    return run


# -- the track_* functions -------------------------------------------------------------------
@_safe
def track_init(
    task_name: str | None = None,
    total_subtasks: int | None = None,
    stage: str | None = None,
    *,
    task_type: str | None = None,
    log_path: str | None = None,
    parent_run_id: str | None = None,
    script_name: str | None = None,
    total_tasks: int | None = None,
    category: str | None = None,
) -> str:
    """Start tracking a run; returns its run_id. ``script_name``/``total_tasks``/``category``
    are the original design's names for ``task_name``/``total_subtasks``/``stage``."""
    run = default_tracker().run(
        task_name if task_name is not None else script_name,
        total_subtasks if total_subtasks is not None else total_tasks,
        stage if stage is not None else category,
        task_type=task_type,
        log_path=log_path,
        parent_run_id=parent_run_id,
    )
    return run.run_id


_ALIASES = {
    "current_task": "current_subtask",
    "task_name": "subtask_name",
    "task_status": "subtask_status",
    "task_percent": "subtask_percent",
    "task_message": "subtask_message",
    "task_items_total": "subtask_items_total",
    "task_items_complete": "subtask_items_complete",
}


@_safe
def track_status(  # noqa: PLR0917 - the original design's positional signature
    status: str = "RUNNING",
    current_subtask: int | None = None,
    subtask_name: str | None = None,
    subtask_status: str | None = None,
    overall_percent: float | None = None,
    overall_message: str | None = None,
    subtask_percent: float | None = None,
    subtask_message: str | None = None,
    subtask_items_total: int | None = None,
    subtask_items_complete: int | None = None,
    **original_names: Any,
) -> None:
    """Update the current run, as the original design's ``track_status`` (see module doc)."""
    tracker = default_tracker()
    fields: dict[str, Any] = {
        "current_subtask": current_subtask,
        "subtask_name": subtask_name,
        "subtask_status": subtask_status,
        "subtask_percent": subtask_percent,
        "subtask_message": subtask_message,
        "subtask_items_total": subtask_items_total,
        "subtask_items_complete": subtask_items_complete,
    }
    for name, value in original_names.items():
        if name not in _ALIASES:
            raise TypeError(f"track_status() got an unexpected keyword argument {name!r}")
        if fields[_ALIASES[name]] is None:
            fields[_ALIASES[name]] = value
    run = _run_or_problem(tracker, "track_status")
    if run is None:
        return
    checker = run._checker
    checked = checker.status(status, RUN_STATUSES, "status")
    if run.terminal:
        run._closed("update its status")
        return
    _apply_subtask_fields(run, fields)
    if overall_percent is not None or overall_message is not None:
        run.set_progress(overall_percent, message=overall_message)
    if checked == "FINISHED":
        run.finish()
    elif checked == "FAILED":
        run.fail(overall_message or subtask_message or "FAILED")
    elif checked == "CANCELLED":
        run.cancel(overall_message or subtask_message)
    elif checked == "RUNNING":
        with run._lock:
            run.begin_work()
        run._wake_if_urgent()


def _apply_subtask_fields(run: Run, fields: dict[str, Any]) -> None:
    checker = run._checker
    target = run.innermost_subtask()
    new_status = (
        checker.status(fields["subtask_status"], SUBTASK_STATUSES, "subtask_status")
        if fields["subtask_status"] is not None
        else IGNORE
    )
    number = (
        checker.count(fields["current_subtask"], "current_subtask")
        if fields["current_subtask"] is not None
        else IGNORE
    )
    name = (
        checker.text(fields["subtask_name"], "subtask_name")
        if fields["subtask_name"] is not None
        else IGNORE
    )
    # What lenient mode ignored counts as not given.
    fields["subtask_status"] = new_status if isinstance(new_status, str) else None
    fields["current_subtask"] = number if isinstance(number, int) else None
    fields["subtask_name"] = name if isinstance(name, str) else None
    slot: Subtask = target if target is not None else run.implicit
    if any(
        fields[k] is not None
        for k in (
            "subtask_items_total",
            "subtask_items_complete",
            "subtask_percent",
            "subtask_message",
        )
    ):
        slot.update(
            fields["subtask_items_complete"],
            total=fields["subtask_items_total"],
            percent=fields["subtask_percent"],
            message=fields["subtask_message"],
        )
    with run._lock:
        if isinstance(name, str):
            slot.name = name
            run.mark()
        if target is None and (isinstance(number, int) or slot is run.implicit):
            # No genter() subtask: the caller numbers subtasks itself ("manual" mode).
            touched = any(v is not None for v in fields.values())
            if touched:
                run.implicit_active = True
                run.shown = run.implicit
                run.begin_work()
            if isinstance(new_status, str):
                run.implicit.status = new_status
            if isinstance(number, int):
                completed = new_status == "COMPLETED"
                run.done_units = number if completed else max(number - 1, 0)
                run.implicit_active = not completed
                run.current_override = number
            elif new_status == "COMPLETED" and touched:
                run.implicit_active = False
            if touched:
                run.mark(urgent=isinstance(number, int) or isinstance(new_status, str), moved=True)
        elif target is not None and isinstance(number, int):
            run.current_override = number
            run.mark()
    if target is not None and new_status in ("COMPLETED", "FAILED"):
        target.close(str(new_status))
    run._wake_if_urgent()


def track_task_progress(
    items_complete: int, items_total: int | None = None, message: str | None = None
) -> None:
    """Items done in the current subtask (or the run, when no subtask is open)."""
    # Called at loop speed: when the newest run is running with a subtask open in this thread
    # and the message needs no interpolation, go straight to the subtask.
    tracker = trackers._default
    if tracker is not None and (
        message is None or (message.__class__ is str and "{" not in message)
    ):
        runs = tracker._runs
        if runs and runs[-1].status == "RUNNING":
            run = runs[-1]
            stack = run.stacks.get(get_ident()) or run.stacks.get(run.owner_thread)
            try:
                sub = stack[-1] if stack else None
            except IndexError:  # another thread closed it meanwhile
                sub = None
            if isinstance(sub, Subtask):
                try:
                    sub._update(items_complete, items_total, None, message)
                except TrackerError:
                    raise
                except Exception:
                    logger.exception(
                        "pipetrack: track_task_progress failed; the pipeline continues"
                    )
                return
    _track_task_progress(items_complete, items_total, message)


@_safe
def _track_task_progress(items_complete: int, items_total: int | None, message: str | None) -> None:
    tracker = default_tracker()
    run = _run_or_problem(tracker, "track_task_progress")
    if run is None:
        return
    text = _text(run._checker, message, "message", depth=3)
    target = run.innermost_subtask()
    if target is not None:
        target.update(items_complete, total=items_total, message=text)
        return
    if run.terminal:
        run._closed("report progress")
        return
    run.implicit.update(items_complete, total=items_total, message=text)
    with run._lock:
        run.show_implicit()


@_safe
def track_finish(message: str | None = "Script completed successfully") -> None:
    """End the current run as FINISHED (overall 100 %). A second call is a warned no-op."""
    tracker = default_tracker()
    run = _run_or_problem(tracker, "track_finish")
    if run is None:
        return
    run.finish(_text(run._checker, message, "message"))


@_safe
def track_error(error_msg: str | BaseException, error_detail: str | None = None) -> None:
    """End the current run as FAILED with ``error_msg`` (an exception records its traceback)."""
    tracker = default_tracker()
    run = _run_or_problem(tracker, "track_error")
    if run is None:
        return
    run.fail(error_msg, error_detail)


# -- genter / gexit / gmessage ---------------------------------------------------------------
@_safe
def genter(message: str) -> None:
    """Enter a subtask named ``message`` ({name} fields filled from the caller's variables).
    The first call starts a run named after the script if none is going; calls nest."""
    tracker = default_tracker()
    text = _text(tracker.checker, message, "message") or ""
    run = tracker.active_run(start=True)
    if run is None:
        return
    if run.terminal:
        run._closed("genter")
        return
    sub = run.subtask(text)
    _console(tracker, _depth(run, sub) - 1, "> ", text)


@_safe
def gexit() -> None:
    """Leave the innermost subtask entered by ``genter`` in this thread."""
    tracker = default_tracker()
    run = tracker.active_run(start=False)
    sub = run.innermost_subtask() if run is not None and not run.terminal else None
    if run is not None and run.terminal:
        run._closed("gexit")
        return
    if sub is None:
        tracker.checker.problem(
            SubtaskOrderError(
                "gexit() without a matching genter()", run_id=run.run_id if run else None
            ),
            "gexit:unmatched",
        )
        return
    depth = _depth(run, sub) - 1 if run is not None else 0
    sub.close()
    elapsed = (sub.ended or 0.0) - sub.started
    _console(tracker, depth, "< ", f"{sub.name} ({elapsed:.1f} s)")


@_safe
def gmessage(message: str) -> None:
    """Print ``message`` and record it as the current subtask's (or run's) progress message."""
    tracker = default_tracker()
    text = _text(tracker.checker, message, "message")
    if text is None:
        return
    run = tracker.active_run(start=False)
    depth = 0
    if run is not None:
        if run.terminal:
            run._closed("gmessage")
        else:
            sub = run.innermost_subtask()
            if sub is not None:
                sub.update(message=text)
                depth = _depth(run, sub)
            else:
                with run._lock:
                    run.overall_message = text
                    run.begin_work()
                    run.mark()
            observers.notify("on_message", run, text)
    _console(tracker, depth, "", text)


@_safe
def gcount(name: str, n: int = 1) -> None:
    """Add ``n`` to the work count ``name`` of the innermost ``genter`` subtask, and so of the
    run (of the run alone outside any subtask): ``gcount("rows_written", nrow(df))``."""
    tracker = default_tracker()
    run = _run_or_problem(tracker, "gcount")
    if run is None:
        return
    (run.innermost_subtask() or run).count(name, n)


def _depth(run: Run | None, sub: Subtask) -> int:
    if run is None:
        return 0
    with run._lock:
        stack = run.stacks.get(sub.thread, [])
        return stack.index(sub) + 1 if sub in stack else len(stack) + 1
