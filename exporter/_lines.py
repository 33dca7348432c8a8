"""The scrape path: the task families written as exposition lines straight from a snapshot.

Building ~16 prometheus_client ``Sample`` objects per task, then escaping and formatting each
again in the encoder, was most of a scrape at 1,000 tasks. Here the same rules
(exporter/_render.py ``emit``) write each series as its final line instead: a task's labels
are escaped once and kept between scrapes (``LineCache``), and numbers that recur (0 and 1,
counts, timestamps that have not moved) are formatted once. The families still carry their
samples, built by the reference path only when something asks for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client.samples import Sample

from exporter import _metrics as m
from exporter._exposition import WrittenFamily, escape_label_value, format_value
from exporter._queries import ScrapeSnapshot
from exporter._render import DEFAULT_LOST_AFTER, DEFAULT_STALL_AFTER, TaskKey, emit, render

# Numbers kept formatted: as many as a scrape writes lines (a scrape's distinct values never
# exceed that), so the values that moved since fill it over many scrapes before a reset. About
# 110 bytes each: 2 MB at 1,000 tasks, 18 MB at 10,000.
_MIN_NUMBERS = 10_000


class LineCache:
    """What one collector keeps between scrapes: task keys and formatted numbers.

    Keys are kept for the tasks of the last scrape only, and the numbers are dropped when
    they outgrow one scrape's worth of lines, so neither grows with time.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[tuple[str, str], TaskKey] = {}
        self.numbers: dict[float, str] = {}
        self.limit = _MIN_NUMBERS


class TextSink:
    """Writes each series as its exposition line, in each family's list."""

    def __init__(self, numbers: dict[float, str]) -> None:
        self.lines: dict[str, list[str]] = {spec.name: [] for spec in m.TASK_METRICS}
        self._numbers = numbers
        # Per family: append, "name{", whether the extra label goes first, and the extra
        # label's text by value (with its comma, and the brace when it goes last).
        self._out: dict[str, tuple[Callable[[str], None], str, bool, dict[str, str]]] = {}
        for spec in m.TASK_METRICS:
            head = spec.name + ("_total" if spec.kind == "counter" else "") + "{"
            # Labels are written in sorted order; the one extra label of a family goes before
            # or after the task's two (whose text TaskKey holds, in that order).
            order = sorted(spec.labels)
            extra = spec.labels[-1]
            if len(spec.labels) == len(m.TASK_LABELS):
                before = False
            elif order[1:] == list(m.TASK_LABELS):
                before = True
            elif order[:-1] == list(m.TASK_LABELS):
                before = False
            else:
                raise ValueError(f"{spec.name}: label {extra!r} sorts between the task's labels")
            self._out[spec.name] = (self.lines[spec.name].append, head, before, {})

    def add(self, spec: m.MetricSpec, key: TaskKey, value: float) -> None:
        append, head, _, _ = self._out[spec.name]
        # The cache inline (zero is never in it): a call less per series on the common path.
        number = self._numbers.get(value) if value else None
        if number is None:
            number = format_value(value, self._numbers)
        append(f"{head}{key.text}}} {number}\n")

    def add_with(self, spec: m.MetricSpec, key: TaskKey, extra: str, value: float) -> None:
        append, head, before, texts = self._out[spec.name]
        text = texts.get(extra)
        if text is None:
            label = f'{spec.labels[-1]}="{escape_label_value(extra)}"'
            text = texts[extra] = f"{head}{label}," if before else f",{label}}}"
        number = self._numbers.get(value) if value else None
        if number is None:
            number = format_value(value, self._numbers)
        if before:
            append(f"{text}{key.text}}} {number}\n")
        else:
            append(f"{head}{key.text}{text} {number}\n")


def render_lines(
    snapshot: ScrapeSnapshot,
    cache: LineCache,
    *,
    stall_after: float = DEFAULT_STALL_AFTER,
    lost_after: float = DEFAULT_LOST_AFTER,
) -> list[WrittenFamily]:
    """The task families of ``snapshot`` with their lines written (see the module docstring)."""
    with cache.lock:
        numbers = cache.numbers
        if len(numbers) > cache.limit:
            numbers.clear()
        sink = TextSink(numbers)
        known = cache.keys
        keys: dict[tuple[str, str], TaskKey] = {}

        def key_for(task: str, stage: str) -> TaskKey:
            key = known.get((task, stage))
            if key is None:
                key = TaskKey(task, stage)
            keys[task, stage] = key
            return key

        emit(snapshot, sink, key_for, stall_after=stall_after, lost_after=lost_after)
        cache.keys = keys
        written = sum(len(lines) for lines in sink.lines.values())
        cache.limit = max(_MIN_NUMBERS, written)

    built: list[dict[str, list[Sample]]] = []

    def build() -> dict[str, list[Sample]]:
        # The reference path over the same snapshot; once for all the families of a scrape.
        if not built:
            families = render(snapshot, stall_after=stall_after, lost_after=lost_after)
            built.append({family.name: family.samples for family in families})
        return built[0]

    return [
        WrittenFamily(spec.name, spec.help, spec.kind, "".join(sink.lines[spec.name]), build)
        for spec in m.TASK_METRICS
    ]
