"""What the served /metrics looks like to outside tools: ``promtool check metrics`` finds nothing
to lint (types, suffixes, the summary's quantile label), and metric names follow the suffix
conventions."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from datetime import datetime, timedelta, timezone

from exporter import _metrics as m
from tests.prom_helpers import (
    insert_run,
    insert_subtask,
    require_program,
    running_exporter,
    seed_pipeline,
)

TEXT_ACCEPT = "text/plain"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


def scrape(address: str, accept: str) -> str:
    request = urllib.request.Request(f"http://{address}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
        body: bytes = response.read()
    return body.decode("utf-8")


def test_promtool_check_metrics_finds_nothing_in_a_seeded_exporters_output(db, db_dsn, tmp_path):
    promtool = require_program("promtool")
    seed_pipeline(db)  # finished, failed, running, lost, stalled, cancelled; declared; subtasks
    now = datetime.now(timezone.utc)
    # A run that has not reported yet, and one that declared its subtasks and is in the second.
    insert_run(db, "DAILY_05_starting", "STARTED", now)
    declared = insert_run(
        db, "DAILY_06_steps", "RUNNING", now - timedelta(minutes=2), last_update=now,
        total_subtasks=3, current_subtask=2, subtask_status="RUNNING",
    )  # fmt: skip
    insert_subtask(
        db, declared, 1, "one", status="COMPLETED", started=now - timedelta(minutes=2), ended=now
    )
    with running_exporter(db_dsn, tmp_path / "exporter.log") as address:
        text = scrape(address, TEXT_ACCEPT)
    # The families the lint is about are there to be linted.
    assert "# TYPE pipetrack_task_recent_duration_seconds summary\n" in text
    assert re.search(r'(?m)^pipetrack_task_recent_duration_seconds\{quantile="0\.5",', text)
    assert re.search(r'(?m)^pipetrack_task_subtasks\{task="DAILY_06_steps",.*\} 3\.0$', text)
    assert re.search(r"(?m)^pipetrack_task_runs_total\{", text)
    assert re.search(r"(?m)^pipetrack_task_missed_start\{", text)
    lint = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = (lint.stdout + lint.stderr).strip()
    assert (lint.returncode, findings) == (0, "")


def test_only_counters_end_in_total_and_no_family_takes_a_summary_or_histogram_suffix():
    for spec in m.ALL_METRICS:
        # A counter's "_total" is added when it is served; a gauge or summary never has it.
        assert not spec.name.endswith("_total"), spec.name
        if spec.kind != "summary":
            assert "quantile" not in spec.labels, spec.name
        assert not spec.name.endswith(("_count", "_sum", "_bucket", "_created")), spec.name
        assert "le" not in spec.labels, spec.name
    assert {spec.kind for spec in m.ALL_METRICS} == {"gauge", "counter", "summary"}
