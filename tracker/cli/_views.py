"""``pipetrack status | top | history | show``: the canonical record, read in a terminal.

Plain text that fits 80 columns (colour only on a terminal, and never with NO_COLOR set), or
``--json`` for scripts. Reads only; every figure comes from PostgreSQL as the writers left it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from tracker._db.connect import connect, ready_target
from tracker._model.terminal import printable
from tracker._ops.eta import ProgressCurve
from tracker._ops.eta_history import predicted_total, read_curves
from tracker.cli._common import EXIT_NOT_OK, EXIT_OK, add_dsn_option, complain, say

__all__ = ["register"]

Row = dict[str, Any]
WIDTH = 80
ACTIVE = ("STARTED", "RUNNING")
_BREAKS = re.compile(r"[\r\n\t\v\f]+")
_COLOURS = {
    "RUNNING": "36",
    "STARTED": "36",
    "FINISHED": "32",
    "FAILED": "31",
    "CANCELLED": "33",
    "LOST": "31;1",
    "STALLED": "33;1",
}

# Elapsed is computed by the server, so a client with a wrong clock still shows the truth. The
# lost and stalled flags and ages come from pipeline_active_runs (sql/0007), the recent FINISHED
# durations the ETA is blended with from pipeline_task_last_outcome (sql/0005).
_LATEST = """
    SELECT l.*,
           EXTRACT(EPOCH FROM (coalesce(l.execution_end, now()) - l.execution_start))::float8
               AS elapsed_seconds,
           a.lost, a.stalled,
           EXTRACT(EPOCH FROM a.heartbeat_age)::float8 AS heartbeat_age_seconds,
           EXTRACT(EPOCH FROM a.progress_age)::float8 AS progress_age_seconds,
           o.recent_durations
    FROM pipeline_latest_run AS l
    LEFT JOIN pipeline_active_runs AS a ON a.run_id = l.run_id
    LEFT JOIN pipeline_task_last_outcome AS o
        ON o.task_name = l.task_name AND o.execution_status = 'FINISHED'
    ORDER BY l.task_name
"""
_HISTORY = """
    SELECT *, EXTRACT(EPOCH FROM (coalesce(execution_end, now()) - execution_start))::float8
              AS elapsed_seconds
    FROM pipeline_runs WHERE task_name = %s ORDER BY execution_start DESC LIMIT %s
"""
_RUN = """
    SELECT *, EXTRACT(EPOCH FROM (coalesce(execution_end, now()) - execution_start))::float8
              AS elapsed_seconds
    FROM pipeline_runs WHERE run_id = %s
"""
_SUBTASKS = """
    SELECT subtask_index, parent_index, subtask_name, subtask_status, started_at, ended_at,
           items_total, items_complete, message,
           EXTRACT(EPOCH FROM (coalesce(ended_at, now()) - started_at))::float8 AS elapsed_seconds
    FROM (SELECT subtask_index, parent_index, subtask_name, subtask_status, started_at, ended_at,
                 items_total, items_complete, message
          FROM pipeline_subtask WHERE run_id = %s
          UNION ALL
          SELECT subtask_index, parent_index, subtask_name, subtask_status, started_at, ended_at,
                 items_total, items_complete, message
          FROM pipeline_subtask_history WHERE run_id = %s) AS s
    ORDER BY subtask_index
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="the latest run of every task",
        description="The latest run of each task: status, progress, current subtask, ETA, host.",
    )
    _common(status)
    status.set_defaults(handler=_status)

    top = commands.add_parser(
        "top",
        help="the latest runs, refreshing live",
        description="`pipetrack status` with progress bars, refreshed until interrupted.",
    )
    top.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    top.add_argument(
        "--count", type=int, default=0, metavar="N", help="stop after N refreshes (0: never)"
    )
    _common(top)
    top.set_defaults(handler=_top)

    history = commands.add_parser(
        "history",
        help="past runs of a task",
        description="Past runs of TASK, newest first, with durations and outcomes.",
    )
    history.add_argument("task", metavar="TASK")
    history.add_argument("--limit", type=int, default=20, metavar="N")
    _common(history)
    history.set_defaults(handler=_history)

    show = commands.add_parser(
        "show",
        help="one run and its subtasks",
        description="Everything recorded about one run, and its subtasks.",
    )
    show.add_argument("run_id", metavar="RUN_ID")
    _common(show)
    show.set_defaults(handler=_show)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_dsn_option(parser)


def _query(dsn: str | None, sql: str, params: Sequence[object] = ()) -> list[Row]:
    from psycopg.rows import dict_row

    with connect(ready_target(dsn)) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _latest(dsn: str | None) -> tuple[list[Row], dict[str, ProgressCurve]]:
    """The latest run of each task, and the progress curves of the tasks running now."""
    from psycopg.rows import dict_row

    with connect(ready_target(dsn)) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = list(cur.execute(_LATEST).fetchall())
        active = sorted({r["task_name"] for r in rows if r["execution_status"] in ACTIVE})
        with conn.cursor() as plain:
            curves = read_curves(plain, active)
    return rows, curves


def condition(row: Row) -> str | None:
    """``LOST`` or ``STALLED`` for an active run pipeline_active_runs flags, else None."""
    if row["execution_status"] not in ACTIVE:
        return None
    if row.get("lost"):
        return "LOST"
    if row.get("stalled"):
        return "STALLED"
    return None


# -- formatting -----------------------------------------------------------------------------
def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _dump(data: object) -> None:
    say(json.dumps(data, default=_jsonable, indent=2, sort_keys=True))


def _colour_on() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _paint(status: str, text: str) -> str:
    code = _COLOURS.get(status)
    return f"\033[{code}m{text}\033[0m" if code and _colour_on() else text


def duration(seconds: float | None) -> str:
    """``3h04m``, ``12m03s``, ``45s``: the two largest units, fixed width-ish."""
    if seconds is None:
        return "-"
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _percent(value: object) -> str:
    return "-" if value is None else f"{float(value):.1f}%"  # type: ignore[arg-type]


def eta_seconds(row: Row, curve: ProgressCurve | None = None) -> float | None:
    """Time left for an active run: its progress (through ``curve``, the task's progress curve,
    where it has one) blended with its task's recent FINISHED durations
    (tracker._ops.eta.predict_total); None with neither progress nor history."""
    if row["execution_status"] not in ACTIVE:
        return None
    elapsed = float(row["elapsed_seconds"] or 0.0)
    percent = row["overall_percent_complete"]
    progress = None if percent is None else float(percent) / 100.0
    recent = [float(d) for d in row.get("recent_durations") or ()]
    total = predicted_total(elapsed, progress, recent, curve)
    return None if total is None else max(total - elapsed, 0.0)


def _cut(text: object, width: int) -> str:
    # One line per value: line breaks and tabs become spaces; alignment spaces stay. What a
    # script wrote never reaches the terminal as a control sequence (tracker._model.terminal).
    flat = printable(_BREAKS.sub(" ", str(text or "")))
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def _subtask_line(row: Row) -> str | None:
    if not row.get("subtask_name"):
        return None
    current, total = row.get("current_subtask"), row.get("total_subtasks")
    position = f"{current or '?'}/{total}" if total else f"{current or '?'}"
    items = ""
    if row.get("subtask_items_total") is not None:
        items = f" ({row.get('subtask_items_complete') or 0}/{row['subtask_items_total']}"
        pct = row.get("subtask_percent_complete")
        items += f", {_percent(pct)})" if pct is not None else ")"
    elif row.get("subtask_percent_complete") is not None:
        items = f" ({_percent(row['subtask_percent_complete'])})"
    return "  └ " + _cut(f"{position} {row['subtask_name']}{items}", WIDTH - 4)


def bar(percent: object, width: int = 20) -> str:
    if percent is None:
        return "[" + "·" * width + "]"
    filled = round(min(max(float(percent), 0.0), 100.0) / 100.0 * width)  # type: ignore[arg-type]
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_status(
    rows: list[Row], *, bars: bool = False, curves: dict[str, ProgressCurve] | None = None
) -> list[str]:
    """The status table, one or two lines per task, at most 80 columns each.

    A lost or stalled active run shows LOST or STALLED as its status, with a line saying why.
    """
    if not rows:
        return ["no runs recorded yet"]
    lines = [f"{'TASK':<28} {'STATUS':<9} {'OVERALL':>7} {'ELAPSED':>8} {'ETA':>7}  HOST"]
    for row in rows:
        state = condition(row)
        status = state or printable(str(row["execution_status"]))
        eta = eta_seconds(row, (curves or {}).get(row["task_name"]))
        host = _cut(row.get("hostname"), 14)
        line = (
            f"{_cut(row['task_name'], 28):<28} {_paint(status, f'{status:<9}')} "
            f"{_percent(row['overall_percent_complete']):>7} "
            f"{duration(row['elapsed_seconds']):>8} {duration(eta) if eta is not None else '-':>7}"
            f"  {host}"
        )
        lines.append(line)
        active = row["execution_status"] in ACTIVE
        if bars and active:
            lines.append(f"  {bar(row['overall_percent_complete'], 40)}")
        sub = _subtask_line(row) if active else None
        if sub:
            lines.append(sub)
        if state == "LOST":
            why = f"lost: no heartbeat for {duration(row.get('heartbeat_age_seconds'))}"
            lines.append("  ! " + _cut(why, WIDTH - 4))
        elif state == "STALLED":
            why = f"stalled: no progress for {duration(row.get('progress_age_seconds'))}"
            lines.append("  ! " + _cut(why, WIDTH - 4))
        if status == "FAILED" and row.get("error_message"):
            lines.append("  ! " + _cut(row["error_message"], WIDTH - 4))
    return lines


def render_history(rows: list[Row]) -> list[str]:
    if not rows:
        return ["no runs of this task"]
    lines = [f"{'STARTED':<19} {'STATUS':<9} {'DURATION':>8} {'EXIT':>4}  RESULT"]
    for row in rows:
        status = printable(str(row["execution_status"]))
        started = row["execution_start"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
        code = "" if row.get("exit_code") is None else str(row["exit_code"])
        result = row.get("error_message") or row.get("overall_progress_message") or ""
        lines.append(
            f"{started:<19} {_paint(status, f'{status:<9}')} "
            f"{duration(row['elapsed_seconds']):>8} {code:>4}  {_cut(result, 33)}"
        )
    return lines


_SHOWN = (
    "run_id",
    "task_name",
    "task_stage",
    "task_type",
    "execution_status",
    "execution_start",
    "execution_end",
    "last_update",
    "hostname",
    "process_id",
    "user_name",
    "script_path",
    "log_path",
    "total_subtasks",
    "current_subtask",
    "subtask_name",
    "subtask_status",
    "overall_percent_complete",
    "overall_progress_message",
    "subtask_percent_complete",
    "subtask_progress_message",
    "subtask_items_total",
    "subtask_items_complete",
    "memory_mb",
    "peak_memory_mb",
    "cpu_percent",
    "exit_code",
    "error_message",
    "error_detail",
    "git_commit",
    "trace_id",
    "parent_run_id",
)


def render_run(run: Row, subtasks: list[Row]) -> list[str]:
    lines = []
    for key in _SHOWN:
        value = run.get(key)
        if value is None:
            continue
        if key == "error_detail":
            lines.append(f"{key}:")
            lines.extend("  " + _cut(part, WIDTH - 2) for part in str(value).splitlines())
            continue
        shown = _jsonable(value)
        lines.append(_cut(f"{key + ':':<26}{shown}", WIDTH))
    lines.append(f"{'duration:':<26}{duration(run['elapsed_seconds'])}")
    if subtasks:
        lines.append("")
        lines.append(f"{'#':>4} {'STATUS':<9} {'TIME':>7} {'ITEMS':>11}  SUBTASK")
        depth: dict[int, int] = {}
        for sub in subtasks:
            level = depth.get(sub["parent_index"], -1) + 1 if sub["parent_index"] else 0
            depth[sub["subtask_index"]] = level
            items = ""
            if sub["items_total"] is not None:
                items = f"{sub['items_complete'] or 0}/{sub['items_total']}"
            name = "  " * level + str(sub["subtask_name"])
            lines.append(
                _cut(
                    f"{sub['subtask_index']:>4} {sub['subtask_status']:<9} "
                    f"{duration(sub['elapsed_seconds']):>7} {items:>11}  {name}",
                    WIDTH,
                )
            )
    return lines


# -- handlers -------------------------------------------------------------------------------
def _as_json(rows: list[Row], curves: dict[str, ProgressCurve]) -> list[Row]:
    return [
        {
            **row,
            "eta_seconds": eta_seconds(row, curves.get(row["task_name"])),
            "condition": condition(row),
        }
        for row in rows
    ]


def _status(args: argparse.Namespace) -> int:
    if args.json:
        _dump(_as_json(*_latest(args.dsn)))
    else:
        show_status(args.dsn)
    return EXIT_OK


def show_status(dsn: str | None) -> None:
    """Print the status table of the latest run of every task."""
    rows, curves = _latest(dsn)
    for line in render_status(rows, curves=curves):
        say(line, painted=True)


def _top(args: argparse.Namespace) -> int:
    shown = 0
    clear = sys.stdout.isatty()
    try:
        while True:
            rows, curves = _latest(args.dsn)
            if args.json:
                _dump(_as_json(rows, curves))
            else:
                if clear:
                    sys.stdout.write("\033[H\033[2J")
                stamp = datetime.now().astimezone().strftime("%H:%M:%S")
                say(f"pipetrack top — {stamp}, every {args.interval:g}s (Ctrl-C to quit)")
                for line in render_status(rows, bars=True, curves=curves):
                    say(line, painted=True)
            shown += 1
            if args.count and shown >= args.count:
                return EXIT_OK
            time.sleep(max(args.interval, 0.1))  # the refresh period itself, not a wait
    except KeyboardInterrupt:
        return EXIT_OK


def _history(args: argparse.Namespace) -> int:
    rows = _query(args.dsn, _HISTORY, (args.task, max(args.limit, 1)))
    if args.json:
        _dump(rows)
    else:
        for line in render_history(rows):
            say(line, painted=True)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    try:
        run_id = uuid.UUID(args.run_id)
    except ValueError:
        complain(f"{args.run_id!r} is not a run id (a UUID)")
        return EXIT_NOT_OK
    runs = _query(args.dsn, _RUN, (run_id,))
    if not runs:
        complain(f"no run {run_id}")
        return EXIT_NOT_OK
    subtasks = _query(args.dsn, _SUBTASKS, (run_id, run_id))
    if args.json:
        _dump({"run": runs[0], "subtasks": subtasks})
    else:
        for line in render_run(runs[0], subtasks):
            say(line, painted=True)
    return EXIT_OK
