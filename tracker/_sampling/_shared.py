"""One sampler shared by the threads that sample the same processes: the tracker's writer (at its
cadence and at subtask boundaries) and, under ``pipetrack run``, the wrapper's supervisor (every
second). A sampler keeps per-process state between samples, so they take turns under a lock.
"""

from __future__ import annotations

import threading
import time

from tracker._sampling._sampler import ResourceSample, ResourceSampler
from tracker._sampling._sockets import DatabaseEndpoints

__all__ = ["SharedSampler"]


class SharedSampler:
    """A ResourceSampler behind a lock, attached now or later (a wrapped command's tree is
    sampled from its spawn on, after its run has started)."""

    def __init__(self, sampler: ResourceSampler | None = None) -> None:
        self._lock = threading.Lock()
        self._sampler = sampler
        self._last: ResourceSample | None = None
        self._taken = -float("inf")  # time.monotonic() when the last sample was taken
        self._cost = 0.0  # seconds the last sample took
        self._recent: tuple[float, ResourceSample] | None = None  # recent()'s last, and when

    @property
    def attached(self) -> bool:
        return self._sampler is not None

    def attach(self, sampler: ResourceSampler) -> None:
        with self._lock:
            self._sampler = sampler
            self._last = None

    def set_database(self, endpoints: DatabaseEndpoints) -> None:
        """Which connections count as database connections from now on."""
        with self._lock:
            if self._sampler is not None:
                self._sampler.database = endpoints

    def sample(self, timeout: float = -1) -> ResourceSample | None:
        """A sample taken now; the last one taken when every process of the tree is gone (the
        final figures); None before the first, when none can be taken, or when the lock is not
        had within ``timeout`` seconds (-1: wait as long as it takes).

        On the main thread the lock is taken by ``with`` and waited for as long as another
        thread's sample takes: a signal handler that raises (KeyboardInterrupt, a script's
        sys.exit) can run right after ``acquire`` returns and before any ``try`` begins, and would
        leave the lock held for ever (every later sample of the writer then waited out its
        bound, and the exit its timeout). Only the main thread runs handlers; the others keep the
        bound, which a main thread frozen by a handler while sampling needs."""
        if threading.current_thread() is threading.main_thread():
            with self._lock:
                return self._take()
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            return self._take()
        finally:
            self._lock.release()

    def _take(self) -> ResourceSample | None:
        """The sample (the caller holds the lock)."""
        if self._sampler is None:
            return None
        started = time.monotonic()
        sample = self._sampler.sample()
        self._taken = time.monotonic()
        self._cost = self._taken - started
        if sample is not None:
            self._last = sample
        return self._last

    def recent(self, *, gap: float, share: float, timeout: float) -> ResourceSample | None:
        """A sample taken now, or the one this method gave last if it is younger than ``gap``
        seconds or than a sample's cost divided by ``share``: so that sampling at every call
        costs at most about ``share`` of the caller's time, whatever the tree's size and however
        often it calls. (Only its own are reused: a sample another thread took in between may
        be from the middle of what the caller measures.)"""
        held = self._recent
        if held is not None and time.monotonic() < self.fresh_from(gap=gap, share=share):
            return held[1]
        sample = self.sample(timeout)
        if sample is not None:
            self._recent = (self._taken, sample)
        return sample

    def fresh_from(self, *, gap: float, share: float) -> float:
        """When (``time.monotonic()``) ``recent`` with these arguments takes a new sample."""
        held = self._recent
        return -float("inf") if held is None else held[0] + max(gap, self._cost / share)

    @property
    def last(self) -> ResourceSample | None:
        """The latest sample any thread took (None before the first)."""
        return self._last
