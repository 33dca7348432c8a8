"""End to end: runs in PostgreSQL -> the real exporter process -> Prometheus with pipetrack's
rules -> Alertmanager -> a webhook. A scripted sequence of runs (one fails, one goes silent, one
stalls, one runs too long, one task is overdue) plus a broken exporter and a dead target must
each reach the webhook as its alert, and nothing else may; a new run of the failed task resolves
its alert.

The rules are the shipped ones except that every ``for:`` is cut to 2 s (rules_with_short_for);
scrapes and evaluations run every second. Thresholds of minutes and hours are met by writing
runs whose heartbeat, progress or success already lies that far back, so each condition begins
a few seconds into the test, at a moment the test knows; the time from there to the webhook is
recorded as the ``alert_latency`` user property (and printed).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from psycopg.conninfo import make_conninfo

from tests.prom_helpers import (
    WebhookReceiver,
    free_port,
    insert_run,
    prometheus_config,
    rules_with_short_for,
    running_alertmanager,
    running_exporter,
    running_prometheus,
    wait_for,
)

# Margins before each backdated condition begins: long enough for every process to start and
# scrape once, so a condition never begins before the pipeline that should see it exists.
LEAD = timedelta(seconds=12)
LOST_AFTER = timedelta(seconds=180)  # PipetrackRunLost
STALLED_AFTER = timedelta(seconds=1800)  # the exporter's --stall-after default
TOO_LONG_FLOOR = timedelta(seconds=300)  # PipetrackRunTooLong's five-minute floor
DAILY_WINDOW = timedelta(hours=26)  # PipetrackTaskNoRecentSuccess for DAILY


def test_each_scripted_failure_reaches_the_webhook_as_its_alert(
    db, db_dsn, tmp_path, record_property
):
    now = datetime.now(timezone.utc)
    began: dict[tuple[str, str], datetime] = {}

    # Runs first, so the exporter's very first scrape already sees them.
    failing = insert_run(db, "DAILY_10_fails", "RUNNING", now, last_update=now)
    insert_run(
        db,
        "DAILY_11_goes_silent",
        "RUNNING",
        now - LOST_AFTER,
        last_update=now - LOST_AFTER + LEAD,
        last_progress=now - LOST_AFTER + LEAD,
    )
    began["PipetrackRunLost", "DAILY_11_goes_silent"] = now + LEAD
    insert_run(
        db,
        "PERIODIC_10_stalls",
        "RUNNING",
        now - STALLED_AFTER - LEAD,
        last_update=now,
        last_progress=now - STALLED_AFTER + LEAD,
    )
    began["PipetrackRunStalled", "PERIODIC_10_stalls"] = now + LEAD
    for days in (1, 2, 3):
        start = now - timedelta(days=days)
        insert_run(
            db, "DAILY_12_slow", "FINISHED", start, execution_end=start + timedelta(seconds=20)
        )
    insert_run(db, "DAILY_12_slow", "RUNNING", now - TOO_LONG_FLOOR + LEAD, last_update=now)
    began["PipetrackRunTooLong", "DAILY_12_slow"] = now + LEAD
    ended = now - DAILY_WINDOW + LEAD
    insert_run(
        db, "DAILY_13_overdue", "FINISHED", ended - timedelta(minutes=5), execution_end=ended
    )
    began["PipetrackTaskNoRecentSuccess", "DAILY_13_overdue"] = now + LEAD
    # Healthy: must raise nothing.
    insert_run(db, "DAILY_14_healthy", "RUNNING", now, last_update=now, last_progress=now)
    start = now - timedelta(hours=2)
    insert_run(db, "PREREQ_10_done", "FINISHED", start, execution_end=start + timedelta(minutes=3))

    closed_port = free_port()  # nothing listens here: a dead scrape target, a dead database
    unreachable_dsn = make_conninfo(
        "",
        host="127.0.0.1",
        port=str(closed_port),
        dbname="nowhere",
        user="nobody",
        connect_timeout="1",
    )
    rules = rules_with_short_for(tmp_path / "rules", "2s")
    with (
        WebhookReceiver() as webhook,
        running_alertmanager(tmp_path / "am", webhook.url) as alertmanager,
        # No reaper: it would mark the silent run FAILED after 60 s, before PipetrackRunLost's
        # three minutes; this checks the alert that covers exporters that cannot reap.
        running_exporter(db_dsn, tmp_path / "exporter.log", "--reap-every", "0") as exporter,
        running_exporter(unreachable_dsn, tmp_path / "exporter-nodb.log") as blind_exporter,
    ):
        config = prometheus_config(
            scrape_targets=[exporter, blind_exporter, f"127.0.0.1:{closed_port}"],
            rule_files=rules,
            alertmanager=alertmanager,
            interval="1s",
        )
        with running_prometheus(tmp_path / "prometheus", config) as prometheus:
            targets_seen = datetime.now(timezone.utc)
            wait_for(
                lambda: prometheus.query('pipetrack_task_running_runs{task="DAILY_10_fails"} == 1'),
                timeout=30,
                what="the exporter's first scrape",
            )
            # The exporter down and the database unreachable from the first scrape on.
            began["PipetrackExporterDown", ""] = targets_seen
            began["PipetrackDatabaseUnreachable", ""] = targets_seen

            failed_at = datetime.now(timezone.utc)
            db.execute(
                "UPDATE pipeline_status SET execution_status = 'FAILED', execution_end = %s,"
                " error_message = 'KeyError: column x', exit_code = 1, seq = seq + 1"
                " WHERE run_id = %s",
                (failed_at, failing),
            )
            began["PipetrackRunFailed", "DAILY_10_fails"] = failed_at

            def all_arrived() -> dict[tuple[str, str], float] | None:
                seen = webhook.firing()
                return seen if set(began) <= set(seen) else None

            arrived = wait_for(
                all_arrived,
                timeout=90,
                what=f"alerts {sorted(began)} at the webhook",
            )

            # The task runs again: its failure alert resolves.
            insert_run(db, "DAILY_10_fails", "RUNNING", datetime.now(timezone.utc))
            wait_for(
                lambda: ("PipetrackRunFailed", "DAILY_10_fails") in webhook.resolved(),
                timeout=60,
                what="PipetrackRunFailed to resolve once the task runs again",
            )

    fired = set(webhook.firing())  # over the whole test, resolution included
    assert fired == set(began), "an alert fired that no scripted failure explains"
    latency = {
        f"{name}{' ' + task if task else ''}": round(
            arrived[name, task] - began[name, task].timestamp(), 1
        )
        for name, task in sorted(began)
    }
    record_property("alert_latency", json.dumps(latency))
    print("alert latency after the condition began (s):", json.dumps(latency, indent=1))
    # Each arrives after its condition began (never before: the condition is what fires it).
    assert all(seconds > 0 for seconds in latency.values()), latency

    failed = webhook.alert("PipetrackRunFailed", "DAILY_10_fails")
    assert failed["labels"]["severity"] == "warning"
    assert failed["labels"]["task_stage"] == "DAILY"
    assert failed["annotations"]["runbook_url"] == "docs/runbook.md#pipetrackrunfailed"
    assert "DAILY_10_fails" in failed["annotations"]["description"]
    lost = webhook.alert("PipetrackRunLost", "DAILY_11_goes_silent")
    assert "heartbeat" in lost["annotations"]["description"]
    down = webhook.alert("PipetrackExporterDown")
    assert down["labels"]["instance"] == f"127.0.0.1:{closed_port}"
    blind = webhook.alert("PipetrackDatabaseUnreachable")
    assert blind["labels"]["severity"] == "critical"
    assert blind["labels"]["instance"] == blind_exporter
