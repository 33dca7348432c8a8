"""Grafana dashboards and provisioning: generated, uniquely named, every panel with a data
source, unit and description, rates over $__rate_interval, trace ids linked to Jaeger."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.prom_helpers import ROOT, dashboard_queries, dashboards, panels

PROVISIONING = ROOT / "grafana" / "provisioning"
RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|delta|idelta|\w+_over_time)\s*\(")
RANGE_SELECTOR = re.compile(r"\[([^\]]+)\]")


def datasources() -> dict[str, dict[str, object]]:
    config = yaml.safe_load((PROVISIONING / "datasources" / "pipetrack.yml").read_text())
    return {ds["uid"]: ds for ds in config["datasources"]}


def test_the_dashboard_json_is_what_the_generator_makes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_the_four_daily_dashboards_with_unique_uids_and_titles():
    boards = dashboards()
    uids = [board["uid"] for board in boards.values()]
    titles = [board["title"] for board in boards.values()]
    assert len(set(uids)) == len(uids) == 4
    assert len(set(titles)) == len(titles)
    assert set(uids) == {
        "pipetrack-overview",
        "pipetrack-task",
        "pipetrack-stages",
        "pipetrack-failures",
    }
    for board in boards.values():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids), board["uid"]


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_panel_has_a_data_source_unit_and_description(name):
    board = dashboards()[name]
    for panel in panels(board):
        title = panel["title"]
        assert panel["datasource"]["uid"] in {"${datasource}", "${postgres}"}, title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert len(panel["description"]) > 20, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_board_has_data_source_variables_pointing_at_the_provisioned_uids(name):
    variables = {v["name"]: v for v in dashboards()[name]["templating"]["list"]}
    provisioned = datasources()
    for variable_name, plugin in (
        ("datasource", "prometheus"),
        ("postgres", "grafana-postgresql-datasource"),
    ):
        variable = variables[variable_name]
        assert variable["type"] == "datasource"
        assert variable["query"] == plugin
        uid = variable["current"]["value"]
        assert provisioned[uid]["type"] == plugin


def test_rates_and_increases_use_grafana_intervals_not_fixed_windows():
    checked = 0
    for _board, title, target in dashboard_queries("expr"):
        expr = target["expr"]
        if not RANGE_FUNCTIONS.search(expr):
            continue
        checked += 1
        windows = set(RANGE_SELECTOR.findall(expr))
        # over time: $__rate_interval; "in the time range" tables: the whole range
        allowed = {"$__range"} if target.get("instant") else {"$__rate_interval"}
        assert windows <= allowed, f"{title}: {expr}"
    assert checked >= 5


def test_the_task_detail_board_is_driven_by_a_task_variable():
    board = dashboards()["pipetrack-task-detail.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["task"]["type"] == "query"
    assert not variables["task"]["multi"]
    for _panel_title, target in ((p["title"], t) for p in panels(board) for t in p["targets"]):
        query = target.get("expr") or target["rawSql"]
        assert "$task" in query


def test_trace_ids_link_to_jaeger_and_task_names_to_the_task_board():
    for name, board in dashboards().items():
        for panel in panels(board):
            queries = " ".join(t.get("rawSql", "") for t in panel["targets"])
            overrides = {
                o["matcher"]["options"]: o["properties"] for o in panel["fieldConfig"]["overrides"]
            }
            if "trace_id AS trace" in queries:
                links = next(p["value"] for p in overrides["trace"] if p["id"] == "links")
                assert links[0]["url"] == "${jaeger_url}/trace/${__value.raw}", (name, panel)
            if "task" in overrides and any(p["id"] == "links" for p in overrides["task"]):
                links = next(p["value"] for p in overrides["task"] if p["id"] == "links")
                assert links[0]["url"].startswith("/d/pipetrack-task/"), (name, panel)


def test_postgres_data_source_is_read_only_and_takes_its_password_from_the_environment():
    postgres = datasources()["pipetrack-postgres"]
    assert postgres["secureJsonData"] == {"password": "${PIPETRACK_GRAFANA_DB_PASSWORD}"}
    assert str(postgres["user"]).startswith("${")
    assert datasources()["pipetrack-jaeger"]["type"] == "jaeger"
    assert datasources()["pipetrack-prometheus"]["type"] == "prometheus"
    # no literal secret anywhere in provisioning
    for path in PROVISIONING.rglob("*.yml"):
        for line in path.read_text().splitlines():
            if re.search(r"password\s*:", line, re.IGNORECASE):
                assert "${" in line, f"{path}: {line}"


def test_the_dashboard_provider_loads_files_from_the_folder_compose_mounts():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "pipetrack.yml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{only['options']['path']}:ro" in mounts
