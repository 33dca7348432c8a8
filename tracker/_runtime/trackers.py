"""``Tracker``: the runs of a process, their settings and their writer; and the default one.

The module-level API (``tracker.run``, ``genter`` …) acts on the default Tracker, created on
first use from the environment (or by ``configure``). Other Trackers are for code that wants its
own settings or database (tests, libraries); they share nothing but the process's exit hooks.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from tracker import _env
from tracker._model.checks import IGNORE, Checker
from tracker._model.stage import stage_of
from tracker._record.writer import Writer
from tracker._runtime import observers
from tracker._runtime.run import Run
from tracker._settings import TrackerSettings
from tracker.errors import ConfigurationError, InvalidValue

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_PRUNE_MIN = 16
# Every Tracker alive in this process, for the exit/exception/signal hooks and live_runs().
_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


class Tracker:
    """The runs this process tracks with one set of settings, written by one writer thread.

    Arguments default to ``None`` and then fall back to the ``PIPETRACK_*`` variables (see
    ``tracker._env``), read when the Tracker is created. ``lifecycle=False`` leaves the process's
    exit, exception and signal hooks alone (the default Tracker installs them).
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        strict: bool | None = None,
        flush_interval: float | None = None,
        heartbeat_interval: float | None = None,
        exit_timeout: float | None = None,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int | None = None,
        env_allowlist: Sequence[str] | None = None,
        log_path: str | None = None,
        console: bool | None = None,
        prepare: bool | None = None,
        idle_close: float | None = None,
        lifecycle: bool = True,
    ) -> None:
        self.settings = TrackerSettings(
            dsn=dsn,
            strict=strict,
            flush_interval=flush_interval,
            heartbeat_interval=heartbeat_interval,
            exit_timeout=exit_timeout,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            env_allowlist=env_allowlist,
            log_path=log_path,
            console=console,
            prepare=prepare,
            idle_close=idle_close,
        )
        self.checker = Checker(strict=self.settings.strict)
        self._lifecycle = lifecycle
        self._lock = threading.RLock()
        self._runs: list[Run] = []
        self._prune_at = _PRUNE_MIN
        self._writer: Writer | None = None
        self._closed = False
        _trackers.add(self)

    @property
    def strict(self) -> bool:
        return self.settings.strict

    @property
    def writer(self) -> Writer:
        with self._lock:
            if self._writer is None:
                self._writer = Writer(self.settings)
            return self._writer

    # -- runs -------------------------------------------------------------------------------
    def run(
        self,
        task_name: str | None = None,
        total_subtasks: int | None = None,
        stage: str | None = None,
        *,
        task_type: str | None = None,
        log_path: str | None = None,
        parent_run_id: str | None = None,
    ) -> Run:
        """Start a run (STARTED) and make it the current one. Use it as a context manager."""
        from tracker._runtime import context

        checker = self.checker
        name = self._task_name(task_name)
        total = (
            checker.count(total_subtasks, "total_subtasks") if total_subtasks is not None else None
        )
        stage_text = checker.text(stage, "stage") if stage is not None else IGNORE
        stage_value = str(stage_text) if isinstance(stage_text, str) and stage_text else None
        type_text = checker.text(task_type, "task_type") if task_type is not None else IGNORE
        with self._lock:
            current = self.current_run()
            parent = self._parent(parent_run_id, current)
        captured = context.capture(
            log_path=log_path if log_path is not None else self.settings.log_path,
            allowlist=self.settings.env_allowlist,
            task_type=str(type_text) if isinstance(type_text, str) else None,
        )
        captured["parent_run_id"] = parent
        run_id = str(uuid.uuid4())
        run = Run(
            self,
            checker=Checker(strict=self.settings.strict, run_id=run_id),
            run_id=run_id,
            task_name=name,
            task_stage=stage_value or stage_of(name),
            total_subtasks=total if isinstance(total, int) else None,
            context=captured,
            max_pending=self.settings.max_pending,
        )
        with self._lock:
            # Ended runs are of no use as "current": drop them, but only once they may be half
            # the list, so that starting n runs costs O(n), not O(n^2).
            runs = self._runs
            if len(runs) >= self._prune_at:
                runs = [r for r in runs if not r.terminal]
                self._prune_at = max(2 * len(runs), _PRUNE_MIN)
            self._runs = [*runs, run]
        if self._lifecycle:
            # Loaded with the first run, not with `import tracker`: signal handling costs
            # a few milliseconds of imports a script that only imports the module never uses.
            from tracker._runtime import lifecycle

            lifecycle.install(self)
        observers.notify("on_run_start", run)
        self.writer.register(run)
        return run

    def _task_name(self, task_name: object) -> str:
        from tracker._runtime.context import default_task_name

        if task_name is None:
            return default_task_name()
        text = self.checker.text(task_name, "task_name")
        if isinstance(text, str) and text.strip():
            return text
        self.checker.problem(
            InvalidValue(
                f"task_name {task_name!r} is empty; using the script's name",
                argument="task_name",
                value=task_name,
            ),
            "task_name:empty",
        )
        return default_task_name()

    def _parent(self, explicit: str | None, current: Run | None) -> str | None:
        if explicit is not None:
            try:
                return str(uuid.UUID(str(explicit)))
            except ValueError:
                self.checker.problem(
                    InvalidValue(
                        f"parent_run_id {explicit!r} is not a UUID; ignored",
                        argument="parent_run_id",
                        value=explicit,
                    ),
                    "parent_run_id",
                )
                return None
        if current is not None and not current.terminal:
            return current.run_id
        inherited = os.environ.get(_env.PIPETRACK_RUN_ID)
        if inherited:
            try:
                return str(uuid.UUID(inherited))
            except ValueError:
                self.checker.warn(
                    f"ignoring {_env.PIPETRACK_RUN_ID}={inherited!r}: not a UUID", "env:run_id"
                )
        return None

    def current_run(self) -> Run | None:
        """The newest run still going; else the newest that ended (so late calls are caught)."""
        # Lock-free: _runs is replaced, never mutated, so this reads a consistent list.
        runs = self._runs
        for run in reversed(runs):
            if not run.terminal:
                return run
        return runs[-1] if runs else None

    def active_run(self, *, start: bool) -> Run | None:
        """The current run (possibly ended); with ``start``, a new one named after the script
        when there is none (what the first ``genter`` does)."""
        if not start:
            return self.current_run()
        with self._lock:
            run = self.current_run()
            # An ended run stays current, so that late calls are reported, not silently
            # recorded in a new run.
            if run is not None or not start:
                return run
            return self.run()

    def runs(self) -> list[Run]:
        with self._lock:
            return list(self._runs)

    def _forget(self, run: Run) -> None:
        with self._lock:
            self._runs = [r for r in self._runs if r is not run]

    # -- conveniences -----------------------------------------------------------------------
    def progress(
        self, iterable: Iterable[T], desc: str | None = None, *, total: int | None = None
    ) -> Iterator[T]:
        """``for x in tracker.progress(xs, "Processing")``: a subtask counting items as they pass.

        Starts a run named after the script if none is going.
        """
        run = self.active_run(start=True)
        if run is None:  # active_run(start=True) always returns a run
            raise RuntimeError("no run")
        return run.progress(iterable, desc, total=total)

    @overload
    def track(self, name: F) -> F: ...

    @overload
    def track(
        self, name: str | None = None, *, total_subtasks: int | None = None
    ) -> Callable[[F], F]: ...

    def track(
        self, name: str | Callable[..., Any] | None = None, *, total_subtasks: int | None = None
    ) -> Any:
        """Decorator: each call of the function is a run when no run is going (named ``name``,
        else after the script), else a subtask of the current run (named ``name``, else after the
        function). ``@track`` and ``@track("name")`` both work."""
        if callable(name):
            return self.track()(name)
        label = name

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                current = self.active_run(start=False)
                if current is None or current.terminal:
                    with self.run(label, total_subtasks=total_subtasks):
                        return function(*args, **kwargs)
                with current.subtask(label or function.__name__):
                    return function(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    # -- writer -----------------------------------------------------------------------------
    def _wake(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.wake()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every change so far is written (or spooled); False if not in time."""
        writer = self._writer
        return True if writer is None else writer.force_flush(timeout)

    def shutdown(self, timeout: float | None = None, *, finish: bool = True) -> bool:
        """End the runs still going as FINISHED (unless ``finish=False``), write their final
        state within ``timeout`` (default: the exit timeout), stop the writer. Idempotent."""
        if finish:
            for run in self.runs():
                if not run.terminal:
                    run.finish()
        with self._lock:
            self._closed = True
            writer = self._writer
        return True if writer is None else writer.shutdown(timeout)

    # -- process events (called by tracker._runtime.lifecycle) -----------------------------
    def _ready_for_signals(self) -> None:
        """Load what cancelling and spooling from the signal worker needs (see lifecycle)."""
        self.writer.delivery.prepare()

    def _on_exception(self, exc: BaseException, where: str = "") -> None:
        for run in self.runs():
            if not run.terminal:
                run.end_from_exception(exc)
                if where:
                    with run._lock:
                        run.error_detail = f"{run.error_detail or ''}\n(in {where})".lstrip()
                        run.mark(urgent=True)
        self._wake()

    # The signal path (tracker._runtime.lifecycle): these run on the signal worker thread, while the
    # main thread is frozen in the handler, having lent it the locks of _signal_locks().
    def _signal_locks(self) -> list[object]:
        """Every lock cancelling and flushing this Tracker's runs may take, in nesting order;
        lock-free (the signal handler calls it on top of whatever the main thread was doing)."""
        runs = self._runs  # replaced, never changed in place
        writer = self._writer
        if writer is None:
            return [self._lock, *(run._lock for run in runs)]
        return [self._lock, *writer.signal_locks(list(runs))]

    def _cancel_for_signal(self, signum: int, name: str) -> list[Run]:
        """CANCELLED with execution_end and exit code 128+signal for every run still going,
        handed to the writer; returns them (their observers are told later)."""
        ended = [
            run
            for run in self.runs()
            if run._cancel_quietly(f"{name} received", exit_code=128 + signum)
        ]
        if ended:
            writer = self.writer
            for run in ended:
                # Idempotent; covers a run the main thread had not registered yet.
                writer.register(run)
        return ended

    def _flush_for_signal(
        self, deadline: float, spooling: Callable[[str], None] | None = None
    ) -> bool:
        """Write the final states by ``deadline``; else spool them (the process is ending),
        telling ``spooling`` each step."""
        writer = self._writer
        if writer is None:
            return True
        if writer.force_flush(max(deadline - time.monotonic(), 0.0)):
            return True
        writer.spool_unwritten(say=spooling)
        return False

    def _after_fork(self) -> None:
        # The child has no writer thread and must not write the parent's runs. A lock another
        # thread held at the fork stays held in the child forever: new ones, never acquired.
        self._lock = threading.RLock()
        self.checker = Checker(strict=self.settings.strict)
        self._runs = []
        self._writer = None


# -- the default Tracker ---------------------------------------------------------------------
_default: Tracker | None = None
_default_lock = threading.Lock()


def default_tracker() -> Tracker:
    """The Tracker the module-level API uses, created from the environment on first use."""
    global _default  # noqa: PLW0603 - see configure
    tracker = _default
    if tracker is not None:
        return tracker
    with _default_lock:
        if _default is None:
            _default = Tracker()
        return _default


def configure(**settings: Any) -> Tracker:
    """Settings for the module-level API (``dsn``, ``strict``, ``flush_interval`` … as for
    ``Tracker``), before its first run. Raises ConfigurationError after it."""
    global _default  # noqa: PLW0603 - the module-level API's one Tracker
    with _default_lock:
        if _default is not None and _default.runs():
            raise ConfigurationError("configure() must be called before the first run starts")
        _default = Tracker(**settings)
        return _default


def set_default(tracker: Tracker | None) -> Tracker | None:
    """Swap the default Tracker (for tests); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, tracker
        return previous


def current_run() -> Run | None:
    """The run the module-level functions act on (None before any run starts)."""
    return default_tracker().current_run()


def live_runs() -> list[Run]:
    """Every run still going in this process, across Trackers (for telemetry gauges)."""
    return [run for tracker in list(_trackers) for run in tracker.runs() if not run.terminal]


def all_trackers() -> list[Tracker]:
    return list(_trackers)


def _after_fork_in_child() -> None:
    # A thread of the parent may have held it at the fork: held forever in the child.
    global _default_lock  # noqa: PLW0603 - replaced, never acquired, in the child
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
