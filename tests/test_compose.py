"""docker-compose.yml: valid compose-spec, wired in the right order, nothing floating or secret,
every mounted file present, ports agreeing with the exporter; its SQL and demo work for real.

Docker does not run on the test machines, so the parts are exercised directly: the login-roles
script with psql against the test database, the demo pipeline against it as its writer login.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from psycopg.conninfo import make_conninfo

from tests.prom_helpers import ROOT, require_program
from tracker._db.migrate import sql_dir

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
LOGIN_ROLES = ROOT / "examples" / "stack" / "login_roles.sql"
ONE_SHOT = {"migrate", "db-roles"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
REQUIRED_VAR = re.compile(r"\$\{(\w+):\?[^}]+\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]  # type: ignore[no-any-return]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {key: str(value) for key, value in env.items()}


def test_compose_file_validates_against_the_compose_spec_schema():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_has_every_part():
    assert set(services()) == {
        "postgres",
        "migrate",
        "db-roles",
        "exporter",
        "prometheus",
        "alertmanager",
        "grafana",
        "jaeger",
        "demo",
    }
    assert services()["migrate"]["command"] == ["db", "upgrade"]


def test_images_are_pinned_to_a_version():
    for name, service in services().items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert tag != "latest", name
        assert re.search(r"\d", tag), f"{name}: {image} tag is not a version"


def test_depends_on_targets_exist_and_are_healthy_or_finished():
    all_services = services()
    for name, service in all_services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in all_services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in all_services[target], f"{name} -> {target}"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"
    # everything that reads or writes runs waits for the migrations, through db-roles
    for name in ("exporter", "grafana", "demo"):
        assert all_services[name]["depends_on"]["db-roles"] == {
            "condition": "service_completed_successfully"
        }
    assert all_services["db-roles"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart():
    for name, service in services().items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
        else:
            assert service["healthcheck"]["test"], name
            assert service["restart"] == "unless-stopped", name


def test_no_literal_secrets_every_secret_comes_from_the_environment():
    text = COMPOSE_FILE.read_text()
    for name, service in services().items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.fullmatch(value), f"{name}: {key} is not ${{VAR:?...}}"
        for argument in service.get("command", []):
            if SECRET_NAME.search(str(argument).split("=")[0]):
                assert REQUIRED_VAR.search(str(argument)), f"{name}: {argument}"
    grafana = environment(services()["grafana"])
    assert REQUIRED_VAR.fullmatch(grafana["GF_SECURITY_ADMIN_PASSWORD"])
    assert "password=" not in text.lower().replace("_password=", "")


def test_env_example_names_every_required_variable_without_values_for_secrets():
    required = set(REQUIRED_VAR.findall(COMPOSE_FILE.read_text()))
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example)
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example must not ship a value for {key}"


def test_every_mounted_file_exists_and_data_lives_in_named_volumes():
    spec = compose()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in spec["volumes"], f"{name}: undeclared volume {source}"
    for name in ("postgres", "prometheus", "alertmanager", "grafana"):
        sources = [v.split(":")[0] for v in services()[name]["volumes"]]
        assert any(not s.startswith(".") for s in sources), f"{name} keeps no named volume"


def test_ports_agree_with_the_exporters_default_and_prometheus_config():
    from exporter import DEFAULT_PORT

    exporter = services()["exporter"]
    assert exporter["command"] == ["exporter", "--listen", f":{DEFAULT_PORT}"]
    assert exporter["ports"] == [f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}"]
    assert f":{DEFAULT_PORT}/-/healthy" in " ".join(exporter["healthcheck"]["test"])
    prometheus = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["pipetrack"]["static_configs"][0]["targets"] == [f"exporter:{DEFAULT_PORT}"]
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    # the rules Prometheus loads are the files the repository ships
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in services()["prometheus"]["volumes"]
    assert "--web.enable-otlp-receiver" in services()["prometheus"]["command"]
    jaeger_ports = {p.rsplit(":", 1)[1] for p in services()["jaeger"]["ports"]}
    assert jaeger_ports == {"16686", "4317", "4318"}


def test_grafana_gets_every_variable_its_provisioning_uses():
    used = set(
        re.findall(
            r"\$\{(\w+)\}",
            (ROOT / "grafana" / "provisioning" / "datasources" / "pipetrack.yml").read_text(),
        )
    )
    assert used <= set(environment(services()["grafana"]))


@pytest.fixture
def stack_logins(db, db_dsn):
    """sql/roles.sql and the stack's login roles applied to the test database, twice."""
    psql = require_program("psql")
    passwords = {"exporter": "exp-pw", "grafana": "graf-pw", "demo": "demo-pw"}
    argv = [psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", f"--dbname={db_dsn}"]
    argv += [f"--set={who}_password={pw}" for who, pw in passwords.items()]
    argv += [f"--file={sql_dir() / 'roles.sql'}", f"--file={LOGIN_ROLES}"]
    for _ in range(2):  # idempotent: the roles are cluster-wide and outlive this database
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    return passwords


def test_login_roles_join_the_least_privilege_groups(db, stack_logins):
    rows = db.execute(
        "SELECT m.rolname, g.rolname, m.rolcanlogin FROM pg_auth_members a"
        " JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid"
        " WHERE m.rolname LIKE 'pipetrack\\_%' AND g.rolname LIKE 'pipetrack\\_%'"
    ).fetchall()
    assert {
        ("pipetrack_exporter", "pipetrack_reader", True),
        ("pipetrack_grafana", "pipetrack_reader", True),
        ("pipetrack_demo", "pipetrack_writer", True),
    } <= set(rows)
    from psycopg import errors

    db.execute("SET ROLE pipetrack_grafana")
    try:
        assert db.execute("SELECT count(*) FROM pipetrack.pipeline_runs").fetchone() == (0,)
        with pytest.raises(errors.InsufficientPrivilege):
            db.execute("DELETE FROM pipetrack.pipeline_status")
    finally:
        db.execute("RESET ROLE")


def test_demo_pipeline_runs_every_stage_through_the_tracker_as_the_writer_login(
    db, db_dsn, stack_logins, tmp_path
):
    dsn = make_conninfo(db_dsn, user="pipetrack_demo", password=stack_logins["demo"])
    env = {**os.environ, "PIPETRACK_DSN": dsn, "PIPETRACK_DATA_DIR": str(tmp_path)}
    alive = tmp_path / "alive"
    # the third pass is the one where DAILY_03_publish fails on purpose
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracker",
            "demo",
            "--first-pass",
            "3",
            "--pace",
            "0.001",
            "--alive-file",
            str(alive),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # the failure is the demo's
    assert alive.exists()
    assert "4 of 5 tasks finished" in result.stdout
    runs = dict(
        db.execute(
            "SELECT task_name, execution_status FROM pipeline_runs ORDER BY execution_start"
        ).fetchall()
    )
    assert runs == {
        "PREREQ_01_calendar": "FINISHED",
        "DAILY_01_extract": "FINISHED",
        "DAILY_02_transform": "FINISHED",
        "DAILY_03_publish": "FAILED",
        "PERIODIC_01_reindex": "FINISHED",
    }
    stages = dict(db.execute("SELECT task_name, task_stage FROM pipeline_runs").fetchall())
    assert stages["PERIODIC_01_reindex"] == "PERIODIC"
    subtasks = db.execute(
        "SELECT count(*) FILTER (WHERE subtask_status = 'COMPLETED'), count(*)"
        " FROM pipeline_subtask"
    ).fetchone()
    # 12 subtasks in all; the failing task's last one is FAILED
    assert subtasks == (11, 12)


def test_dockerfile_copies_what_exists_and_runs_the_pipetrack_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)
    assert base
    assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", base.group(1)), "base image pinned to a version"
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert source not in ignored, f"{source} is copied but .dockerignore drops it"
    assert 'ENTRYPOINT ["pipetrack"]' in dockerfile
    assert "USER 10001" in dockerfile  # never root at run time
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'pipetrack = "tracker.cli:run"' in pyproject
    # every service built from it runs a command the image has
    for name in ("migrate", "exporter", "demo"):
        assert services()[name]["image"] == "pipetrack:0.1.0"
    assert services()["demo"]["command"][0] == "demo"
    assert "entrypoint" not in services()["demo"]  # the image's: pipetrack


def test_demo_sends_traces_and_metrics_with_the_compose_otel_settings(
    db, db_dsn, stack_logins, tmp_path
):
    from tests.otlp_receiver import running_receiver

    otel = {k: v for k, v in environment(services()["demo"]).items() if k.startswith("OTEL_")}
    # Where they point in the stack: Jaeger's OTLP/HTTP port, Prometheus' OTLP receiver.
    assert otel["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://jaeger:4318/v1/traces"
    assert otel["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] == (
        "http://prometheus:9090/api/v1/otlp/v1/metrics"
    )
    dsn = make_conninfo(db_dsn, user="pipetrack_demo", password=stack_logins["demo"])
    with running_receiver() as receiver:
        otel["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{receiver.http_endpoint}/v1/traces"
        otel["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = f"{receiver.http_endpoint}/v1/metrics"
        env = {**os.environ, **otel, "PIPETRACK_DSN": dsn, "PIPETRACK_DATA_DIR": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "tracker", "demo", "--first-pass", "1", "--pace", "0.001"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        spans = receiver.collected.spans()
        points = receiver.collected.points()
    names = {span.name for span in spans}
    assert {"PREREQ_01_calendar", "DAILY_01_extract", "PERIODIC_01_reindex"} <= names
    assert {span.resource.get("service.name") for span in spans} == {"pipetrack-demo"}
    assert points, "no OpenTelemetry metrics arrived"
