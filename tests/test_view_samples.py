"""``pipetrack show``'s resource lines from rows as the database gives them: within 80 columns,
ASCII where the terminal is not UTF-8, what a script wrote never reaching the terminal as a
control sequence, and figures that are missing left out rather than drawn as zeros."""

from __future__ import annotations

import io
import sys

import pytest

from tracker.cli._view_samples import sample_lines, size, subtask_lines, total_lines
from tracker.cli._view_text import WIDTH, render_run

MIB = 1 << 20


class Terminal(io.StringIO):
    def __init__(self, encoding: str) -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def samples(count: int, *, every: float = 10.0) -> list[dict[str, float]]:
    return [
        {
            "t": 1_700_000_000 + i * every,
            "rss_bytes": (100 + i) * MIB,
            "cpu_percent": 50.0,
            "disk_write_bytes": i * 8 * MIB,
            "disk_read_bytes": 0,
            "open_fds": 7,
            "db_connections": 3,
        }
        for i in range(count)
    ]


def test_sizes_read_as_people_read_them():
    assert [size(v) for v in (None, 0, 512, 1536, 64 * MIB, 3 * 1024**4)] == [
        "-",
        "0 B",
        "512 B",
        "1.5 KiB",
        "64.0 MiB",
        "3.0 TiB",
    ]


def test_a_sparkline_per_measured_figure_within_80_columns(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal("utf-8"))
    lines = sample_lines(samples(500))
    assert lines[1] == "resources: 500 samples over 83.2 min"
    labels = [line.split()[0] for line in lines[2:]]
    # TCP figures and other connections were never measured: no line, not a row of zeros.
    assert labels == ["memory", "cpu", "disk", "disk", "db", "open"]
    assert all(len(line) <= WIDTH for line in lines)
    memory = lines[2]
    assert memory.endswith("peak 599.0 MiB")
    assert "█" in memory
    assert lines[5].endswith("total 3.9 GiB")  # disk write/s, and what was written in all


def test_without_a_utf8_terminal_the_sparklines_are_ascii(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal("ascii"))
    lines = sample_lines(samples(30))
    assert all(line.isascii() for line in lines)
    assert "@" in lines[2]


def test_a_run_without_samples_or_figures_prints_no_resource_lines():
    assert sample_lines([]) == []
    assert subtask_lines([{"subtask_index": 1, "cpu_seconds": None, "counts": None}]) == []
    assert total_lines({"cpu_seconds": None, "counts": None}) == []


def test_a_single_sample_is_drawn_without_dividing_by_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal("utf-8"))
    lines = sample_lines(samples(1))
    assert lines[1] == "resources: 1 samples over 0.0 min"
    assert [line.split()[0] for line in lines[2:]] == ["memory", "cpu", "db", "open"]


@pytest.mark.parametrize("name", ["\x1b[31mred", "evil\u202ename", "a\nb"])
def test_count_names_written_by_any_client_reach_the_terminal_as_plain_text(name):
    run = {
        "run_id": "r",
        "elapsed_seconds": 3,
        "counts": {name: 1},
        "cpu_seconds": 1.5,
        "disk_write_bytes": 3 * MIB,
    }
    subtasks = [
        {
            "subtask_index": 1,
            "parent_index": None,
            "subtask_name": "step",
            "subtask_status": "COMPLETED",
            "elapsed_seconds": 3,
            "items_total": None,
            "items_complete": None,
            "counts": {name: 1, "x" * 300: 2},
            "cpu_seconds": 1.0,
        }
    ]
    lines = render_run(run, subtasks, [])
    text = "\n".join(lines)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert all("\n" not in line and len(line) <= WIDTH for line in lines)
    assert "cpu_seconds:              1.5 s" in lines
    assert "disk_write_bytes:         3.0 MiB" in lines
