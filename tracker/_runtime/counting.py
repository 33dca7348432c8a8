"""``count()``: adding to a run's (and a subtask's) work counts, with the checks every entry
point shares (``Run.count``, ``Subtask.count``, ``tracker.gcount``, ``pipetrack count``, the
``count`` protocol line).

A bad name or amount is refused as a whole (an error in strict mode, else a warning and nothing
counted): a count that is wrong is worse than one that is missing, so nothing is rounded,
clamped or cut short. Only what can be cleaned without changing the name's meaning is
(control characters, NUL among them; unpaired surrogates; surrounding space), with a warning.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

from tracker._model.counts import AMOUNT_MAX, MAX_NAMES, clean_name, name_refusal
from tracker.errors import InvalidValue

if TYPE_CHECKING:
    from tracker._model.subtask import SubtaskCore
    from tracker._runtime.run import Run


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break the pipeline
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 80 else text[:79] + "…"


def add_count(run: Run, sub: SubtaskCore | None, name: object, n: object) -> bool:
    """Add ``n`` to the count ``name`` of ``run`` and, if given, of ``sub`` (one of the run's
    open subtasks); True if counted."""
    checked = _checked(run, name, n)
    if checked is None:
        return False
    key, amount = checked
    with run._lock:
        counted = _add(run, sub, key, amount)
    if counted:
        run._wake_if_urgent()
    return counted


def _checked(run: Run, name: object, n: object) -> tuple[str, int] | None:
    if type(name) is str and name in run.counts.values:
        key: str | None = name  # counted before, so clean already
    else:
        key = _checked_name(run, name)
    if key is None:
        return None
    amount = n if type(n) is int and 0 <= n <= AMOUNT_MAX else _checked_amount(run, key, n)
    return None if amount is None else (key, amount)


def _add(run: Run, sub: SubtaskCore | None, key: str, amount: int) -> bool:
    """The count added, under the run's lock the caller holds; False if refused."""
    if run.terminal:
        run._closed("count")
        return False
    if sub is not None and sub.ended is not None:
        return _refuse(
            run,
            f"cannot count {key!r} on subtask {sub.name!r}: it already ended",
            "subtask",
            sub.name,
            "count:ended",
        )
    counts = run.counts
    held = counts.values.get(key)
    if held is None and len(counts) >= MAX_NAMES:
        return _refuse(
            run,
            f"count {key!r} refused: a run keeps at most {MAX_NAMES} count names "
            f"(it has {', '.join(sorted(counts.values))})",
            "name",
            key,
            "count:names",
        )
    if (held or 0) + amount > AMOUNT_MAX:
        return _refuse(
            run,
            f"count {key!r} refused: {held} + {amount} exceeds {AMOUNT_MAX}",
            "n",
            amount,
            "count:overflow",
        )
    counts.add(key, amount)
    if sub is not None:
        sub.counts.add(key, amount)
    run.begin_work()
    run._dirty = True
    return True


def _refuse(run: Run, text: str, argument: str, value: object, kind: str) -> bool:
    run._checker.problem(
        InvalidValue(text, run_id=run.run_id, argument=argument, value=value), kind
    )
    return False


def _checked_name(run: Run, name: object) -> str | None:
    """``name`` cleaned, or None (and a warning or error) if it cannot be a count name."""
    if not isinstance(name, str):
        _refuse(
            run,
            f"a count name must be a str, not {type(name).__name__} {_shown(name)}; not counted",
            "name",
            name,
            "count:name",
        )
        return None
    cleaned, problems = clean_name(str.__str__(name))
    refusal = name_refusal(cleaned)
    if refusal is not None:
        _refuse(
            run, f"count name {_shown(name)} {refusal}; not counted", "name", name, "count:name"
        )
        return None
    if problems:
        run._checker.problem(
            InvalidValue(
                f"count name {_shown(name)}: {'; '.join(problems)}; counted as {cleaned!r}",
                run_id=run.run_id,
                argument="name",
                value=name,
            ),
            "count:name-cleaned",
        )
    return cleaned


def _checked_amount(run: Run, name: str, n: object) -> int | None:
    """``n`` as a count to add, or None (and a warning or error): a whole number from 0 to
    2^63-1, given as an integer (a float, even 3.0, is refused: it is not a count)."""
    what = f"count {name!r}"
    if isinstance(n, bool):
        reason = "is a bool, not a number"
    elif isinstance(n, numbers.Integral):
        value = int(n)
        if 0 <= value <= AMOUNT_MAX:
            return value
        reason = "is negative" if value < 0 else f"exceeds {AMOUNT_MAX}"  # e.g. 10**30
    elif isinstance(n, float) and not math.isfinite(n):
        reason = "is not a finite number"
    else:
        reason = f"must be a whole number (int), not {type(n).__name__}"
    _refuse(run, f"{what}: n={_shown(n)} {reason}; not counted", "n", n, "count:n")
    return None
