"""Memory and CPU of a wrapped command's whole process tree (the command and its descendants).

A shell script's work happens in the programs it starts, so sampling only the direct child
would report a few megabytes for a job that uses gigabytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["TreeSample", "TreeSampler"]

MB = 1024 * 1024


@dataclass(frozen=True)
class TreeSample:
    memory_mb: int  # resident set size of the tree now
    peak_memory_mb: int  # the largest tree RSS seen so far
    cpu_percent: float  # CPU time the tree used per wall second since the last sample, x100
    processes: int


class TreeSampler:
    """Samples the tree rooted at ``pid``; call ``sample()`` every so often."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._root = pid
        self._known: dict[int, psutil.Process] = {}
        self._cpu_seen: dict[int, float] = {}
        self._last = time.monotonic()
        self._peak = 0

    def _tree(self) -> list[psutil.Process]:
        ps = self._psutil
        try:
            root = self._known.get(self._root) or ps.Process(self._root)
            members = [root, *root.children(recursive=True)]
        except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
            return []
        # Keep the same Process objects across samples: psutil tells a reused pid apart by the
        # creation time it stored.
        current: dict[int, psutil.Process] = {}
        for proc in members:
            known = self._known.get(proc.pid)
            current[proc.pid] = known if known is not None and known == proc else proc
        self._known = current
        return list(current.values())

    def sample(self) -> TreeSample | None:
        """The tree's figures now, or None once the tree is gone."""
        ps = self._psutil
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-6)
        self._last = now
        rss = 0
        cpu_used = 0.0
        alive = 0
        seen: dict[int, float] = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
            alive += 1
            total = times.user + times.system
            seen[proc.pid] = total
            # A process first seen now counts from its start: its whole CPU time is recent
            # enough only if it started within this interval, which we cannot tell cheaply, so
            # it counts from the next sample.
            if proc.pid in self._cpu_seen:
                cpu_used += max(total - self._cpu_seen[proc.pid], 0.0)
        self._cpu_seen = seen
        if not alive:
            return None
        memory_mb = round(rss / MB)
        self._peak = max(self._peak, memory_mb)
        return TreeSample(
            memory_mb=memory_mb,
            peak_memory_mb=self._peak,
            cpu_percent=round(100.0 * cpu_used / elapsed, 2),
            processes=alive,
        )
