"""Durations as people write them in flags and task files: ``30d``, ``1h30m``, ``90s``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

from tracker.errors import ConfigurationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"^(?:\d+[smhdw])+$")


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """``text`` as a timedelta; ConfigurationError naming ``what`` if it is not one."""
    compact = text.strip().lower().replace(" ", "")
    if not _WHOLE.match(compact):
        raise ConfigurationError(
            f"{what}: {text!r} is not a duration (use e.g. 90s, 15m, 3h, 30d, 2w, 1h30m)"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration, largest units first (``1h30m``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
