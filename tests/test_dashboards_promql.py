"""Every PromQL expression of the dashboards and rules runs on a real Prometheus that scrapes the
real exporter over a seeded PostgreSQL: none errors, and each returns data."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from tests.fix_db import create_database, drop_database, dsn_for
from tests.prom_helpers import (
    RULES_DIR,
    Prometheus,
    dashboard_queries,
    insert_run,
    prometheus_config,
    rules,
    running_prometheus,
    seed_pipeline,
    variable_queries,
    wait_for,
)
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget

PROM_QUERIES = dashboard_queries("expr")
SCRAPE_INTERVAL = "1s"
# Grafana's variables, as Grafana would fill them for this Prometheus: $__rate_interval is at
# least four scrape intervals; $__range is the dashboard's time range.
VARIABLES = {
    "$__rate_interval": "10s",
    "$__range": "1h",
    "$__interval": SCRAPE_INTERVAL,
    "$stage": ".*",  # "All"
}
TASK = "PREREQ_01_calendar"  # has a running run and a finished history


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    expr = expr.replace("$task", TASK)
    assert "$" not in expr, expr
    return expr


@pytest.fixture(scope="module")
def prometheus(
    admin_dsn: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus scraping the exporter every second, with pipetrack's rules loaded."""
    from exporter import PipetrackCollector

    name = f"pipetrack_pq_{uuid.uuid4().hex[:12]}"
    create_database(admin_dsn, name, template=template_db)
    target = DatabaseTarget(conninfo=dsn_for(admin_dsn, name), source="test")
    collector = PipetrackCollector(target)
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with connect(target) as conn:
            seed_pipeline(conn)
            config = prometheus_config(
                scrape_targets=[f"127.0.0.1:{server.server_port}"],
                rule_files=sorted(RULES_DIR.glob("*.yml")),
                interval=SCRAPE_INTERVAL,
            )
            tmp = tmp_path_factory.mktemp("prometheus")
            with running_prometheus(Path(tmp), config) as prom:
                wait_for(
                    lambda: prom.query("task:pipetrack_success_window_seconds"),
                    timeout=30,
                    what="the exporter's series and the recording rules",
                )
                # A failure after the counters were first scraped, so increases show it.
                now = datetime.now(timezone.utc)
                insert_run(
                    conn,
                    "DAILY_02_transform",
                    "FAILED",
                    now - timedelta(seconds=30),
                    execution_end=now,
                    error_message="ValueError: bad row 18",
                )
                wait_for(
                    lambda: prom.query(
                        'increase(pipetrack_task_runs_total{status="FAILED"}[10s]) > 0'
                    ),
                    timeout=30,
                    what="the new failure to be scraped",
                )
                yield prom
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        collector.close()
        drop_database(admin_dsn, name)


@pytest.mark.parametrize(
    ("board", "title", "target"),
    PROM_QUERIES,
    ids=[f"{b}:{t}:{q['refId']}" for b, t, q in PROM_QUERIES],
)
def test_dashboard_expression_runs_and_returns_data(prometheus, board, title, target):
    expr = substitute(target["expr"])
    assert prometheus.query(expr), f"{board} / {title}: no data for {expr}"
    if target["range"]:
        end = time.time()
        series = prometheus.query_range(expr, end - 20, end, SCRAPE_INTERVAL)
        assert series, f"{board} / {title}: no range data for {expr}"


@pytest.mark.parametrize(("board", "selector"), variable_queries())
def test_dashboard_variable_lists_values(prometheus, board, selector):
    assert prometheus.query(selector), f"{board}: variable query {selector} lists nothing"


def test_every_rule_evaluates_without_error_and_records_data(prometheus):
    def evaluated() -> list[dict[str, object]]:
        loaded = prometheus.rules()
        ready = all(rule.get("lastEvaluation", "").startswith("20") for rule in loaded)
        return loaded if ready else []

    loaded = wait_for(evaluated, timeout=30, what="every rule to be evaluated")
    assert {rule["name"] for rule in loaded} == {
        str(rule.get("alert") or rule.get("record")) for rule in rules()
    }
    for rule in loaded:
        assert rule["health"] == "ok", rule
        if rule["type"] == "recording":
            assert prometheus.query(str(rule["name"])), f"{rule['name']} records nothing"


def test_the_seeded_failure_fires_its_alert_on_this_prometheus(prometheus):
    firing = wait_for(
        lambda: [a for a in prometheus.alerts() if a["state"] == "firing"],
        timeout=30,
        what="a firing alert",
    )
    names = {(a["labels"]["alertname"], a["labels"].get("task")) for a in firing}
    assert ("PipetrackRunFailed", "DAILY_02_transform") in names


def test_substitution_leaves_no_grafana_variable_behind():
    for _board, _title, target in PROM_QUERIES:
        assert not re.search(r"\$\w", substitute(target["expr"]))
