"""The monitor's pages and /api twins over real HTTP: answers, headers, refusals, outages.

The browser tests (test_monitor_browser.py) check what the pages draw; these check what the
server answers, with the standard library's HTTP client.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
from urllib.parse import quote, urlsplit

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from exporter import ExporterServer, load_web_config
from monitor._app import exporter_pages
from monitor._web import CSP
from tests.monitor_support import (
    FAILED,
    HOSTILE,
    HOSTILE_RUN,
    RUNNING,
    seed_pipeline,
    served_monitor,
)
from tracker._db.dsn import DatabaseTarget
from tracker.cli import main

PAGES = [
    "/",
    "/now",
    "/now?stage=DAILY&status=RUNNING,FAILED&task=DAILY_*&since=7d&problems=1",
    f"/run/{RUNNING}",
    f"/run/{FAILED}",
    "/task/DAILY_01_extract",
    "/task/DAILY_01_extract?status=FINISHED&since=30d&until=2100-01-01&limit=5",
    "/dependencies",
    "/failures",
    "/failures?since=30d&outcome=FAILED,LOST",
]


def request(base, path, method="GET", headers=None):
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def api_of(path):
    return "/api/now" + path[1:] if path == "/" else "/api" + path


@pytest.fixture
def seeded_monitor(db, db_dsn):
    seed_pipeline(db)
    with served_monitor(db_dsn, jaeger="http://jaeger.example:16686") as base:
        yield base


@pytest.fixture
def empty_monitor(db_dsn):
    with served_monitor(db_dsn) as base:
        yield base


@pytest.mark.parametrize("path", PAGES)
def test_every_page_and_its_api_twin_answer_with_data_and_strict_headers(seeded_monitor, path):
    status, headers, body = request(seeded_monitor, path)
    assert status == 200, body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    page = body.decode()
    assert "<script>" not in page  # no inline script: data blocks and script files only
    embedded = re.search(r'<script type="application/json" id="payload">(.*?)</script>', page, re.S)
    status, headers, body = request(seeded_monitor, api_of(path))
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data.keys() == json.loads(embedded.group(1)).keys()  # the page embeds its twin
    assert json.dumps(data) != "{}"


@pytest.mark.parametrize("path", ["/now", "/dependencies", "/failures", "/task/NOPE"])
def test_every_page_and_api_answer_for_an_empty_database(empty_monitor, path):
    assert request(empty_monitor, path)[0] == 200
    assert request(empty_monitor, api_of(path))[0] == 200


def test_the_api_carries_the_views_figures(seeded_monitor):
    now = json.loads(request(seeded_monitor, "/api/now")[2])
    tasks = {t["task_name"]: t for s in now["stages"] for t in s["tasks"]}
    assert tasks["DAILY_01_extract"]["status"] == "RUNNING"
    assert tasks["PERIODIC_02_silent"]["status"] == "LOST"
    assert [s["stage"] for s in now["stages"]][:3] == ["STATIC", "PREREQ", "DAILY"]
    run = json.loads(request(seeded_monitor, f"/api/run/{RUNNING}")[2])
    assert run["trace_url"] == "http://jaeger.example:16686/trace/0123456789abcdef0123456789abcdef"
    assert run["run"]["environment"]["DB_PASSWORD"] == "****"
    assert run["samples"] == []
    graph = json.loads(request(seeded_monitor, "/api/dependencies")[2])
    assert graph["critical_path"][-1] == "DAILY_04_publish"


def test_hostile_text_is_escaped_in_the_html_it_is_embedded_in(seeded_monitor):
    for path in ("/now", f"/run/{HOSTILE_RUN}", "/task/" + quote("DAILY_09_" + HOSTILE, safe="")):
        status, _, body = request(seeded_monitor, path)
        assert status == 200
        page = body.decode()
        assert "<script>alert(1)" not in page
        assert "<img src=x" not in page
        assert "\\u003cscript\\u003ealert(1)" in page  # there, as JSON text
    status, _, body = request(
        seeded_monitor, "/now?task=" + quote("<script>alert(1)</script>", safe="")
    )
    assert status == 200
    assert "<script>alert(1)" not in body.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body.decode()  # the filter, escaped


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/now?stage=NIGHTLY", 400, "stage: unknown value"),
        ("/api/now?task=%00", 400, "NUL"),
        ("/api/now?since=soon", 400, "neither a time"),
        ("/api/now?task=%ff", 400, "codec"),
        ("/api/task/X?limit=99999", 400, "limit must be 1 to 1000"),
        ("/api/failures?outcome=FINISHED", 400, "outcome: unknown"),
        ("/api/now?" + "a=1&" * 100, 400, "Max number of fields"),
        ("/api/now?x=" + "y" * 5000, 400, "longer than 4096"),
        ("/api/run/not-a-uuid", 404, "not a run id"),
        (f"/api/run/{FAILED}".replace("a2", "b2"), 404, "no run"),
        ("/api/task/" + "x" * 300, 400, "longer than 255"),
    ],
)
def test_bad_requests_get_a_clear_json_answer(seeded_monitor, path, status, message):
    got, headers, body = request(seeded_monitor, path)
    assert got == status
    assert headers["Content-Security-Policy"] == CSP
    assert message in json.loads(body)["error"]


def test_an_error_page_is_html_and_escapes_the_message(seeded_monitor):
    status, headers, body = request(seeded_monitor, "/now?status=%3Cb%3E")
    assert status == 400
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&#39;&lt;B&gt;&#39;" in body.decode()


def test_there_is_no_write_endpoint_and_no_other_file(seeded_monitor):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert request(seeded_monitor, "/api/now", method)[0] == 501
    assert request(seeded_monitor, "/api/now", "HEAD")[0] == 200
    for path in ("/static/../_web.py", "/static/nope.js", "/metrics", "/now/x", "/api/run"):
        assert request(seeded_monitor, path)[0] == 404
    status, headers, _ = request(seeded_monitor, "/static/uPlot.iife.min.js")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_database_that_is_down_gets_503_saying_so_without_its_password(tmp_path):
    dsn = f"postgresql://u:sekrit-pw-4711@/db?host={tmp_path}&connect_timeout=1"
    with served_monitor(dsn) as base:
        status, _, body = request(base, "/api/now")
        assert status == 503
        error = json.loads(body)["error"]
        assert "cannot connect" in error
        assert "sekrit-pw-4711" not in error
        assert request(base, "/now")[0] == 503


def test_status_takes_the_now_pages_filters(db, db_dsn, capsys):
    seed_pipeline(db)
    assert main(["status", "--problems", "--dsn", db_dsn]) == 0
    out = capsys.readouterr().out
    shown = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line[:1] != " "}
    assert shown["PERIODIC_02_silent"] == "LOST"
    assert shown["ANNUAL_DEC_01_report"] == "OVERDUE"
    assert "DAILY_01_extract" not in shown
    assert "  ! overdue: missed its start at " in out
    assert (
        main(["status", "--json", "--task", "DAILY_0?_e*", "--status", "running", "--dsn", db_dsn])
        == 0
    )
    assert [r["task_name"] for r in json.loads(capsys.readouterr().out)] == ["DAILY_01_extract"]
    assert main(["status", "--stage", "NIGHTLY", "--dsn", db_dsn]) == 2
    assert "stage: unknown value(s) 'NIGHTLY'" in capsys.readouterr().err


def test_history_takes_the_task_historys_filters(db, db_dsn, capsys):
    seed_pipeline(db)
    args = ["history", "DAILY_01_extract", "--json", "--dsn", db_dsn]
    assert main([*args, "--status", "FINISHED", "--limit", "1"]) == 0
    assert [r["execution_status"] for r in json.loads(capsys.readouterr().out)] == ["FINISHED"]
    assert main([*args, "--since", "1h"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [str(RUNNING)]
    assert main([*args, "--until", "soon"]) == 2


def test_pipetrack_ui_serves_on_127_0_0_1_until_sigterm(db, db_dsn, tmp_path):
    seed_pipeline(db)
    child = subprocess.Popen(
        [sys.executable, "-m", "tracker", "ui", "--dsn", db_dsn, "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stderr.readline()
        assert line.startswith("pipetrack ui: serving http://127.0.0.1:"), line
        base = line.split()[3].rstrip("/")
        assert request(base, "/")[0] == 200
        assert request(base, "/api/now")[0] == 200
        assert request(base, "/metrics")[0] == 404
    finally:
        child.terminate()
        assert child.wait(timeout=60) == 0
        child.stderr.close()


def test_pipetrack_ui_refuses_a_bad_jaeger_url(db_dsn, capsys):
    assert main(["ui", "--dsn", db_dsn, "--jaeger-url", "javascript:alert(1)"]) == 2
    assert "must be an http:// or https:// address" in capsys.readouterr().err


def test_the_exporter_serves_the_pages_under_its_web_config(db, db_dsn, tmp_path):
    seed_pipeline(db)
    hashed = bcrypt.hashpw(b"monitor-pw-1", bcrypt.gensalt(4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    target = DatabaseTarget(conninfo=db_dsn, source="test")
    with exporter_pages(target) as routes:
        server = ExporterServer(
            CollectorRegistry(),
            host="127.0.0.1",
            port=0,
            web_config=load_web_config(config),
            routes=routes,
        )
        server.start()
        try:
            base = server.url.rstrip("/")
            assert request(base, "/now")[0] == 401
            auth = {"Authorization": "Basic " + base64.b64encode(b"alice:monitor-pw-1").decode()}
            status, _, landing = request(base, "/", headers=auth)
            assert status == 200
            assert b'<a href="now">Monitor</a>' in landing  # the exporter keeps its landing page
            for path in ("/now", "/api/now", f"/run/{RUNNING}", "/api/dependencies", "/metrics"):
                assert request(base, path, headers=auth)[0] == 200, path
        finally:
            server.shutdown()
