"""Text the tracker stores: column widths, sanitizing (NUL, surrogates, length), interpolation.

PostgreSQL rejects NUL bytes and unpaired surrogates, and a value longer than its VARCHAR fails
the whole statement; the original design lost the status in those cases. Every value therefore
passes through ``clean`` on the writer thread, which always returns something storable.
"""

from __future__ import annotations

import builtins
import re
from collections import ChainMap
from collections.abc import Mapping
from types import FrameType

TRUNCATED = "…[truncated]"
"""Appended to a value cut to fit its column, so a reader sees it was cut."""

TEXT_MAX = 65_536
"""Characters kept of a TEXT value (messages, error details): a 1 MB message is a mistake, and
every heartbeat would carry it again."""

# VARCHAR widths of sql/0001 and sql/0002, in characters.
WIDTHS: Mapping[str, int] = {
    "task_name": 255,
    "task_stage": 50,
    "task_type": 10,
    "hostname": 255,
    "user_name": 100,
    "script_path": 500,
    "script_file": 255,
    "log_path": 500,
    "log_file": 255,
    "subtask_name": 500,
    "git_commit": 64,
}

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(value: str, limit: int = TEXT_MAX) -> tuple[str, tuple[str, ...]]:
    """``value`` made storable, and what was wrong with it (empty when nothing was)."""
    if len(value) <= limit and value.isascii() and "\x00" not in value:
        return value, ()
    problems: list[str] = []
    if "\x00" in value:
        value = value.replace("\x00", "")
        problems.append("NUL bytes removed")
    if not value.isascii() and _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
        problems.append("invalid surrogates replaced")
    if len(value) > limit:
        problems.append(f"{len(value)} characters truncated to {limit}")
        # A narrow column (task_type is 10 wide) keeps more of the value with a bare ellipsis.
        marker = TRUNCATED if limit >= 4 * len(TRUNCATED) else TRUNCATED[0]
        value = value[: max(limit - len(marker), 0)] + marker[:limit]
    return value, tuple(problems)


def clean_column(column: str, value: str | None) -> tuple[str | None, tuple[str, ...]]:
    """``clean`` with the width of ``column`` (TEXT_MAX for TEXT columns)."""
    if value is None:
        return None, ()
    return clean(value, WIDTHS.get(column, TEXT_MAX))


class InterpolationError(Exception):
    """A ``{name}`` in a message that the caller's variables cannot fill."""


def interpolate(template: str, frame: FrameType | None) -> str:
    """``template`` with ``{name}`` fields filled from ``frame``'s variables, as R's glue did.

    Supports what ``str.format`` supports (``{name}``, ``{row.col}``, ``{items[0]}``,
    ``{n:,}``), not arbitrary expressions: a message can carry data, and data must never run.
    ``{{`` and ``}}`` are literal braces.
    """
    if "{" not in template and "}" not in template:
        return template
    scope: Mapping[str, object] = (
        ChainMap(frame.f_locals, frame.f_globals, vars(builtins))
        if frame is not None
        else vars(builtins)
    )
    try:
        return template.format_map(scope)
    except (KeyError, AttributeError, IndexError, ValueError, TypeError) as exc:
        raise InterpolationError(
            f"cannot interpolate {template[:200]!r}: {type(exc).__name__}: {exc}"
        ) from None
