"""``pipetrack show``'s resource lines: a run's totals and work counts, each subtask's, and a
sparkline per figure of its samples (``pipeline_run_sample``), all within 80 columns.

Cumulative figures (disk and TCP bytes) are drawn as rates: the growth between two samples over
the time between them. Samples are thinned (10 s apart, then 60 s), so the line is drawn on a
time axis: each character is an equal slice of the run, showing the largest value in it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from tracker._model.terminal import printable

Row = dict[str, Any]
SPARK_WIDTH = 40
_BLOCKS = "▁▂▃▄▅▆▇█"
_ASCII = ".:-=+*#@"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def size(value: object) -> str:
    """Bytes as ``64.0 MiB`` (``512 B`` below a KiB)."""
    if value is None:
        return "-"
    amount = float(value)  # type: ignore[arg-type]
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} {_UNITS[-1]}"  # pragma: no cover - the loop always returns


def counts_text(counts: object) -> str:
    """``files=3, rows_written=1500``: by name, as stored (cleaned by the tracker), printable."""
    if not isinstance(counts, dict) or not counts:
        return "-"
    return printable(", ".join(f"{name}={counts[name]}" for name in sorted(counts)))


def total_lines(run: Row) -> list[str]:
    """The run's totals and counts, as ``show`` prints its other fields (key, then value)."""
    figures = [
        ("cpu_seconds", None if run.get("cpu_seconds") is None else f"{run['cpu_seconds']:.1f} s"),
        ("disk_read_bytes", _size_or_none(run.get("disk_read_bytes"))),
        ("disk_write_bytes", _size_or_none(run.get("disk_write_bytes"))),
        ("tcp_received_bytes", _size_or_none(run.get("tcp_received_bytes"))),
        ("tcp_sent_bytes", _size_or_none(run.get("tcp_sent_bytes"))),
        ("counts", None if not run.get("counts") else counts_text(run["counts"])),
    ]
    return [f"{key + ':':<26}{value}" for key, value in figures if value is not None]


def _size_or_none(value: object) -> str | None:
    return None if value is None else size(value)


_SUBTASK_FIGURES = (
    "cpu_seconds",
    "disk_read_bytes",
    "disk_write_bytes",
    "tcp_received_bytes",
    "peak_rss_bytes",
    "counts",
)


def subtask_lines(subtasks: Sequence[Row]) -> list[str]:
    """What each subtask used, as a table (none when no subtask was measured or counted)."""
    if not any(sub.get(key) is not None for sub in subtasks for key in _SUBTASK_FIGURES):
        return []
    head = f"{'#':>4} {'CPU':>7} {'READ':>10} {'WRITTEN':>10} {'TCP IN':>10} {'PEAK':>10}"
    lines = ["", f"{head}  COUNTS"]
    for sub in subtasks:
        cpu = sub.get("cpu_seconds")
        lines.append(
            f"{sub['subtask_index']:>4} {'-' if cpu is None else f'{cpu:.1f}s':>7} "
            f"{size(sub.get('disk_read_bytes')):>10} {size(sub.get('disk_write_bytes')):>10} "
            f"{size(sub.get('tcp_received_bytes')):>10} {size(sub.get('peak_rss_bytes')):>10}  "
            f"{counts_text(sub.get('counts'))}"
        )
    return lines


def _rates(samples: Sequence[Row], key: str) -> list[tuple[float, float | None]]:
    """(time, growth per second since the previous sample) of a cumulative figure."""
    out: list[tuple[float, float | None]] = []
    for before, after in pairwise(samples):
        a, b = before.get(key), after.get(key)
        seconds = after["t"] - before["t"]
        rate = None if a is None or b is None or seconds <= 0 else max(b - a, 0) / seconds
        out.append((after["t"], rate))
    return out


def _levels(values: Sequence[tuple[float, float | None]], start: float, end: float) -> str:
    """A sparkline of ``values`` over [start, end]: each character the largest in its slice;
    blank where there is no sample, the lowest block for zero."""
    blocks = _BLOCKS if _unicode() else _ASCII
    width = SPARK_WIDTH
    span = max(end - start, 1e-9)
    slices: list[float | None] = [None] * width
    for at, value in values:
        if value is None:
            continue
        i = min(int((at - start) / span * width), width - 1)
        held = slices[i]
        slices[i] = value if held is None else max(held, value)
    top = max((v for v in slices if v is not None), default=0.0)
    line = []
    for value in slices:
        if value is None:
            line.append(" ")
        elif top <= 0:
            line.append(blocks[0])
        else:
            line.append(blocks[min(int(value / top * (len(blocks) - 1) + 0.5), len(blocks) - 1)])
    return "".join(line)


def _unicode() -> bool:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return encoding.startswith("utf")


def _largest(values: Sequence[tuple[float, float | None]]) -> float:
    return max((v for _, v in values if v is not None), default=0.0)


def sample_lines(samples: Sequence[Row]) -> list[str]:
    """One sparkline per figure, over the run's samples (none without samples)."""
    if not samples:
        return []
    start, end, last = samples[0]["t"], samples[-1]["t"], samples[-1]

    def level(key: str) -> list[tuple[float, float | None]]:
        return [(s["t"], s.get(key)) for s in samples]

    memory, cpu = level("rss_bytes"), level("cpu_percent")
    figures = [
        ("memory", memory, f"peak {size(_largest(memory))}"),
        ("cpu %", cpu, f"max {_largest(cpu):.0f} %"),
    ]
    for label, key in (
        ("disk read/s", "disk_read_bytes"),
        ("disk write/s", "disk_write_bytes"),
        ("tcp in/s", "tcp_received_bytes"),
        ("tcp out/s", "tcp_sent_bytes"),
    ):
        figures.append((label, _rates(samples, key), f"total {size(last.get(key))}"))
    for label, key in (
        ("db conns", "db_connections"),
        ("other conns", "other_connections"),
        ("open files", "open_fds"),
    ):
        values = level(key)
        figures.append((label, values, f"max {_largest(values):.0f}"))
    lines = ["", f"resources: {len(samples)} samples over {(end - start) / 60:.1f} min"]
    for label, values, summary in figures:
        if any(v is not None for _, v in values):
            lines.append(f"  {label:<13}{_levels(values, start, end)}  {summary}")
    return lines
