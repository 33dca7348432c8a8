"""Memory and CPU of this process, sampled on the writer thread at heartbeats and at the end.

psutil is imported here, lazily, so ``import tracker`` stays cheap. Peak RSS comes from
``getrusage`` (the kernel's high-water mark) where available, else the largest sample seen.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("tracker")

MIB = 1024 * 1024


class ResourceSampler:
    """Samples RSS, peak RSS and CPU percent (psutil's per-process figure, >100 on many cores)."""

    def __init__(self) -> None:
        self._process: Any = None
        self._peak_bytes = 0
        self._broken = False

    def sample(self) -> tuple[int | None, int | None, float | None]:
        """(memory_mb, peak_memory_mb, cpu_percent), each None if it cannot be read."""
        if self._broken:
            return None, None, None
        try:
            if self._process is None:
                import psutil

                self._process = psutil.Process()
                # The first cpu_percent() call only starts the measurement; it returns 0.0.
                self._process.cpu_percent(None)
            rss = int(self._process.memory_info().rss)
            cpu = float(self._process.cpu_percent(None))
        except Exception:  # psutil missing or the platform refuses: resources are best effort
            logger.debug("cannot sample process resources", exc_info=True)
            self._broken = True
            return None, None, None
        self._peak_bytes = max(self._peak_bytes, rss, _rusage_peak_bytes())
        return rss // MIB, self._peak_bytes // MIB, round(max(cpu, 0.0), 2)


def _rusage_peak_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
