"""Real Prometheus, Alertmanager and a webhook receiver on free localhost ports, for tests.

Each is a context manager that starts the program (Debian's /usr/bin/prometheus,
/usr/bin/prometheus-alertmanager) with a generated configuration in a temporary folder, waits
until it answers, and stops it on exit. Absent programs skip the test, or fail it when
PIPETRACK_REQUIRE_PROMETHEUS=1 (CI installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracker._model.stage import stage_of

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "prometheus" / "rules"
REQUIRE_VAR = "PIPETRACK_REQUIRE_PROMETHEUS"
START_TIMEOUT = 30.0


def require_program(name: str) -> str:
    """The path of ``name``; skips the test when it is absent (fails when CI requires it)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)  # a poll interval, not a wait for something to happen


def http_json(url: str, *, data: bytes | None = None, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, data=data)  # noqa: S310 - always http://127.0.0.1
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.load(response)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def _daemon(argv: list[str], ready_url: str, log: Path, what: str) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()}")
                return _answers(ready_url)

            wait_for(ready, timeout=START_TIMEOUT, what=f"{what} to be ready")
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# --- Prometheus ---------------------------------------------------------------------------------


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    rule_files: list[Path] = field(default_factory=list)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; raises AssertionError with Prometheus' error when it fails."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._api("query", params)["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step}
        return self._api("query_range", params)["result"]  # type: ignore[no-any-return]

    def rules(self) -> list[dict[str, Any]]:
        groups = self._api("rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return self._api("alerts", {})["alerts"]  # type: ignore[no-any-return]

    def _api(self, endpoint: str, params: dict[str, str]) -> Any:
        url = f"{self.url}/api/v1/{endpoint}"
        data = urllib.parse.urlencode(params).encode() if params else None
        try:
            body = http_json(url, data=data)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise AssertionError(f"Prometheus rejected {params}: {detail}") from None
        assert body["status"] == "success", body
        return body["data"]


def prometheus_config(
    *,
    scrape_targets: list[str],
    rule_files: list[Path],
    alertmanager: str | None = None,
    interval: str = "1s",
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "pipetrack",
                "scrape_timeout": interval,
                "static_configs": [{"targets": scrape_targets}],
            }
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


@contextmanager
def running_prometheus(
    tmp: Path, config: dict[str, Any], port: int | None = None
) -> Iterator[Prometheus]:
    """Prometheus with ``config`` on 127.0.0.1:``port`` (a free port unless given)."""
    binary = require_program("prometheus")
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config_file = tmp / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # Alerts link back to this URL; keep it local.
        f"--web.external-url=http://127.0.0.1:{port}/",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    with _daemon(argv, f"{url}/-/ready", tmp / "prometheus.log", "prometheus"):
        yield Prometheus(url=url, rule_files=[Path(p) for p in config["rule_files"]])


def rules_with_short_for(target_dir: Path, for_duration: str) -> list[Path]:
    """Copies of pipetrack's rule files with every ``for:`` shortened, for end-to-end tests.

    The expressions and thresholds stay as shipped; only the time a condition must hold before
    the alert fires shrinks, so a test need not wait the minutes production does.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        text = re.sub(r"(?m)^(\s+for:\s*)\S+", rf"\g<1>{for_duration}", path.read_text())
        copy = target_dir / path.name
        copy.write_text(text, encoding="utf-8")
        copies.append(copy)
    return copies


# --- Alertmanager and a webhook receiver --------------------------------------------------------


@dataclass
class Delivery:
    received_at: float  # time.time() when the webhook got it
    payload: dict[str, Any]


class WebhookReceiver:
    """A tiny HTTP server collecting Alertmanager's webhook notifications."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length))
                with receiver._lock:
                    receiver.deliveries.append(Delivery(time.time(), payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep the test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def notifications(self) -> list[Delivery]:
        """Every notification received so far, in order."""
        with self._lock:
            return list(self.deliveries)

    def firing(self) -> dict[tuple[str, str], float]:
        """(alertname, task or "") -> when a firing notification of it first arrived."""
        return self._first("firing")

    def resolved(self) -> dict[tuple[str, str], float]:
        """(alertname, task or "") -> when a resolved notification of it first arrived."""
        return self._first("resolved")

    def _first(self, status: str) -> dict[tuple[str, str], float]:
        first: dict[tuple[str, str], float] = {}
        with self._lock:
            deliveries = list(self.deliveries)
        for delivery in deliveries:
            for alert in delivery.payload.get("alerts", []):
                if alert.get("status") != status:
                    continue
                labels = alert["labels"]
                key = (labels["alertname"], labels.get("task", ""))
                first.setdefault(key, delivery.received_at)
        return first

    def alert(self, alertname: str, task: str = "") -> dict[str, Any]:
        with self._lock:
            deliveries = list(self.deliveries)
        for delivery in deliveries:
            for alert in delivery.payload.get("alerts", []):
                labels = alert["labels"]
                if labels["alertname"] == alertname and labels.get("task", "") == task:
                    return alert  # type: ignore[no-any-return]
        raise KeyError((alertname, task))


@contextmanager
def running_alertmanager(
    tmp: Path, webhook_url: str, config: dict[str, Any] | None = None
) -> Iterator[str]:
    """Alertmanager sending every alert at once to ``webhook_url``; yields its host:port.

    With ``config``, Alertmanager runs that configuration instead (its receivers are the
    caller's to point at ``webhook_url``).
    """
    binary = require_program("prometheus-alertmanager")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = config or {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "task"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "test",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        ],
    }
    config_file = tmp / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # a single instance: no gossip port
        "--log.level=warn",
    ]
    with _daemon(argv, f"http://127.0.0.1:{port}/-/ready", tmp / "am.log", "alertmanager"):
        yield f"127.0.0.1:{port}"


# --- runs written straight into the canonical record --------------------------------------------


def insert_run(conn: Any, task: str, status: str, start: Any, **columns: Any) -> str:
    """Insert one run of ``task`` as the tracker's writer would leave it; returns its run_id.

    ``columns`` are further pipeline_status columns (execution_end, last_update, ...).
    """
    import uuid

    from psycopg import sql

    row: dict[str, Any] = {
        "run_id": uuid.uuid4(),
        "task_name": task,
        "task_stage": stage_of(task),
        "task_type": "python",
        "hostname": "batch-01",
        "process_id": 4242,
        "user_name": "etl",
        "execution_start": start,
        "execution_status": status,
        "last_update": columns.pop("last_update", columns.get("execution_end", start)),
        "trace_id": uuid.uuid4().hex,
        **columns,
    }
    query = sql.SQL("INSERT INTO pipeline_status ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    conn.execute(query, list(row.values()))
    return str(row["run_id"])


def insert_subtask(
    conn: Any, run_id: str, index: int, name: str, *, status: str, started: Any, ended: Any = None
) -> None:
    """One subtask row; an ended one has the totals (sql/0010) its step would have used."""
    conn.execute(
        "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
        " started_at, ended_at, items_total, items_complete, cpu_seconds, peak_rss_bytes,"
        " disk_read_bytes, disk_write_bytes, tcp_received_bytes, tcp_sent_bytes, counts)"
        " VALUES (%s, %s, %s, %s, %s, %s, 10, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            index,
            name,
            status,
            started,
            ended,
            10 if ended else 4,
            *((1.5 * index, index * 2**27, index * 2**20, index * 2**21, 2**22, 2**12) if ended
              else (None,) * 6),
            json.dumps({"rows": 1000 * index}) if ended else None,
        ),
    )  # fmt: skip


def insert_samples(conn: Any, run_id: str, start: Any, minutes: int, step: float = 60.0) -> None:
    """A run's resource samples (sql/0010), one every ``step`` seconds: a download in the first
    half, writes in the second; cumulative figures, as the sampler records them."""
    from datetime import timedelta

    for minute in range(minutes + 1):
        downloaded = min(minute, minutes // 2) * 2**23
        written = max(0, minute - minutes // 2) * 2**24
        conn.execute(
            "INSERT INTO pipeline_run_sample (run_id, sampled_at, subtask_index, processes,"
            " rss_bytes, cpu_percent, cpu_seconds, disk_read_bytes, disk_write_bytes,"
            " tcp_received_bytes, tcp_sent_bytes, db_connections, other_connections, open_fds)"
            " VALUES (%s, %s, %s, 2, %s, 50, %s, %s, %s, %s, %s, 1, %s, 12)",
            (
                run_id,
                start + timedelta(seconds=step * minute),
                1 + minute * 3 // (minutes + 1),
                (200 + minute) * 2**20,
                30.0 * minute,
                minute * 2**20,
                written,
                downloaded,
                minute * 2**10,
                1 if minute <= minutes // 2 else 0,
            ),
        )


def seed_pipeline(conn: Any) -> dict[str, str]:
    """A small but complete history: every metric the exporter serves has a series afterwards.

    Returns what each notable task is for: running, failed, lost, stalled, overdue, ...
    """
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    minute, day = timedelta(minutes=1), timedelta(days=1)

    def finished(task: str, start: datetime, seconds: float, steps: tuple[str, ...] = ()) -> None:
        end = start + timedelta(seconds=seconds)
        run = insert_run(
            conn,
            task,
            "FINISHED",
            start,
            execution_end=end,
            git_commit="3f2c1ab",
            exit_code=0,
            total_subtasks=len(steps) or None,
            peak_memory_mb=180,
            cpu_seconds=seconds / 2,
            disk_read_bytes=2**26,
            disk_write_bytes=int(seconds) * 2**20,
            tcp_received_bytes=2**25,
            tcp_sent_bytes=2**14,
            counts=json.dumps({"rows_written": int(seconds) * 100, "files": len(steps)}),
        )
        insert_samples(conn, run, start, 6, step=seconds / 6)
        for index, name in enumerate(steps, start=1):
            share = seconds / len(steps)
            insert_subtask(
                conn,
                run,
                index,
                name,
                status="COMPLETED",
                started=start + timedelta(seconds=share * (index - 1)),
                ended=start + timedelta(seconds=share * index),
            )

    steps = ("download", "parse", "load")
    for days in range(1, 6):
        finished("DAILY_01_extract", now - days * day - 60 * minute, 90 + days * 5, steps)
    failed_start = now - 3 * day - 30 * minute
    failed = insert_run(
        conn,
        "DAILY_01_extract",
        "FAILED",
        failed_start,
        execution_end=failed_start + 40 * timedelta(seconds=1),
        exit_code=1,
        error_message="UniqueViolation: duplicate key value\nTraceback (most recent call last):",
        subtask_name="load",
    )
    insert_subtask(
        conn,
        failed,
        1,
        "download",
        status="COMPLETED",
        started=failed_start,
        ended=failed_start + 20 * timedelta(seconds=1),
    )
    insert_subtask(
        conn,
        failed,
        2,
        "load",
        status="FAILED",
        started=failed_start + 20 * timedelta(seconds=1),
        ended=failed_start + 40 * timedelta(seconds=1),
    )

    for days in (2, 3):
        finished("DAILY_02_transform", now - days * day, 300, ("read", "write"))
    start = now - 2 * 60 * minute
    insert_run(
        conn,
        "DAILY_02_transform",
        "FAILED",
        start,
        execution_end=start + 5 * minute,
        exit_code=1,
        error_message="ValueError: bad row 17\nTraceback (most recent call last):",
    )

    for days in (1, 2, 3):
        finished("PREREQ_01_calendar", now - days * day, 60, ("fetch", "merge", "load", "index"))
    start = now - 10 * minute
    running = insert_run(
        conn,
        "PREREQ_01_calendar",
        "RUNNING",
        start,
        last_update=now,
        last_progress=now - timedelta(seconds=5),
        total_subtasks=4,
        current_subtask=3,
        subtask_name="load",
        subtask_status="RUNNING",
        overall_percent_complete=55,
        subtask_percent_complete=20,
        subtask_items_total=10,
        subtask_items_complete=2,
        memory_mb=300,
        peak_memory_mb=320,
        cpu_percent=50,
        overall_progress_message="loading",
    )
    insert_subtask(
        conn, running, 1, "fetch", status="COMPLETED", started=start, ended=start + 3 * minute
    )
    insert_subtask(
        conn,
        running,
        2,
        "merge",
        status="COMPLETED",
        started=start + 3 * minute,
        ended=start + 6 * minute,
    )
    insert_subtask(conn, running, 3, "load", status="RUNNING", started=start + 6 * minute)
    insert_samples(conn, running, start, 10)

    insert_run(
        conn,
        "DAILY_03_silent",
        "RUNNING",
        now - 30 * minute,
        last_update=now - 10 * minute,
        last_progress=now - 10 * minute,
        overall_percent_complete=10,
        total_subtasks=5,
        current_subtask=1,
    )
    insert_run(
        conn,
        "PERIODIC_01_weekly",
        "RUNNING",
        now - 180 * minute,
        last_update=now,
        last_progress=now - 120 * minute,
        overall_percent_complete=40,
        total_subtasks=5,
        current_subtask=2,
    )
    finished("ANNUAL_DEC_01_report", now - 400 * day, 7200)
    finished("STATIC_01_lookup", now - 30 * day, 20)
    start = now - day
    insert_run(
        conn,
        "DAILY_04_cleanup",
        "CANCELLED",
        start,
        execution_end=start + minute,
        error_message="cancelled by SIGTERM",
    )
    # Declared tasks: schedules (one missed: the weekly job has not run since Monday, declared
    # long ago), limits, and a dependency the daily extract started before.
    from tracker._ops import registry

    registry.sync(
        conn,
        [
            registry.DeclaredTask(
                name="PREREQ_01_calendar", stage="PREREQ", schedule="*/15 * * * *"
            ),
            registry.DeclaredTask(
                name="DAILY_01_extract",
                stage="DAILY",
                schedule="0 3 * * *",
                max_duration=timedelta(hours=1),
                depends_on=("PREREQ_01_calendar",),
            ),
            registry.DeclaredTask(
                name="PERIODIC_01_weekly",
                stage="PERIODIC",
                schedule="0 * * * *",
                start_grace=timedelta(minutes=1),
                stall_after=timedelta(hours=1),
            ),
        ],
    )
    conn.execute("UPDATE pipeline_task_schedule SET synced_at = now() - interval '30 days'")
    return {
        "finished": "DAILY_01_extract",
        "failed": "DAILY_02_transform",
        "running": "PREREQ_01_calendar",
        "lost": "DAILY_03_silent",
        "stalled": "PERIODIC_01_weekly",
        "overdue": "ANNUAL_DEC_01_report",
        "static": "STATIC_01_lookup",
        "cancelled": "DAILY_04_cleanup",
    }


# --- metric names in PromQL ---------------------------------------------------------------------

_PROMQL_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ]
)
# Series Prometheus makes itself, not the exporter.
PROMETHEUS_SYNTHETIC = frozenset({"up", "ALERTS"})


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    # label lists after by/without/on/ignoring/group_left/group_right
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, is_call = match.group(1), match.group(2)
        if is_call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


# --- what the dashboards and rules contain ------------------------------------------------------

DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel of a board that shows data (rows are containers)."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(board file, panel title, target) of every Prometheus ("expr") or SQL ("rawSql") query."""
    return [
        (name, panel["title"], target)
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel.get("targets", [])
        if kind in target
    ]


def variable_queries() -> list[tuple[str, str]]:
    """(board file, PromQL selector) of every query variable (label_values(metric, label))."""
    found = []
    for name, board in dashboards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
                assert match, variable["definition"]
                found.append((name, match.group(1)))
    return found


def rules() -> list[dict[str, Any]]:
    """Every recording and alerting rule of prometheus/rules/."""
    return [
        rule
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


# --- the real exporter, as a process -------------------------------------------------------------


@contextmanager
def running_exporter(dsn: str, log: Path, *extra: str) -> Iterator[str]:
    """``python -m exporter --dsn DSN --listen 127.0.0.1:PORT [EXTRA...]``; yields host:port."""
    import sys

    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--dsn", dsn, "--listen", f"127.0.0.1:{port}"]
    argv += extra
    address = f"127.0.0.1:{port}"
    with _daemon(argv, f"http://{address}/-/healthy", log, "exporter"):
        yield address
