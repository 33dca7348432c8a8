"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes the exporter, over plain HTTP and
over TLS with basic auth, and PromQL through its HTTP API returns the expected series."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from exporter import ExporterServer, PipetrackCollector, load_web_config
from tests.prom_helpers import prometheus_config, require_program, running_prometheus, wait_for
from tests.test_exporter_server import pki  # noqa: F401  (the certificate fixture)
from tests.test_exporter_support import T0, finish_run, insert_run

pytestmark = pytest.mark.timeout(180)


@contextmanager
def exporter_for(target, web_config=None):
    registry = CollectorRegistry()
    collector = PipetrackCollector(target)
    registry.register(collector)
    server = ExporterServer(registry, host="127.0.0.1", port=0, web_config=web_config)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        collector.close()


def seed(db):
    run = insert_run(db, task_name="DAILY_prom", execution_start=T0)
    finish_run(db, run, "FAILED", T0 + timedelta(seconds=42))
    insert_run(db, task_name='PREREQ_"odd"\nname', task_stage=None, overall_percent_complete=60)


def test_prometheus_scrapes_the_exporter_and_promql_sees_the_series(db, db_target, tmp_path):
    require_program("prometheus")
    seed(db)
    with exporter_for(db_target) as server:
        config = prometheus_config(
            scrape_targets=[f"127.0.0.1:{server.port}"], rule_files=[], interval="1s"
        )
        with running_prometheus(tmp_path / "prom", config) as prom:
            result = wait_for(
                lambda: prom.query('pipetrack_task_last_run_status{status="FAILED"} == 1'),
                timeout=60,
                what="the exporter's series in Prometheus",
            )
            (series,) = result
            assert series["metric"]["task"] == "DAILY_prom"
            assert series["metric"]["task_stage"] == "DAILY"
            assert series["metric"]["job"] == "pipetrack"

            (failed,) = prom.query('pipetrack_task_runs_total{task="DAILY_prom",status="FAILED"}')
            assert float(failed["value"][1]) == 1
            (duration,) = prom.query("pipetrack_task_last_duration_seconds")
            assert float(duration["value"][1]) == 42
            (progress,) = prom.query("pipetrack_task_overall_progress_ratio")
            assert progress["metric"]["task"] == 'PREREQ_"odd"\nname'
            assert progress["metric"]["task_stage"] == "UNKNOWN"
            assert float(progress["value"][1]) == 0.6
            (up,) = prom.query("pipetrack_database_up")
            assert float(up["value"][1]) == 1
            (target_up,) = prom.query('up{job="pipetrack"}')
            assert float(target_up["value"][1]) == 1


def test_prometheus_scrapes_over_tls_with_basic_auth(db, db_target, tmp_path, pki):  # noqa: F811
    require_program("prometheus")
    seed(db)
    password = "prometheus-scrape-pass"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki / 'server.crt'}\n  key_file: {pki / 'server.key'}\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
    )
    with exporter_for(db_target, load_web_config(web)) as server:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [],
            "scrape_configs": [
                {
                    "job_name": "pipetrack",
                    "scrape_timeout": "1s",
                    "scheme": "https",
                    "tls_config": {"ca_file": str(pki / "ca.crt")},
                    "basic_auth": {"username": "prometheus", "password": password},
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                },
                {
                    "job_name": "wrong-password",
                    "scrape_timeout": "1s",
                    "scheme": "https",
                    "tls_config": {"ca_file": str(pki / "ca.crt")},
                    "basic_auth": {"username": "prometheus", "password": "nope"},
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                },
            ],
        }
        with running_prometheus(tmp_path / "prom", config) as prom:
            wait_for(
                lambda: prom.query('pipetrack_database_up{job="pipetrack"} == 1'),
                timeout=60,
                what="a scrape over TLS with basic auth",
            )
            (wrong,) = wait_for(
                lambda: prom.query('up{job="wrong-password"}'),
                timeout=60,
                what="the wrong-password job's first scrape",
            )
            assert float(wrong["value"][1]) == 0
