"""Writing the exposition (Prometheus text 0.0.4 and OpenMetrics) fast enough for 10,000 tasks.

prometheus_client's encoders validate and escape every label name of every sample, which costs
~5 us a sample: 90 ms for the 16,000 series of 1,000 tasks, twice the scrape budget. Our
families are plain gauges and counters whose label names are fixed identifiers, so this encoder
escapes label values only, once per distinct label set, and formats each value once. Anything
else (histograms, timestamps, exemplars, units) goes to prometheus_client's encoder unchanged.
The task families arrive as ``WrittenFamily`` (gauges, counters, and one summary of quantiles
only): their sample lines were written from the rows (exporter/_lines.py), so only the headers
are added here. The tests compare both outputs with
prometheus_client's byte for byte and parse them back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Encoder = Callable[[Collector], bytes]

_LEGACY_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("gauge", "counter")


class _NotSimple(Exception):
    """A family this encoder does not write; prometheus_client's encoder does."""


class _Fixed(Collector):
    """Families already collected, offered again to prometheus_client's encoders."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return self._families


def _simple(families: list[Any]) -> bool:
    for family in families:
        # A written summary is quantiles only: its lines are all named as the family.
        kinds = ("gauge", "counter", "summary") if isinstance(family, WrittenFamily) else _KINDS
        if family.type not in kinds or family.unit:
            return False
        if not _LEGACY_NAME.match(family.name):
            return False
        if isinstance(family, WrittenFamily):
            continue  # written by exporter/_lines.py with the names and labels it checks
        suffix = "_total" if family.type == "counter" else ""
        for sample in family.samples:
            if (
                sample.timestamp is not None
                or sample.exemplar is not None
                or sample.name != family.name + suffix
            ):
                return False
    return True


def format_value(value: float, known: dict[float, str]) -> str:
    """``floatToGoString(value)``, remembered in ``known``. Zero is never remembered: -0.0 and
    0.0 are one key, yet written differently."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    text = known.get(value)
    if text is None:
        text = known[value] = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def escape_label_value(value: str) -> str:
    """A label value as both formats write it between double quotes."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class WrittenFamily(Metric):
    """A gauge, counter or (quantiles-only) summary family whose sample lines are already
    written (``lines``).

    The scrape path writes ``lines`` as they are. ``samples`` are built only when something
    asks for them (prometheus_client's encoders for other formats, ``get_sample_value``), by
    ``build()``, which returns every family's samples of the same snapshot by name.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        lines: str,
        build: Callable[[], dict[str, list[Sample]]],
    ) -> None:
        self._built: list[Sample] | None = None
        super().__init__(name, documentation, typ)
        self._built = None  # Metric.__init__ assigned an empty list through the setter
        self.lines = lines
        self._build = build

    @property
    def samples(self) -> list[Sample]:
        if self._built is None:
            self._built = self._build()[self.name]
        return self._built

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._built = value


def _write(families: list[Any], *, openmetrics: bool) -> bytes:
    labels_text: dict[int, str] = {}
    escaped: dict[str, str] = {}
    names_checked: set[str] = set()
    values_text: dict[float, str] = {}
    out: list[str] = []
    append = out.append
    for family in families:
        help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        if openmetrics:
            help_text = help_text.replace('"', '\\"')
            header = family.name
        else:
            header = family.name + ("_total" if family.type == "counter" else "")
        append(f"# HELP {header} {help_text}\n# TYPE {header} {family.type}\n")
        if isinstance(family, WrittenFamily):
            append(family.lines)
            continue
        # Every sample of a simple family has the same name (_simple checked it).
        sample_name = family.name + ("_total" if family.type == "counter" else "")
        for sample in family.samples:
            labels = sample.labels
            # Samples keep their label dicts alive while we write, so an id is a safe key;
            # the collector shares one dict among a task's samples.
            text = labels_text.get(id(labels))
            if text is None:
                parts = []
                for name, raw in sorted(labels.items()):
                    if name not in names_checked:
                        if not _LABEL_NAME.match(name):
                            raise _NotSimple
                        names_checked.add(name)
                    value = escaped.get(raw)
                    if value is None:
                        value = escaped[raw] = escape_label_value(raw)
                    parts.append(f'{name}="{value}"')
                text = labels_text[id(labels)] = "{" + ",".join(parts) + "}" if parts else ""
            append(f"{sample_name}{text} {format_value(sample.value, values_text)}\n")
    if openmetrics:
        append("# EOF\n")
    return "".join(out).encode("utf-8")


def choose(accept_header: str) -> tuple[Encoder, str]:
    """The encoder and content type for a request's Accept header (as prometheus_client picks)."""
    fallback, content_type = choose_encoder(accept_header)
    # The two formats written here; other versions (text 1.0.0, OpenMetrics 2.0) are left to
    # prometheus_client. Escaping schemes change only names outside [a-zA-Z_:][a-zA-Z0-9_:]*,
    # which _simple() sends to prometheus_client as well.
    openmetrics = content_type.startswith("application/openmetrics-text; version=1.0.0;")
    ours = openmetrics or content_type == CONTENT_TYPE_PLAIN_0_0_4

    def encode(registry: Collector) -> bytes:
        families = list(registry.collect())
        if ours and _simple(families):
            try:
                return _write(families, openmetrics=openmetrics)
            except _NotSimple:
                pass
        return fallback(_Fixed(families))

    return encode, content_type
