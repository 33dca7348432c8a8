"""`pipetrack demo`: the README's first command, on the embedded server, start to finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request


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
    assert "monitor: http://127.0.0.1:8480/ while `pipetrack ui` runs" in lines
    assert all(len(line) <= 80 for line in lines)


def test_demo_serve_keeps_the_monitor_up_with_the_pass_on_it(embedded_data_dir):
    env = {**os.environ, "PIPETRACK_DATA_DIR": str(embedded_data_dir)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracker",
            "demo",
            "--pace=0.001",
            "--serve",
            "--listen=127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = child.stdout.readline()
        assert first.startswith("monitor: http://127.0.0.1:"), child.stderr.read()
        url = first.split()[1]
        for line in child.stdout:  # the pass, the table, then the monitor stays up
            if line.startswith("monitor: serving"):
                break
        assert line == f"monitor: serving {url} until Ctrl-C\n"
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/now", timeout=30) as answer:  # noqa: S310
            data = json.load(answer)
        assert data["tasks"] == 5
        assert data["counts"] == {"FAILED": 1, "FINISHED": 4}
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
