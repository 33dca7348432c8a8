"""The Dependencies view: declared tasks as a graph, the critical path, each stage's finish.

1. Nodes are the declared tasks (``pipetrack tasks sync``) and edges their ``depends_on``; each
   node carries its latest run's status from the Now view.
2. The critical path is the longest chain of the graph weighed by each task's duration in the
   last full run of the pipeline: its latest FINISHED run (``pipeline_task_last_outcome``).
3. Each task's expected finish: a running run's start plus its predicted total; a task done
   since its last expected start, its end; one still to run, its next start (not before its
   dependencies' expected finish) plus its typical duration. A stage finishes with its last task.
Tasks in a dependency cycle (possible in a table written by hand) get no layer of their own and
no expected finish; the rest of the graph is unaffected.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from exporter._schedule import Declared
from monitor.queries._common import ACTIVE, Row, fetch, stage_rank
from monitor.queries.now import NowView, latest_runs, shown_status

if TYPE_CHECKING:
    import psycopg

LAST_FINISHED_SQL = """
SELECT task_name, execution_start, execution_end, recent_durations
FROM pipeline_task_last_outcome WHERE execution_status = 'FINISHED'
"""


@dataclass(frozen=True)
class Node:
    task: str
    stage: str
    declared: bool
    schedule: str | None
    depends_on: tuple[str, ...]
    status: str
    run_id: str | None
    last_seconds: float | None
    typical_seconds: float | None
    expected_finish: datetime | None
    overdue: str | None
    layer: int
    row: int
    critical: bool


@dataclass(frozen=True)
class Edge:
    source: str  # the dependency
    target: str  # the task that depends on it
    critical: bool


@dataclass(frozen=True)
class StageFinish:
    stage: str
    tasks: int
    expected_finish: datetime | None
    unknown: int  # tasks with no estimate (never finished, nothing scheduled)


@dataclass(frozen=True)
class DependencyGraph:
    at: datetime
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    critical_path: list[str] = field(default_factory=list)
    critical_seconds: float = 0.0
    stages: list[StageFinish] = field(default_factory=list)


def _topological(deps: dict[str, tuple[str, ...]]) -> list[str]:
    """Kahn's order of the tasks not caught in a cycle, dependencies first."""
    waiting = {task: sum(1 for d in ds if d in deps) for task, ds in deps.items()}
    dependents: dict[str, list[str]] = {}
    for task, ds in deps.items():
        for d in ds:
            dependents.setdefault(d, []).append(task)
    ready = sorted(task for task, n in waiting.items() if n == 0)
    order = []
    while ready:
        task = ready.pop(0)
        order.append(task)
        for child in sorted(dependents.get(task, ())):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order


def critical_path(
    order: list[str], deps: dict[str, tuple[str, ...]], weight: dict[str, float]
) -> tuple[list[str], float]:
    """The heaviest chain through the graph (dependencies first) and its total weight."""
    total: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for task in order:
        best = max((d for d in deps[task] if d in total), key=lambda d: (total[d], d), default=None)
        total[task] = weight.get(task, 0.0) + (total[best] if best is not None else 0.0)
        before[task] = best
    if not total:
        return [], 0.0
    end = max(total, key=lambda task: (total[task], task))
    if total[end] <= 0:
        return [], 0.0
    path: list[str] = []
    step: str | None = end
    while step is not None:
        path.append(step)
        step = before[step]
    return path[::-1], total[end]


def _expected_finish(
    order: list[str],
    *,
    deps: dict[str, tuple[str, ...]],
    declared: dict[str, Declared],
    latest: dict[str, Row],
    typical: dict[str, float],
    at: datetime,
) -> dict[str, datetime | None]:
    finish: dict[str, datetime | None] = {}
    for task in order:
        row, spec = latest.get(task), declared.get(task)
        started = row.get("execution_start") if row else None
        since = spec.previous_start if spec is not None else None
        this_cycle = started is not None and (since is None or started.timestamp() >= since)
        if row is not None and row.get("execution_status") in ACTIVE:
            eta = row.get("eta_seconds")
            finish[task] = None if eta is None else at + timedelta(seconds=float(eta))
        elif this_cycle and row is not None and row.get("execution_end") is not None:
            finish[task] = row["execution_end"]
        elif spec is not None and spec.next_start is not None and task in typical:
            due = since is not None and not this_cycle  # its start is due or overdue: now
            start = at if due else datetime.fromtimestamp(spec.next_start, timezone.utc)
            ready = _after(start, [finish[d] for d in deps[task] if d in finish])
            finish[task] = None if ready is None else ready + timedelta(seconds=typical[task])
        else:
            finish[task] = None
    return finish


def _after(start: datetime, dependencies: list[datetime | None]) -> datetime | None:
    """``start``, not before the dependencies' finishes; None if one of them has none."""
    if any(end is None for end in dependencies):
        return None
    return max([start, *(end for end in dependencies if end is not None)])


def _layers(order: list[str], deps: dict[str, tuple[str, ...]]) -> dict[str, int]:
    layer: dict[str, int] = {}
    for task in order:
        layer[task] = 1 + max((layer[d] for d in deps[task] if d in layer), default=-1)
    cyclic = max(layer.values(), default=-1) + 1
    return {task: layer.get(task, cyclic) for task in deps}


def dependency_graph(conn: psycopg.Connection[Any], now: NowView | None = None) -> DependencyGraph:
    """The Dependencies view (``now``: the Now view already read, if the caller has it)."""
    now = now or latest_runs(conn, full=False)
    declared = now.declared
    latest = {str(row["task_name"]): row for row in now.runs if row.get("run_id") is not None}
    deps: dict[str, tuple[str, ...]] = {task: spec.depends_on for task, spec in declared.items()}
    for spec in declared.values():
        for d in spec.depends_on:
            deps.setdefault(d, ())  # a dependency the table names but does not declare
    last, typical = {}, {}
    for row in fetch(conn, LAST_FINISHED_SQL):
        if row["task_name"] in deps:
            last[row["task_name"]] = (row["execution_end"] - row["execution_start"]).total_seconds()
            if row["recent_durations"]:
                typical[row["task_name"]] = statistics.median(row["recent_durations"])
    order = _topological(deps)
    path, seconds = critical_path(order, deps, {t: max(s, 0.0) for t, s in last.items()})
    on_path = set(path)
    finish = _expected_finish(
        order, deps=deps, declared=declared, latest=latest, typical=typical, at=now.at
    )
    layer = _layers(order, deps)
    placed: dict[int, list[str]] = {}
    for task in sorted(deps, key=lambda t: (stage_rank(_stage(t, declared, latest)), t)):
        placed.setdefault(layer[task], []).append(task)
    row_of = {task: i for tasks in placed.values() for i, task in enumerate(tasks)}
    shown = {str(row["task_name"]): row for row in now.runs}  # never-run overdue ones too
    nodes = [
        Node(
            task=task,
            stage=_stage(task, declared, latest),
            declared=task in declared,
            schedule=declared[task].schedule if task in declared else None,
            depends_on=deps[task],
            status=shown_status(shown[task]) if task in shown else "NOT_RUN",
            run_id=str(latest[task]["run_id"]) if task in latest else None,
            last_seconds=last.get(task),
            typical_seconds=typical.get(task),
            expected_finish=finish.get(task),
            overdue=shown[task].get("overdue") if task in shown else None,
            layer=layer[task],
            row=row_of[task],
            critical=task in on_path,
        )
        for task in sorted(deps)
    ]
    pairs = set(pairwise(path))
    edges = [
        Edge(source=d, target=task, critical=(d, task) in pairs)
        for task in sorted(deps)
        for d in deps[task]
    ]
    return DependencyGraph(
        at=now.at,
        nodes=nodes,
        edges=edges,
        critical_path=path,
        critical_seconds=seconds,
        stages=_stage_finishes(nodes),
    )


def _stage(task: str, declared: dict[str, Declared], latest: dict[str, Row]) -> str:
    if task in declared and declared[task].stage:
        return str(declared[task].stage)
    if task in latest and latest[task].get("task_stage"):
        return str(latest[task]["task_stage"])
    return "UNKNOWN"


def _stage_finishes(nodes: list[Node]) -> list[StageFinish]:
    stages: dict[str, list[Node]] = {}
    for node in nodes:
        stages.setdefault(node.stage, []).append(node)
    result = []
    for stage in sorted(stages, key=lambda s: (stage_rank(s), s)):
        known = [n.expected_finish for n in stages[stage] if n.expected_finish is not None]
        result.append(
            StageFinish(
                stage=stage,
                tasks=len(stages[stage]),
                expected_finish=max(known) if known else None,
                unknown=len(stages[stage]) - len(known),
            )
        )
    return result
