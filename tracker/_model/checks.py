"""Validating what callers pass: strict mode raises, lenient mode logs a warning and sanitizes.

Each check returns the value to use, or ``IGNORE`` when lenient mode drops it (the previous value
stays). Warnings are rate-limited per run and kind (1st, 10th, 100th … occurrence), because a
bad value inside a loop would otherwise flood the log.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from typing import Final

from tracker.errors import InvalidStatus, InvalidValue, TrackerError

logger = logging.getLogger("tracker")

BIGINT_MAX = 2**63 - 1


class _Ignore:
    __slots__ = ()

    def __repr__(self) -> str:
        return "IGNORE"


IGNORE: Final = _Ignore()
"""Returned by a lenient check when the value cannot be used at all."""

RUN_STATUSES = ("STARTED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")
SUBTASK_STATUSES = ("NOT_STARTED", "RUNNING", "COMPLETED", "FAILED")


def _shown(value: object) -> str:
    """``repr(value)`` for a warning: cut short, and never raising (a caller's ``__repr__`` can)."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break the pipeline
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 200 else text[:199] + "…"


def _as_float(value: object) -> float | None:
    """``float(value)``; an integer beyond a float's range is infinite; None if unreadable."""
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        try:
            return math.inf if value > 0 else -math.inf  # type: ignore[operator]
        except Exception:  # a comparison that raises: unreadable after all
            return None
    except Exception:  # a numbers.Real whose __float__ raises
        return None


class Checker:
    """The strict/lenient policy of one run (or of a Tracker, for calls outside any run)."""

    __slots__ = ("_counts", "_lock", "run_id", "strict")

    def __init__(self, *, strict: bool, run_id: str | None = None) -> None:
        self.strict = strict
        self.run_id = run_id
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def problem(self, error: TrackerError, kind: str, *, always_warn: bool = False) -> None:
        """Raise ``error`` in strict mode (unless ``always_warn``); otherwise log it, sparingly."""
        if self.strict and not always_warn:
            raise error
        self.warn(str(error), kind)

    def warn(self, text: str, kind: str) -> None:
        with self._lock:
            count = self._counts.get(kind, 0) + 1
            self._counts[kind] = count
        # 1, 10, 100, …: the first tells what is wrong, the rest how often it keeps happening.
        if count == 1 or math.log10(count).is_integer():
            where = f" (run {self.run_id})" if self.run_id else ""
            times = f" [{count} times so far]" if count > 1 else ""
            logger.warning("%s%s%s", text, where, times)

    def _invalid(self, text: str, argument: str, value: object) -> InvalidValue:
        return InvalidValue(text, run_id=self.run_id, argument=argument, value=value)

    def percent(self, value: object, argument: str) -> float | _Ignore:
        """A percentage in 0-100, rounded to the column's two decimals."""
        number = self._real(value, argument)
        if not isinstance(number, float):
            return IGNORE
        if not math.isfinite(number):
            self.problem(
                self._invalid(
                    f"{argument}={_shown(value)} is not a finite number; ignored", argument, value
                ),
                f"{argument}:nonfinite",
            )
            return IGNORE
        if number < 0 or number > 100:
            clamped = min(max(number, 0.0), 100.0)
            self.problem(
                self._invalid(
                    f"{argument}={_shown(value)} is outside 0-100; clamped to {clamped:g}",
                    argument,
                    value,
                ),
                f"{argument}:range",
            )
            number = clamped
        return round(number, 2)

    def count(self, value: object, argument: str) -> int | _Ignore:  # noqa: PLR0911 - an exit per kind of bad value
        """A non-negative item count that fits a BIGINT."""
        if isinstance(value, int) and value.__class__ is int and 0 <= value <= BIGINT_MAX:
            return value
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            self.problem(
                self._invalid(
                    f"{argument} must be an integer, got {type(value).__name__} "
                    f"{_shown(value)}; ignored",
                    argument,
                    value,
                ),
                f"{argument}:type",
            )
            return IGNORE
        if isinstance(value, numbers.Integral):
            number = int(value)
        else:
            real = self._real(value, argument)
            if not isinstance(real, float):
                return IGNORE
            if not math.isfinite(real):
                self.problem(
                    self._invalid(
                        f"{argument}={_shown(value)} is not a finite number; ignored",
                        argument,
                        value,
                    ),
                    f"{argument}:nonfinite",
                )
                return IGNORE
            if not real.is_integer():
                self.problem(
                    self._invalid(
                        f"{argument}={_shown(value)} is not a whole number; rounded down",
                        argument,
                        value,
                    ),
                    f"{argument}:fraction",
                )
            number = math.floor(real)
        if number < 0:
            self.problem(
                self._invalid(f"{argument}={_shown(value)} is negative; set to 0", argument, value),
                f"{argument}:negative",
            )
            return 0
        if number > BIGINT_MAX:
            self.problem(
                self._invalid(
                    f"{argument}={_shown(value)} does not fit a BIGINT; clamped", argument, value
                ),
                f"{argument}:range",
            )
            return BIGINT_MAX
        return number

    def text(self, value: object, argument: str) -> str | _Ignore:
        """A message or name as text (sanitized later, on the writer thread)."""
        if value.__class__ is str:
            return value
        if isinstance(value, str):
            # The characters themselves, not what a subclass's __str__ (which may raise) says.
            return str.__str__(value)
        self.problem(
            self._invalid(
                f"{argument} must be a str, got {type(value).__name__}; stored as str()",
                argument,
                value,
            ),
            f"{argument}:type",
        )
        try:
            return str(value)
        except Exception:  # a broken __str__ must not break the pipeline
            return f"<unprintable {type(value).__name__}>"

    def status(self, value: object, allowed: tuple[str, ...], argument: str) -> str | _Ignore:
        """A status name, case and surrounding space ignored."""
        if isinstance(value, str):
            name = str.upper(str.strip(value))
            if name in allowed:
                return name
        error = InvalidStatus(
            f"{argument}={_shown(value)} is not one of {', '.join(allowed)}; ignored",
            run_id=self.run_id,
            argument=argument,
            value=value,
        )
        self.problem(error, f"{argument}:unknown")
        return IGNORE

    def _real(self, value: object, argument: str) -> float | _Ignore:  # noqa: PLR0911 - an exit per kind of bad value
        if value.__class__ is float:
            return value
        if value.__class__ is int:  # the common case, before the slower ABC checks below
            number = _as_float(value)
            return IGNORE if number is None else number
        if isinstance(value, bool):
            self.problem(
                self._invalid(
                    f"{argument}={_shown(value)} is a bool, not a number; ignored", argument, value
                ),
                f"{argument}:type",
            )
            return IGNORE
        if isinstance(value, numbers.Real):
            number = _as_float(value)
            if number is not None:
                return number
            self.problem(
                self._invalid(
                    f"{argument}={_shown(value)} cannot be read as a number; ignored",
                    argument,
                    value,
                ),
                f"{argument}:type",
            )
            return IGNORE
        if isinstance(value, str):
            try:
                parsed = float(str.__str__(value))
            except ValueError:
                parsed = None
            if parsed is None:
                self.problem(
                    self._invalid(
                        f"{argument}={_shown(value)} is not a number; ignored", argument, value
                    ),
                    f"{argument}:type",
                )
                return IGNORE
            self.problem(
                self._invalid(
                    f"{argument}={_shown(value)} is a string; read as {parsed:g}", argument, value
                ),
                f"{argument}:type",
            )
            return parsed
        self.problem(
            self._invalid(
                f"{argument} must be a number, got {type(value).__name__}; ignored", argument, value
            ),
            f"{argument}:type",
        )
        return IGNORE
