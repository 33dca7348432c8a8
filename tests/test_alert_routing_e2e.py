"""End to end with the shipped timings: two failures and a ``kill -9`` in one stage each reach a
person within two minutes, the second and third too (they join a group that already fired).

Everything is as shipped: prometheus/prometheus.yml (15 s scrapes and evaluations), the rules
with their ``for:``, prometheus/alertmanager.yml (its routing and timings), and the exporter with
its default reaper. Only the targets point at 127.0.0.1 and a webhook receiver is added, so the
latencies measured are the ones production has. Real tracked processes: two raise, one is killed
with SIGKILL on this host (the exporter's host), which the reaper's pid check marks FAILED.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prom_helpers import (
    RULES_DIR,
    WebhookReceiver,
    free_port,
    running_alertmanager,
    running_exporter,
    running_prometheus,
    wait_for,
)

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "scripts"
PROMISE = 120.0  # seconds from a run's failure (or its process's death) to the person
RAISES = "import tracker\nwith tracker.run({task!r}):\n    raise RuntimeError('bad input')\n"


def shipped_prometheus(exporter: str, alertmanager: str, port: int) -> dict[str, Any]:
    """prometheus/prometheus.yml with its targets on 127.0.0.1 and the rules read in place."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    targets = {
        "pipetrack": exporter,
        "prometheus": f"127.0.0.1:{port}",
        "alertmanager": alertmanager,
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


def shipped_alertmanager(webhook_url: str) -> dict[str, Any]:
    """prometheus/alertmanager.yml with a webhook receiver that every route sends to."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "prometheus" / "alertmanager.yml").read_text())
    config["receivers"].append(
        {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
    )
    config["route"]["receiver"] = "webhook"
    for route in config["route"].get("routes", []):
        route["receiver"] = "webhook"
    return config


@contextmanager
def tracked(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A tracked child process (output to ``log``), killed and reaped however the test ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def fail_a_run(task: str, env: dict[str, str], db: Any, log: Path) -> float:
    """Run a tracked script that raises; returns when its run ended FAILED (Unix time)."""
    with tracked(["-c", RAISES.format(task=task)], env, log) as process:
        process.wait(timeout=120)
    assert process.returncode == 1, log.read_text()
    row = db.execute(
        "SELECT execution_status, extract(epoch FROM execution_end)::float8"
        " FROM pipeline_status WHERE task_name = %s",
        (task,),
    ).fetchone()
    assert row[0] == "FAILED"
    return float(row[1])


def test_two_failures_and_a_kill_in_one_stage_each_reach_the_webhook_within_two_minutes(
    db, db_dsn, tmp_path, record_property
):
    env = {
        **os.environ,
        "PIPETRACK_DSN": db_dsn,
        "PIPETRACK_DATA_DIR": str(tmp_path / "data"),
        "PIPETRACK_STRICT": "0",
    }
    env.pop("PIPETRACK_HEARTBEAT_INTERVAL", None)  # the shipped 15 s heartbeat
    first, second, killed = "DAILY_30_first", "DAILY_31_second", "DAILY_32_killed"
    happened: dict[str, float] = {}
    prometheus_port = free_port()
    with (
        # One item a minute: the run only heartbeats (every 15 s) while the test watches it.
        tracked(
            [str(SCRIPTS / "ops_steady_run.py"), killed, "5", "60"], env, tmp_path / "victim.log"
        ) as victim,
        WebhookReceiver() as webhook,
        running_alertmanager(
            tmp_path / "am", webhook.url, shipped_alertmanager(webhook.url)
        ) as alertmanager,
        running_exporter(db_dsn, tmp_path / "exporter.log") as exporter,
        running_prometheus(
            tmp_path / "prometheus",
            shipped_prometheus(exporter, alertmanager, prometheus_port),
            port=prometheus_port,
        ) as prometheus,
    ):
        wait_for(
            lambda: prometheus.query(f'pipetrack_task_running_runs{{task="{killed}"}} == 1'),
            timeout=90,
            what="the first scrape of the exporter",
        )

        def notified(task: str) -> float | None:
            return webhook.firing().get(("PipetrackRunFailed", task))

        happened[first] = fail_a_run(first, env, db, tmp_path / "first.log")
        wait_for(lambda: notified(first), timeout=PROMISE + 60, what=f"{first} notified")

        # The stage's group has fired: what follows joins it.
        happened[second] = fail_a_run(second, env, db, tmp_path / "second.log")
        # The reaper holds off while the database server is younger than --stale-after (a
        # restart); the suite's server may have started moments ago.
        wait_for(
            lambda: db.execute(
                "SELECT now() - pg_postmaster_start_time() > interval '65 seconds'"
            ).fetchone()[0],
            timeout=90,
            what="the database server to be older than the reaper's settling time",
        )
        happened[killed] = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)

        wait_for(
            lambda: notified(second) and notified(killed),
            timeout=PROMISE + 60,
            what=f"{second} and {killed} notified",
        )
        fired = webhook.firing()

    latency = {
        task: round(fired["PipetrackRunFailed", task] - at, 1) for task, at in happened.items()
    }
    record_property("alert_latency", json.dumps(latency))
    print("seconds from failure (or kill -9) to the webhook:", json.dumps(latency))
    assert all(0 < seconds <= PROMISE for seconds in latency.values()), latency

    # The killed run was judged by its pid on this host, well before PipetrackRunLost's 3 min.
    reason = db.execute(
        "SELECT error_message FROM pipeline_status WHERE task_name = %s", (killed,)
    ).fetchone()[0]
    assert f"on {socket.gethostname()} is gone" in reason, reason
    assert set(fired) == {("PipetrackRunFailed", task) for task in happened}
    # No flood: the stage's group sent at most one message per new failure, and no repeats.
    deliveries = webhook.notifications()
    groups = [delivery.payload["groupLabels"] for delivery in deliveries]
    assert groups, "nothing was delivered"
    assert all(g == {"alertname": "PipetrackRunFailed", "task_stage": "DAILY"} for g in groups)
    assert len(deliveries) <= len(happened), [
        (datetime.fromtimestamp(d.received_at).isoformat(), len(d.payload["alerts"]))
        for d in deliveries
    ]
