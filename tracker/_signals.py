"""Keeping SIGTERM and SIGINT for the main thread.

CPython runs signal handlers in the main thread, but the kernel delivers a process-directed
signal to any thread that does not block it. If a background thread of ours takes SIGTERM, a
main thread blocked in a system call (reading stdin, waiting on a socket) is never interrupted,
so the handler that marks the run CANCELLED and ends the process never runs. Threads started
inside ``signals_blocked()`` inherit a mask that leaves these signals to the main thread.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_KEPT_FOR_MAIN = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block the termination signals in this thread while the body starts threads."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no per-thread masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _KEPT_FOR_MAIN)
    try:
        yield
    finally:
        # Restoring delivers any signal that arrived meanwhile, to this thread.
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
