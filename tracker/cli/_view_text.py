"""The terminal views' text: tables that fit 80 columns, coloured only on a terminal.

Every value from the database passes through ``printable`` (tracker._model.terminal) before colour
codes go on, so a task name or message can never reach the terminal as a control sequence.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from monitor.queries._common import ACTIVE, jsonable
from monitor.queries.now import shown_status
from tracker._model.terminal import printable
from tracker.cli._view_samples import sample_lines, subtask_lines, total_lines

Row = dict[str, Any]
WIDTH = 80
_BREAKS = re.compile(r"[\r\n\t\v\f]+")
_COLOURS = {
    "RUNNING": "36",
    "STARTED": "36",
    "FINISHED": "32",
    "FAILED": "31",
    "CANCELLED": "33",
    "LOST": "31;1",
    "STALLED": "33;1",
    "OVERDUE": "35;1",
}
SHOWN = (
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
"""The run fields ``pipetrack show`` prints, in this order (the rest are in ``--json``)."""


def colour_on() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def paint(status: str, text: str) -> str:
    code = _COLOURS.get(status)
    return f"\033[{code}m{text}\033[0m" if code and colour_on() else text


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


def percent(value: object) -> str:
    return "-" if value is None else f"{float(value):.1f}%"  # type: ignore[arg-type]


def cut(text: object, width: int) -> str:
    """One line per value: line breaks and tabs become spaces; alignment spaces stay. What a
    script wrote never reaches the terminal as a control sequence (tracker._model.terminal)."""
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
        items += f", {percent(pct)})" if pct is not None else ")"
    elif row.get("subtask_percent_complete") is not None:
        items = f" ({percent(row['subtask_percent_complete'])})"
    return "  └ " + cut(f"{position} {row['subtask_name']}{items}", WIDTH - 4)


def bar(value: object, width: int = 20) -> str:
    if value is None:
        return "[" + "·" * width + "]"
    filled = round(min(max(float(value), 0.0), 100.0) / 100.0 * width)  # type: ignore[arg-type]
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _reasons(row: Row, state: str) -> list[str]:
    """The ``!`` lines under a task: why it is lost, stalled, overdue, or how it failed."""
    lines = []
    if state == "LOST":
        lines.append(f"lost: no heartbeat for {duration(row.get('heartbeat_age_seconds'))}")
    elif state == "STALLED":
        lines.append(f"stalled: no progress for {duration(row.get('progress_age_seconds'))}")
    if row.get("overdue"):
        lines.append(f"overdue: {row['overdue']}")
    if row.get("execution_status") == "FAILED" and row.get("error_message"):
        lines.append(str(row["error_message"]))
    return ["  ! " + cut(line, WIDTH - 4) for line in lines]


def render_status(rows: list[Row], *, bars: bool = False) -> list[str]:
    """The status table, one or more lines per task, at most 80 columns each.

    A lost, stalled or overdue task shows that as its status, with a line saying why.
    """
    if not rows:
        return ["no runs recorded yet"]
    lines = [f"{'TASK':<28} {'STATUS':<9} {'OVERALL':>7} {'ELAPSED':>8} {'ETA':>7}  HOST"]
    for row in rows:
        state = printable(shown_status(row))
        eta = row.get("eta_seconds")
        host = cut(row.get("hostname"), 14)
        lines.append(
            f"{cut(row['task_name'], 28):<28} {paint(state, f'{state:<9}')} "
            f"{percent(row.get('overall_percent_complete')):>7} "
            f"{duration(row.get('elapsed_seconds')):>8} "
            f"{duration(eta) if eta is not None else '-':>7}  {host}"
        )
        active = row.get("execution_status") in ACTIVE
        if bars and active:
            lines.append(f"  {bar(row.get('overall_percent_complete'), 40)}")
        sub = _subtask_line(row) if active else None
        if sub:
            lines.append(sub)
        lines.extend(_reasons(row, state))
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
            f"{started:<19} {paint(status, f'{status:<9}')} "
            f"{duration(row['elapsed_seconds']):>8} {code:>4}  {cut(result, 33)}"
        )
    return lines


def render_run(run: Row, subtasks: list[Row], samples: list[Row] | None = None) -> list[str]:
    """The run's fields, its resource totals and counts, its subtasks (and what each used), and
    a sparkline per figure of its resource samples."""
    lines = []
    for key in SHOWN:
        value = run.get(key)
        if value is None:
            continue
        if key == "error_detail":
            lines.append(f"{key}:")
            lines.extend("  " + cut(part, WIDTH - 2) for part in str(value).splitlines())
            continue
        lines.append(cut(f"{key + ':':<26}{jsonable_or_self(value)}", WIDTH))
    lines.append(f"{'duration:':<26}{duration(run['elapsed_seconds'])}")
    lines.extend(cut(line, WIDTH) for line in total_lines(run))
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
                cut(
                    f"{sub['subtask_index']:>4} {sub['subtask_status']:<9} "
                    f"{duration(sub['elapsed_seconds']):>7} {items:>11}  {name}",
                    WIDTH,
                )
            )
        lines.extend(cut(line, WIDTH) for line in subtask_lines(subtasks))
    lines.extend(sample_lines(samples or []))  # drawn by us: nothing to make printable
    return lines


def jsonable_or_self(value: object) -> object:
    """A field as ``show`` prints it: times in ISO 8601, ids as text, the rest as they are."""
    try:
        return jsonable(value)
    except TypeError:
        return value
