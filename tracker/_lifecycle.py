"""Process events that end runs: normal exit, uncaught exceptions, SIGTERM/SIGINT, fork.

Installed once, when the first run of a lifecycle-enabled Tracker starts:

* ``atexit``: runs still going become FINISHED; the process waits (bounded by the exit timeout)
  for the final states to be written, or spools them;
* ``sys.excepthook`` / ``threading.excepthook``: runs still going become FAILED with the
  traceback (CANCELLED for KeyboardInterrupt), then the previous hook runs as before;
* SIGTERM / SIGINT (main thread only, and not where the signal is ignored): runs become
  CANCELLED with execution_end and exit code 128+signal, the final state is flushed (bounded),
  then the previous handler runs — Python's KeyboardInterrupt for SIGINT, and for a default
  disposition the signal is re-raised with it restored, so the exit status is what it would
  have been;
* fork: the child forgets the parent's runs and writer.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger("tracker")

_installed = False
_install_lock = threading.Lock()
_previous_excepthook: Any = None
_previous_thread_hook: Any = None
_previous_handlers: dict[int, Any] = {}
HANDLED_SIGNALS = ("SIGTERM", "SIGINT")


def install() -> None:
    """Install the hooks (idempotent)."""
    # Module state on purpose: hooks are process-wide, installed once.
    global _installed, _previous_excepthook, _previous_thread_hook  # noqa: PLW0603
    with _install_lock:
        if _installed:
            return
        _installed = True
        atexit.register(_at_exit)
        _previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
        _previous_thread_hook = threading.excepthook
        threading.excepthook = _thread_excepthook
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork)
        if threading.current_thread() is threading.main_thread():
            for name in HANDLED_SIGNALS:
                _install_signal(name)
        else:
            logger.debug("runs started off the main thread: signal handlers not installed")


def _install_signal(name: str) -> None:
    signum = getattr(signal, name, None)
    if signum is None:
        return
    previous = signal.getsignal(signum)
    if previous in (signal.SIG_IGN, None):
        # Ignored on purpose (nohup, a supervisor), or set from outside Python: leave it.
        return
    _previous_handlers[signum] = previous
    signal.signal(signum, _on_signal)


def _trackers() -> list[Any]:
    from tracker._tracker import all_trackers

    # Only Trackers that asked for the process hooks (the default one does).
    return [t for t in all_trackers() if t._lifecycle]


def _at_exit() -> None:
    for tracker in _trackers():
        try:
            tracker.shutdown()
        except Exception:
            logger.exception("pipetrack could not record the end of its runs at exit")


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    try:
        if exc is not None and exc.__traceback__ is None and tb is not None:
            exc = exc.with_traceback(tb)
        for tracker in _trackers():
            tracker._on_exception(exc)
    except Exception:
        logger.exception("pipetrack could not record the uncaught exception")
    hook = _previous_excepthook or sys.__excepthook__
    hook(exc_type, exc, tb)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    try:
        if args.exc_value is not None:
            where = f"thread {args.thread.name}" if args.thread is not None else "a thread"
            for tracker in _trackers():
                tracker._on_exception(args.exc_value, where)
    except Exception:
        logger.exception("pipetrack could not record the uncaught exception in a thread")
    hook = _previous_thread_hook or threading.__excepthook__
    hook(args)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    try:
        for tracker in _trackers():
            tracker._on_signal(signum, name)
    except Exception:
        logger.exception("pipetrack could not record %s", name)
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    # The default disposition: die of the signal, as the process would have without us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _after_fork() -> None:
    for tracker in _trackers():
        tracker._after_fork()
