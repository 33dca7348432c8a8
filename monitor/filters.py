"""Filters from text, as the command line and the pages' query strings give them.

One parser per view, shared by ``pipetrack status``/``history`` and the web, so a filter means
the same everywhere and a bad one gets the same clear answer (ConfigurationError, which the CLI
turns into exit 2 and the web into 400).
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.queries._common import (
    RUN_STATUSES,
    STAGE_ORDER,
    choices,
    limit_of,
    moment,
    text_filter,
)
from monitor.queries.failures import OUTCOMES, FailureFilter
from monitor.queries.history import HistoryFilter
from monitor.queries.now import SHOWN_STATUSES, NowFilter


def _texts(values: Sequence[str], what: str) -> tuple[str, ...]:
    return tuple(
        text_filter(part.strip(), what=what)
        for value in values
        for part in value.split(",")
        if part.strip()
    )


def now_filter(
    *,
    stages: Sequence[str] = (),
    statuses: Sequence[str] = (),
    task: str | None = None,
    hosts: Sequence[str] = (),
    since: str | None = None,
    problems: bool = False,
) -> NowFilter:
    """The Now view's filters: stages and statuses from their known names, a task glob, hosts,
    a start (``24h`` or a time)."""
    return NowFilter(
        stages=choices(stages, STAGE_ORDER, what="stage"),
        statuses=choices(statuses, SHOWN_STATUSES, what="status"),
        task=text_filter(task, what="task") if task else None,
        hosts=_texts(hosts, "host"),
        since=moment(since, what="since") if since else None,
        problems=problems,
    )


def history_filter(
    *,
    statuses: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    limit: str | int | None = None,
) -> HistoryFilter:
    """The Task history's filters: statuses, a start range, a row limit (1-1000)."""
    return HistoryFilter(
        statuses=choices(statuses, RUN_STATUSES, what="status"),
        since=moment(since, what="since") if since else None,
        until=moment(until, what="until") if until else None,
        limit=limit_of(limit) if limit is not None and str(limit).strip() else 50,
    )


def failure_filter(
    *,
    since: str | None = None,
    until: str | None = None,
    outcomes: Sequence[str] = (),
) -> FailureFilter:
    """The Failures view's range (default: the last 7 days) and outcomes."""
    return FailureFilter(
        since=moment(since, what="since") if since else None,
        until=moment(until, what="until") if until else None,
        outcomes=choices(outcomes, OUTCOMES, what="outcome") or OUTCOMES,
    )
