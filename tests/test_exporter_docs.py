"""docs/metrics.md documents exactly what the exporter serves; the package's public face is
explicit."""

from __future__ import annotations

import re
import types
from pathlib import Path

import exporter
from exporter import _metrics as m
from tests.test_exporter_support import insert_run, registered

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(pipetrack_[a-z_]+)` \| (\w+) \|([a-z_, ]*)\| (.+) \|$")


def documented():
    rows = {}
    for line in DOC.read_text("utf-8").splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels, help_text = match.groups()
            rows[name] = (kind, tuple(x.strip() for x in labels.split(",") if x.strip()), help_text)
    return rows


def served_name(spec):
    return spec.name + ("_total" if spec.kind == "counter" else "")


def test_every_metric_is_documented_with_its_type_labels_and_help():
    expected = {served_name(s): (s.kind, s.labels, s.help) for s in m.ALL_METRICS}
    assert documented() == expected


def test_the_collector_serves_only_documented_families(db, db_target):
    insert_run(
        db,
        overall_percent_complete=10,
        memory_mb=5,
        cpu_percent=1,
        total_subtasks=3,
        current_subtask=1,
        last_progress=None,
    )
    insert_run(db, task_name="other", execution_status="FINISHED", execution_end=None)
    with registered(db_target) as (_, collector):
        names = {f.name for f in collector.collect()}
        described = {f.name for f in collector.describe()}
    assert names <= described
    assert described == {s.name for s in m.ALL_METRICS}


def test_default_port_is_documented():
    assert f"`:{exporter.DEFAULT_PORT}`" in DOC.read_text("utf-8")


def test_all_is_sorted_and_complete():
    assert exporter.__all__ == sorted(exporter.__all__)
    public = {
        name
        for name in dir(exporter)  # the names it loads on first use too
        if not name.startswith("_")
        and not isinstance(getattr(exporter, name), types.ModuleType)
        and name != "annotations"
    }
    assert public == set(exporter.__all__)
