"""Process events that end runs: normal exit, uncaught exceptions, SIGTERM/SIGINT, fork.

Installed once, when the first run of a lifecycle-enabled Tracker starts:

* ``atexit``: runs still going become FINISHED; the process waits (bounded by the exit timeout)
  for the final states to be written, or spools them;
* ``sys.excepthook`` / ``threading.excepthook``: runs still going become FAILED with the
  traceback (CANCELLED for KeyboardInterrupt), then the previous hook runs as before;
* SIGTERM / SIGINT (main thread only, and not where the signal is ignored): runs become
  CANCELLED with execution_end and exit code 128+signal, the final state is flushed (bounded),
  then the previous handler runs — Python's KeyboardInterrupt for SIGINT, the script's own
  handler if it installed one, and for a default disposition the signal is re-raised with it
  restored — so the exit status is what it would have been untracked;
* fork: the child forgets the parent's runs and writer.

The signal handler runs in the main thread at whatever bytecode the signal found it, perhaps inside
the tracker's own locked code (``with run._lock:`` in ``advance()``, an observer, the writer's
``wake()``). So it never calls into that code itself. It only records the signal and hands the
cancel-and-flush to the ``pipetrack-signal`` thread (started before the handlers are installed,
signals blocked), lending it the tracker's locks the main thread holds and taking them back
afterwards (``tracker._runtime.handoff``). It waits for that thread, bounded: the exit timeout
(plus a moment to spool what the database did not take in time) for the final states, then the
observers' own bound (telemetry's exit timeout) for the spans. A worker stuck on a lock that is not
the tracker's (logging's, OpenTelemetry's, held by the frozen main thread) only costs that wait;
the process still ends as it would have. Taking the lent locks back is bounded as well; should it
run out, the interrupted code cannot go on and the process takes the signal's default action. A
second signal arriving during the wait is chained after the first.

The other hooks run at points that cannot hold the tracker's locks: atexit after the main
thread's frames are gone, the exception hooks on the failing thread, the fork hook in a child
where every other thread has vanished. The fork hook therefore acquires nothing: a lock another
thread held at the fork is held for ever in the child, so each lock it could need is replaced.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from tracker._runtime import handoff, observers

if TYPE_CHECKING:
    from tracker._runtime.trackers import Tracker

logger = logging.getLogger("tracker")

_installed = False
_install_lock = threading.Lock()
_previous_excepthook: Any = None
_previous_thread_hook: Any = None
_previous_handlers: dict[int, Any] = {}
HANDLED_SIGNALS = ("SIGTERM", "SIGINT")
# Time allowed, after the exit timeout, for spooling the final states the database did not take:
# milliseconds on a machine with CPU to spare, seconds on a starved one. With one second, the
# stress test under a load of 70 on two cores lost 4 final states of 2,000 (the handler gave up
# on a worker still spooling, and the process died of its signal). Only a worker that cannot
# record at all (stuck on a lock not lent) makes an exit this much longer.
SPOOL_MARGIN = 5.0
# The least the handler waits for the observers (a bound, not a delay: they are told at once).
OBSERVERS_MIN_WAIT = 0.5
_worker: handoff.SignalWorker | None = None
_handling = False
_arrived: list[int] = []  # signals that came while one was being handled
# The Trackers that asked for the process hooks (the default one does). A WeakSet: iterating
# it takes no lock, so the signal handler may too.
_participants: weakref.WeakSet[Tracker] = weakref.WeakSet()
# Where the signal worker is, for the handler's message should it give up waiting: one string,
# replaced whole (no lock: the handler reads it).
_worker_step = ["not started"]


def _step(what: str, started: float) -> None:
    _worker_step[0] = f"{what} ({time.monotonic() - started:.1f} s in)"


def install(tracker: Tracker) -> None:
    """Install the hooks for ``tracker`` (idempotent; called at every run start, so cheap once
    done)."""
    # Module state on purpose: hooks are process-wide, installed once.
    global _installed, _previous_excepthook, _previous_thread_hook, _worker  # noqa: PLW0603
    if tracker not in _participants:
        # What the signal worker may need, loaded now, on this thread, before any handler can
        # run: an import on the worker could wait for ever on an import lock held by the
        # main thread the handler froze (a signal landing inside the script's own import).
        tracker._ready_for_signals()
        _participants.add(tracker)
    if _installed and (_worker is not None or not _previous_handlers):
        return
    with _install_lock:
        if _installed:
            # A forked child: the handlers are inherited, the parent's worker thread is not.
            if _previous_handlers and _worker is None:
                _worker = handoff.SignalWorker(_record_signal)
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
            # The worker first: a handler in place always finds it.
            _worker = handoff.SignalWorker(_record_signal)
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


def _trackers() -> list[Tracker]:
    return list(_participants)


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
    # Runs on top of any main-thread code: only lock-free steps here (see the module docstring).
    global _handling  # noqa: PLW0603 - the handler's own state, touched by the handler only
    if _handling:
        _arrived.append(signum)  # a second signal during the wait: chained after the first
        return
    _handling = True
    try:
        restored = _hand_over(signum)
    finally:
        _handling = False
    if not restored:
        # A lock of the interrupted code is still with the worker: that code cannot go on.
        _die_of(signum)
    chain = [signum]
    while _arrived:
        chain.append(_arrived.pop(0))
    for each in chain:
        _chain(each, frame)


def _hand_over(signum: int) -> bool:
    """Have the worker cancel and flush the runs, lending it our locks; wait, bounded.
    False if a lent lock could not be taken back (see tracker._runtime.handoff)."""
    worker = _worker
    trackers = _trackers()
    if worker is None or not worker.alive or not any(_has_work(t) for t in trackers):
        return True
    timeout = max(t.settings.exit_timeout for t in trackers)
    locks = [lock for tracker in trackers for lock in tracker._signal_locks()]
    with handoff.handed_over(locks) as lent:
        token = worker.submit(signum)
        bound = timeout + SPOOL_MARGIN
        if worker.wait(token, handoff.RECORDED, time.monotonic() + bound):
            wait = max(observers.end_timeout(), OBSERVERS_MIN_WAIT)
            worker.wait(token, handoff.DONE, time.monotonic() + wait)
        else:
            _say_unrecorded(signum, bound)
    return lent.restored


def _say_unrecorded(signum: int, bound: float) -> None:
    """A final state lost must not be silent: say so on stderr, with the step the worker was
    at and every thread's stack (what a bug report needs: which lock it waited for). os.write
    and faulthandler, not logging or sys.stderr: the frozen main thread may hold their locks."""
    text = (
        f"pipetrack: signal {signum}: the final state was neither written nor spooled within "
        f"{bound:.1f} s (the signal worker was {_worker_step[0]}); the run stays RUNNING until "
        "the reaper marks it lost. The threads' stacks:\n"
    )
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        os.write(2, text.encode("utf-8", "replace"))
        faulthandler.dump_traceback(2, all_threads=True)


def _has_work(tracker: Any) -> bool:
    """A run still going, or a final state not yet out (read lock-free)."""
    writer = tracker._writer
    return any(not run.terminal for run in tracker._runs) or (writer is not None and writer.busy)


def _record_signal(signum: int) -> Callable[[], None]:
    """On the worker thread: CANCELLED, written or spooled; returns the observers' turn."""
    started = time.monotonic()

    def spooling(what: str) -> None:
        _step(f"spooling: {what}", started)

    _step("cancelling the runs", started)
    name = signal.Signals(signum).name
    trackers = _trackers()
    ended = [run for tracker in trackers for run in tracker._cancel_for_signal(signum, name)]
    if trackers:
        deadline = time.monotonic() + max(t.settings.exit_timeout for t in trackers)
        for tracker in trackers:
            _step("writing the final states", started)
            if not tracker._flush_for_signal(deadline, spooling=spooling):
                _step("spooled", started)
    _step("done recording", started)

    def tell() -> None:
        for run in ended:
            observers.notify("on_run_end", run)

    return tell


def _chain(signum: int, frame: FrameType | None) -> None:
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    # The default disposition: die of the signal, as the process would have without us.
    _die_of(signum)


def _die_of(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _after_fork() -> None:
    # Acquire nothing (see the module docstring): replace what the child may need.
    global _install_lock, _worker, _handling  # noqa: PLW0603 - the child's fresh state
    _install_lock = threading.Lock()
    _worker = None  # its thread is the parent's; install() starts the child's own
    _handling = False
    _arrived.clear()
    for tracker in _trackers():
        tracker._after_fork()
