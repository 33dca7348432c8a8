"""Tracking never breaks the pipeline: the guard every public Run and Subtask method wears."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tracker.errors import TrackerError

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("tracker")


def guarded(fallback: Callable[..., Any]) -> Callable[[F], F]:
    """Tracking never breaks the pipeline: an unexpected error inside a method (a bug, not a
    strict-mode TrackerError) is logged and ``fallback(self, *args)`` is returned instead."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except TrackerError:
                raise
            except Exception:
                logger.exception("pipetrack: %s failed; the pipeline continues", method.__name__)
                return fallback(self, *args)

        return wrapper  # type: ignore[return-value]

    return decorate


def none(*_: Any) -> None:
    return None


def false(*_: Any) -> bool:
    return False
