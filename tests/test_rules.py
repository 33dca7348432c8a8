"""Alert and recording rules: promtool accepts and unit-tests them, they follow the mixin
conventions, and every metric they or the dashboards use is one the exporter serves."""

from __future__ import annotations

import re
import subprocess

import yaml
from prometheus_client import CollectorRegistry

from tests.prom_helpers import (
    PROMETHEUS_SYNTHETIC,
    ROOT,
    RULES_DIR,
    dashboard_queries,
    metric_names_in,
    rules,
    seed_pipeline,
    variable_queries,
)

RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
SEVERITIES = {"critical", "warning", "info"}


def promtool() -> str:
    from tests.prom_helpers import require_program

    return require_program("promtool")


def alerts() -> list[dict[str, object]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    names = {str(rule["record"]) for rule in rules() if "record" in rule}
    # The per-task override is written by operators (pipetrack-windows.rules.yml shows how).
    return names | {"task:pipetrack_success_window_override_seconds"}


def documented_names() -> set[str]:
    """Metric names in docs/metrics.md's table, with _total for counters as served."""
    return set(re.findall(r"^\| `(pipetrack_[a-z_]+)` \|", METRICS_DOC.read_text(), re.M))


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used, over every rule, dashboard query and variable."""
    used: dict[str, set[str]] = {}
    sources = [(f"rule {r.get('alert') or r.get('record')}", str(r["expr"])) for r in rules()]
    sources += [(f"{board}: {title}", t["expr"]) for board, title, t in dashboard_queries("expr")]
    sources += [(f"{board}: variable", selector) for board, selector in variable_queries()]
    for where, expr in sources:
        for name in metric_names_in(expr):
            used.setdefault(name, set()).add(where)
    return used


def test_promtool_accepts_every_rule_file():
    files = sorted(str(p) for p in RULES_DIR.glob("*.yml"))
    result = subprocess.run(
        [promtool(), "check", "rules", *files], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass():
    assert RULE_TESTS
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not():
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                (fires if expected else quiet).add(check["alertname"])
                for alert in expected:
                    # a firing case checks labels and every annotation, not just presence
                    assert alert["exp_labels"]["severity"] in SEVERITIES
                    assert set(alert["exp_annotations"]) >= {
                        "summary",
                        "description",
                        "runbook_url",
                    }
    names = {str(a["alert"]) for a in alerts()}
    assert names - fires == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a must-not-fire test case"


def test_alerts_follow_the_monitoring_mixin_conventions():
    runbook = RUNBOOK.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    for alert in alerts():
        name = str(alert["alert"])
        assert re.fullmatch(r"Pipetrack(?:[A-Z][a-z]+)+", name), name
        labels = alert["labels"]
        annotations = alert["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in SEVERITIES, name
        assert annotations["summary"].endswith("."), name
        assert "{{" in annotations["description"], f"{name}: description is not templated"
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbook.md", name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbook.md has no section for {name}"


def test_every_metric_used_by_rules_and_dashboards_is_documented():
    allowed = documented_names() | {f"{n}_total" for n in documented_names()}
    allowed |= recorded_names() | PROMETHEUS_SYNTHETIC
    unknown = {name: sorted(where) for name, where in used_names().items() if name not in allowed}
    assert unknown == {}
    # counters are selected by their served name, with _total
    assert "pipetrack_task_runs_total" in used_names()


def test_the_metric_name_parser_finds_selectors_only():
    expr = (
        'sum by (task, status) (increase(pipetrack_task_runs_total{status="FAILED"}[$__range]))'
        " / on (task) group_left () task:pipetrack_eta_seconds > bool 0 or vector(1)"
    )
    assert metric_names_in(expr) == {"pipetrack_task_runs_total", "task:pipetrack_eta_seconds"}


def test_every_metric_used_by_rules_and_dashboards_is_served_by_the_exporter(db, db_target):
    from exporter import PipetrackCollector

    seed_pipeline(db)
    collector = PipetrackCollector(db_target)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        served = {sample.name for family in registry.collect() for sample in family.samples}
    finally:
        collector.close()
    allowed = served | recorded_names() | PROMETHEUS_SYNTHETIC
    unknown = {name: sorted(where) for name, where in used_names().items() if name not in allowed}
    assert unknown == {}
    # and the recording rules read only served metrics too
    for rule in rules():
        assert metric_names_in(str(rule["expr"])) <= allowed, rule


def test_the_stacks_prometheus_config_is_valid_and_loads_the_shipped_rules(tmp_path):
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    # In the stack the rules are mounted at /etc/prometheus/rules; here they are in the repo.
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool(), "check", "config", str(copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(list(RULES_DIR.glob('*.yml')))} rule files found" in result.stdout


def test_the_stacks_alertmanager_config_is_valid():
    from tests.prom_helpers import require_program

    amtool = require_program("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(ROOT / "prometheus" / "alertmanager.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
