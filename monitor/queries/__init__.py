"""The monitor's one query layer: what every view of the record reads.

The web pages, their ``/api`` twins and the terminal views (``pipetrack status | top | history
| show``) all call these functions. Each takes a psycopg connection (search_path set to
pipetrack's schema, tracker._db.connect) and filters, and returns plain dataclasses whose rows
are dicts keyed by column name.
"""

from __future__ import annotations

from monitor.queries._common import jsonable
from monitor.queries.dependencies import DependencyGraph, dependency_graph
from monitor.queries.failures import FailureFilter, Failures, failures
from monitor.queries.history import HistoryFilter, TaskHistory, task_history, task_runs
from monitor.queries.now import NowFilter, NowView, latest_runs
from monitor.queries.runs import RunDetail, run_detail, run_samples

__all__ = [
    "DependencyGraph",
    "FailureFilter",
    "Failures",
    "HistoryFilter",
    "NowFilter",
    "NowView",
    "RunDetail",
    "TaskHistory",
    "dependency_graph",
    "failures",
    "jsonable",
    "latest_runs",
    "run_detail",
    "run_samples",
    "task_history",
    "task_runs",
]
