"""Work counts: how many rows, files or records a run (and each subtask) has processed.

A count is a name and a non-negative integer that only grows (``run.count("rows_written", n)``).
The names are bounded per run (``MAX_NAMES``): a count name is a metric name, not a place for
data, and the record and the exporter must stay small whatever a script does. Names are cleaned
as the database's CHECK requires (1 to ``NAME_MAX`` characters): control characters (NUL among
them) removed, unpaired surrogates replaced, surrounding space stripped. A name longer than
``NAME_MAX`` is refused, not cut: cutting could make two names one. No I/O here; the checks that
warn or raise are the runtime's (``tracker._runtime.counting``).
"""

from __future__ import annotations

import re

MAX_NAMES = 32
"""Count names a run may have (its subtasks' names are among them): sql/0010's CHECK."""
NAME_MAX = 200
"""Characters a count name may have: sql/0010's CHECK."""
AMOUNT_MAX = 2**63 - 1
"""The largest count a row stores (a JSON number the CHECK accepts, a BIGINT for exporters)."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``name`` as a count name, and what had to be changed (empty when nothing was). The
    result may be empty or too long: ``name_refusal`` says so."""
    if name.isascii() and name.isprintable() and name == name.strip():
        return name, ()
    problems: list[str] = []
    if _CONTROL.search(name):
        name = _CONTROL.sub("", name)
        problems.append("control characters removed")
    if not name.isascii() and _SURROGATE.search(name):
        name = _SURROGATE.sub("\ufffd", name)
        problems.append("invalid surrogates replaced")
    if name != name.strip():
        name = name.strip()
    return name, tuple(problems)


def name_refusal(name: str) -> str | None:
    """Why a cleaned name cannot be used, or None."""
    if not name:
        return "is empty"
    if len(name) > NAME_MAX:
        return f"has {len(name)} characters; at most {NAME_MAX} are allowed"
    return None


class Counts:
    """One run's or subtask's counts, and their JSON (made once per change, for the writer).

    Changed under the owning run's lock; ``version`` grows with every change, so a snapshot can
    tell an open subtask's counts moved."""

    __slots__ = ("_json", "values", "version")

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.version = 0
        self._json: tuple[int, str | None] = (0, None)

    def __len__(self) -> int:
        return len(self.values)

    def add(self, name: str, amount: int) -> None:
        self.values[name] = self.values.get(name, 0) + amount
        self.version += 1

    def json(self) -> str | None:
        """The counts as the JSONB column takes them (text); None while there are none."""
        version, text = self._json
        if version != self.version:
            import json  # the writer's thread: `import tracker` stays free of it

            text = json.dumps(self.values, separators=(",", ":")) if self.values else None
            self._json = (self.version, text)
        return text
