"""What a signal handler may do safely: hand its work to a thread and lend it the locks it holds.

CPython runs a Python signal handler in the main thread between two bytecodes, so the handler
may find the main thread anywhere: inside ``with run._lock:`` in ``advance()``, inside the
writer's ``wake()``, inside an observer. Whatever the handler calls must therefore not wait for
a lock the main thread may hold at that moment; it would wait for itself, forever.

So the handler does not cancel runs itself. It puts a request on a ``queue.SimpleQueue``
(reentrant by design: safe to call from a signal handler, even one that interrupted another
``put``), and a dedicated thread (``pipetrack-signal``, started with the signals blocked) does
the cancel-and-flush. While that thread works, the main thread is frozen where it was
interrupted, possibly holding locks the worker needs. ``handed_over`` lends them: every
reentrant lock in the given list that the main thread owns is released in full (as
``threading.Condition.wait`` does) for the duration of the wait, and taken back, with its
recursion count, before the handler returns. The worker then finds the run's state as the
interrupted code left it; the state stays readable and every step the worker takes
(ending open subtasks, taking a snapshot) tolerates an update half done, as the old handler,
which ran on top of the same frozen code, had to.

A lent lock must never be held by a thread that waits for a lock the frozen main thread keeps:
the main thread could then never take its lock back. So only the tracker's own locks are lent
(RLocks, so that their owner can be told), whose critical sections call nothing that waits
(logging aside). Telemetry's are not: they are held around OpenTelemetry calls, whose own locks
the main thread may hold (a signal landing inside ``add_event`` did just that). A worker that
needs a lock not lent waits in vain, and the handler's wait is bounded for that reason; taking
the lent locks back is bounded too (``RESTORE_TIMEOUT``): if that runs out, ``handed_over``
says so, the interrupted code cannot safely go on, and the process takes the signal's default
action.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tracker._signals import signals_blocked

logger = logging.getLogger("tracker")

# Steps of one request the handler waits for, in order.
RECORDED = "recorded"  # final states written or spooled
DONE = "done"  # observers told as well


# How long taking a lent lock back may wait (its borrower holds it only for a moment).
RESTORE_TIMEOUT = 5.0


class Lent:
    """What ``handed_over`` yields: ``restored`` is False if a lock could not be taken back."""

    restored = True


@contextlib.contextmanager
def handed_over(locks: Iterable[Any]) -> Iterator[Lent]:
    """Release the RLocks among ``locks`` that this thread owns, for the body; then take them
    back, with their recursion counts, in the same order (the order the tracker takes them in,
    so never against a holder), each within ``RESTORE_TIMEOUT``."""
    lent: list[tuple[Any, int]] = []
    seen: set[int] = set()
    outcome = Lent()
    try:
        for lock in locks:
            if id(lock) in seen or not lock._is_owned():
                continue
            seen.add(id(lock))
            count, _owner = lock._release_save()
            lent.append((lock, count))
        yield outcome
    finally:
        for lock, count in lent:
            if not lock.acquire(timeout=RESTORE_TIMEOUT):
                outcome.restored = False
                continue
            for _ in range(count - 1):
                lock.acquire()  # reentrant: at once


class SignalWorker:
    """A thread serving the signal handler's requests: ``record(signum)`` writes (or spools) the
    final states and returns the next step, telling the observers; the requester can wait for
    either (``RECORDED``, ``DONE``)."""

    def __init__(self, record: Callable[[int], Callable[[], None]]) -> None:
        self._record = record
        self._requests: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._replies: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._tokens = 0
        self._thread = threading.Thread(target=self._loop, name="pipetrack-signal", daemon=True)
        with signals_blocked():  # the signals are for the main thread (see tracker._signals)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, signum: int) -> int:
        """Queue a request (lock-free: called from the signal handler); returns its token."""
        self._tokens += 1
        token = self._tokens
        self._requests.put((token, signum))
        return token

    def wait(self, token: int, step: str, deadline: float) -> bool:
        """Until request ``token`` reports ``step`` (True), or ``deadline`` passes (False)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                got, done = self._replies.get(timeout=remaining)
            except queue.Empty:
                return False
            # Replies to an earlier request whose wait ran out are stale: skip them.
            if got == token and done == step:
                return True

    def _loop(self) -> None:
        while True:
            token, signum = self._requests.get()
            tell: Callable[[], None] | None = None
            try:
                tell = self._record(signum)
            except Exception:  # the thread must outlive any failure
                logger.exception("pipetrack could not record signal %d", signum)
            finally:
                self._replies.put((token, RECORDED))
            try:
                if tell is not None:
                    tell()
            except Exception:
                logger.exception("pipetrack could not tell the observers of signal %d", signum)
            finally:
                self._replies.put((token, DONE))
