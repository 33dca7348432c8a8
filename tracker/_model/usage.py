"""What a run or subtask used of the machine, as the rows hold it: CPU seconds, disk and TCP bytes.

The writer turns its resource samples (``tracker._sampling``) into these figures
(``tracker._record.measure``); each field is named after its column, so the declared columns
read them as ``usage.<column>``. None where the platform or the process does not say.
"""

from __future__ import annotations

from typing import NamedTuple


class Usage(NamedTuple):
    """Cumulative figures, counted from some starting point (a run's start, a subtask's)."""

    cpu_seconds: float | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    tcp_received_bytes: int | None = None
    tcp_sent_bytes: int | None = None

    def since(self, start: Usage) -> Usage:
        """What was used between ``start`` and these figures; never negative, None where either
        is unknown. A field unknown at the start (a counter not readable yet) counts whole."""
        return Usage(
            None if self.cpu_seconds is None else _cpu(self.cpu_seconds - (start.cpu_seconds or 0)),
            _bytes(self.disk_read_bytes, start.disk_read_bytes),
            _bytes(self.disk_write_bytes, start.disk_write_bytes),
            _bytes(self.tcp_received_bytes, start.tcp_received_bytes),
            _bytes(self.tcp_sent_bytes, start.tcp_sent_bytes),
        )


NO_USAGE = Usage()
"""Nothing measured (yet)."""


def _cpu(seconds: float) -> float:
    return round(max(seconds, 0.0), 3)


def _bytes(now: int | None, start: int | None) -> int | None:
    if now is None:
        return None
    return max(now - (start or 0), 0)
