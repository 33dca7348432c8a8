"""Text the tracker stores: sanitizing (NUL, surrogates, length to the column), interpolation.

PostgreSQL rejects NUL bytes and unpaired surrogates, and a value longer than its VARCHAR fails
the whole statement; the original design lost the status in those cases. Every value therefore
passes through ``clean`` on the writer thread, which always returns something storable.
"""

from __future__ import annotations

import builtins
import re
import string
from collections import ChainMap
from collections.abc import Mapping
from types import FrameType

from tracker._model.columns import TEXT_MAX, WIDTHS

TRUNCATED = "…[truncated]"
"""Appended to a value cut to fit its column, so a reader sees it was cut."""

# Widths come with the declared columns; TEXT columns keep TEXT_MAX characters.
_SURROGATE = re.compile("[\ud800-\udfff]")
_FORMATTER = string.Formatter()


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

    Only ``{name}`` and ``{name:spec}`` are fields (``{n:,}``, ``{share:.1%}``); ``{{`` and
    ``}}`` are literal braces. Text with anything else in braces (``{row.col}``, ``{a[0]}``,
    ``{x!r}``, ``{}``, a nested ``{x:{w}}``, an unmatched brace) is not a template and is
    returned as it is: a message carries data, and data (a file name that an f-string already
    put in, JSON) must never reach into the program's objects or environment.
    """
    if "{" not in template and "}" not in template:
        return template
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError:
        return template  # an unmatched brace: text, not a template
    for _, name, spec, conversion in parts:
        if name is not None and (
            not name.isidentifier() or conversion is not None or "{" in (spec or "")
        ):
            return template
    scope: Mapping[str, object] = (
        ChainMap(frame.f_locals, frame.f_globals, vars(builtins))
        if frame is not None
        else vars(builtins)
    )
    pieces: list[str] = []
    try:
        for literal, name, spec, _ in parts:
            pieces.append(literal)
            if name is not None:
                pieces.append(format(scope[name], spec or ""))
    except (KeyError, ValueError, TypeError) as exc:
        raise InterpolationError(
            f"cannot interpolate {template[:200]!r}: {type(exc).__name__}: {exc}"
        ) from None
    return "".join(pieces)
