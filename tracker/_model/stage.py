"""The stage a task belongs to, from its name's prefix (``DAILY_01_x`` → ``DAILY``)."""

from __future__ import annotations

# Longest first, so ANNUAL_DEC_ wins over a shorter prefix that might be added later.
STAGE_PREFIXES = (
    "ANNUAL_SEPT",
    "ANNUAL_JUNE",
    "ANNUAL_DEC",
    "PERIODIC",
    "STATIC",
    "PREREQ",
    "DAILY",
)
UNKNOWN_STAGE = "UNKNOWN"


def stage_of(task_name: str) -> str:
    """The stage named by ``task_name``'s prefix, or UNKNOWN. Case-insensitive."""
    upper = task_name.upper()
    for stage in STAGE_PREFIXES:
        if upper.startswith(stage + "_"):
            return stage
    return UNKNOWN_STAGE
