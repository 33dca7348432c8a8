"""`pipetrack demo`: the README's first command, on the embedded server, start to finish."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_demo_tracks_a_multi_stage_pipeline_on_the_embedded_server_and_shows_it(
    embedded_data_dir,
):
    env = {**os.environ, "PIPETRACK_DATA_DIR": str(embedded_data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "tracker", "demo", "--pace", "0.001"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TASK", "STATUS", "OVERALL", "ELAPSED", "ETA", "HOST"]
    table = {line.split()[0]: line.split()[1:3] for line in lines[1:] if line[:1].isupper()}
    assert table == {
        "DAILY_01_extract": ["FINISHED", "100.0%"],
        "DAILY_02_transform": ["FINISHED", "100.0%"],
        "DAILY_03_publish": ["FAILED", "50.0%"],
        "PERIODIC_01_reindex": ["FINISHED", "100.0%"],
        "PREREQ_01_calendar": ["FINISHED", "100.0%"],
    }
    assert "DemoFailure: DAILY_03_publish: upload target refused the report" in result.stdout
    assert "4 of 5 tasks finished" in result.stdout
    assert all(len(line) <= 80 for line in lines)
