"""What the served /metrics looks like to outside tools: ``promtool check metrics`` finds nothing
to lint (types, suffixes, the summary's quantile label), metric names follow the suffix
conventions, and no label value carries a control or bidi character a terminal would obey."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

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
# C0 controls, DEL, C1 controls, and the bidi marks, embeddings, overrides and isolates.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HOSTILE = {
    "DAILY_20_esc\x1b[2J\x1b]52;c;cHduZWQ=\x07": "DAILY_20_esc\u241b[2J\u241b]52;c;cHduZWQ=\u2407",
    "DAILY_21_bell\x07\x07": "DAILY_21_bell\u2407\u2407",
    "DAILY_22_csi\x9b31m": "DAILY_22_csi\\\\x9b31m",  # as served: the backslash escaped
    "DAILY_23_rlo\u202etxt.exe": "DAILY_23_rlo\\\\u202etxt.exe",
}


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
    assert re.search(r"(?m)^pipetrack_task_tcp_receive_bytes_per_second\{", text)
    assert re.search(
        r'(?m)^pipetrack_task_last_ended_run_work_counted\{count="rows_written",', text
    )
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


@pytest.mark.parametrize("accept", [TEXT_ACCEPT, OPENMETRICS_ACCEPT])
def test_control_and_bidi_characters_in_names_are_served_as_visible_stand_ins(
    db, db_dsn, tmp_path, accept
):
    now = datetime.now(timezone.utc)
    for name in HOSTILE:
        start = now - timedelta(hours=1)
        insert_run(db, name, "FINISHED", start, execution_end=start + timedelta(seconds=30))
        insert_run(db, name, "RUNNING", now, last_update=now, task_stage="DAILY\x1b[0m\x9b\u2067")
    with running_exporter(db_dsn, tmp_path / "exporter.log") as address:
        text = scrape(address, accept)
    # Nothing a terminal obeys, anywhere in the body, but the line ends.
    unsafe = sorted({f"U+{ord(c):04X}" for c in UNSAFE.findall(text.replace("\n", ""))})
    assert unsafe == []
    for shown in HOSTILE.values():
        assert f'task="{shown}"' in text
    assert 'task_stage="DAILY\u241b[0m\\\\x9b\\\\u2067"' in text
