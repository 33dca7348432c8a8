"""The monitor at scale: Now page first render, /api latency, memory of `pipetrack ui`.

For each size a fresh database gets ``runs`` runs over ``tasks`` tasks, seeded in SQL as
bench/bench_exporter.py seeds them (generate_series; 5 % of the tasks running; the last 5
FINISHED runs of each task with 8 subtasks; every task declared with a daily schedule and a
dependency on the task before it), then VACUUM ANALYZE. `pipetrack ui` then runs as its own
process against it, and the bench measures, warm, medians (and p95) of:
  db ms       server time of the Now view's statements (EXPLAIN ANALYZE, planning + execution)
  /now ms     the Now page's HTML (query, template, the payload embedded), over HTTP
  /api/now    the Now page's JSON twin, which the page polls
  other /api  /api/failures (last 7 days), /api/dependencies, /api/task/T, /api/run/R
  render ms   in headless chromium (when installed): from navigation start to the stage tables
              drawn (performance.now() once they exist), the page's time to first render
  rss MB      the `pipetrack ui` process's resident memory after the measurements (and its peak)

    .venv/bin/python bench/bench_monitor.py                       # 1,000 tasks x 100k and 1M
    .venv/bin/python bench/bench_monitor.py --runs 100000 --repeat 50
    .venv/bin/python bench/bench_monitor.py --dsn postgresql://... # an existing server

Without --dsn a temporary embedded PostgreSQL is started (and stopped) in a temporary folder.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil
import psycopg
from bench_exporter import p95, scratch_database, seed, server, sizes
from psycopg import sql
from psycopg.conninfo import make_conninfo

from monitor.queries.now import LATEST_SQL, NowFilter
from tracker._db import migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def get(base: str, path: str) -> tuple[int, bytes]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def timed_get(base: str, path: str, repeat: int) -> list[float]:
    for _ in range(3):  # connections, plans, caches
        status, body = get(base, path)
        if status != 200:
            raise SystemExit(f"{path}: HTTP {status}: {body[:300]!r}")
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        get(base, path)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def db_ms(dsn: str) -> float:
    with connect(DatabaseTarget(conninfo=dsn, source="bench")) as conn:
        row = conn.execute(
            b"EXPLAIN (ANALYZE, FORMAT JSON) " + LATEST_SQL.encode(), NowFilter().params()
        ).fetchone()
        plan = row[0][0] if row else {}  # type: ignore[index]
        return float(plan["Planning Time"]) + float(plan["Execution Time"])


def render_ms(base: str, repeat: int) -> list[float] | None:
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    samples = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for i in range(repeat + 2):
                page.goto(base + "/now", wait_until="commit")
                page.wait_for_selector("section.stage table tbody tr", timeout=60_000)
                drawn = float(page.evaluate("performance.now()"))
                if i >= 2:  # the first two warm the browser's caches
                    samples.append(drawn)
        finally:
            browser.close()
    return samples


def measure(dsn: str, runs: int, tasks: int, args: argparse.Namespace) -> dict[str, float]:
    with connect(DatabaseTarget(conninfo=dsn, source="bench")) as conn:
        started = time.perf_counter()
        seed(conn, runs, tasks, args.running_percent, subtasks=8, declare=True)
        seeded = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE")
        task_row = conn.execute("SELECT min(task_name) FROM pipeline_task_latest").fetchone()
        run_row = conn.execute(
            "SELECT run_id FROM pipeline_status WHERE execution_status = 'RUNNING' LIMIT 1"
        ).fetchone()
    assert task_row is not None
    assert run_row is not None
    database = [db_ms(dsn) for _ in range(args.repeat)]
    child = subprocess.Popen(
        [sys.executable, "-m", "tracker", "ui", "--dsn", dsn, "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        line = child.stderr.readline()
        if not line.startswith("pipetrack ui: serving "):
            raise SystemExit(f"pipetrack ui did not start: {line}{child.stderr.read()}")
        base = line.split()[3].rstrip("/")
        page = timed_get(base, "/now", args.repeat)
        api = timed_get(base, "/api/now", args.repeat)
        others = {
            "failures": timed_get(base, "/api/failures", args.repeat),
            "deps": timed_get(base, "/api/dependencies", args.repeat),
            "task": timed_get(base, "/api/task/" + quote(str(task_row[0]), safe=""), args.repeat),
            "run": timed_get(base, f"/api/run/{run_row[0]}", args.repeat),
        }
        size = len(get(base, "/api/now")[1])
        render = render_ms(base, args.render_repeat) if args.render_repeat else None
        process = psutil.Process(child.pid)
        rss = process.memory_info().rss / 2**20
        peak = _peak_mb(child.pid)
    finally:
        child.terminate()
        child.wait(timeout=60)
        if child.stderr is not None:
            child.stderr.close()
    result = {
        "seed_s": seeded,
        "db": statistics.median(database),
        "page": statistics.median(page),
        "page_p95": p95(page),
        "api": statistics.median(api),
        "api_p95": p95(api),
        "api_kb": size / 1024,
        "rss": rss,
        "peak": peak,
        "render": statistics.median(render) if render else float("nan"),
    }
    result.update({name: statistics.median(samples) for name, samples in others.items()})
    return result


def _peak_mb(pid: int) -> float:
    """VmHWM, the process's peak resident set, where /proc has it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="server to use (default: a temporary embedded one)")
    parser.add_argument("--runs", type=sizes, default=sizes("100000,1000000"))
    parser.add_argument("--tasks", type=sizes, default=sizes("1000"))
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per route")
    parser.add_argument(
        "--render-repeat", type=int, default=10, help="timed browser renders (0: none)"
    )
    parser.add_argument(
        "--running-percent", type=int, default=5, help="share of tasks with a running run"
    )
    args = parser.parse_args()
    header = (
        f"{'runs':>9} {'tasks':>6} {'seed s':>7} {'db ms':>6} {'/now ms':>8} {'p95':>6} "
        f"{'/api/now':>8} {'p95':>6} {'KB':>5} {'render':>7} {'fail':>6} {'deps':>6} "
        f"{'task':>6} {'run':>6} {'rss MB':>7} {'peak':>6}"
    )
    with server(args.dsn) as admin:
        template = f"pipetrack_bench_tpl_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
        try:
            with connect(
                DatabaseTarget(conninfo=make_conninfo(admin, dbname=template), source="bench")
            ) as conn:
                migrate.upgrade(conn)
            print(header, flush=True)
            for runs in args.runs:
                for tasks in args.tasks:
                    with scratch_database(admin, template) as dsn:
                        r = measure(dsn, runs, tasks, args)
                    print(
                        f"{runs:>9} {tasks:>6} {r['seed_s']:>7.1f} {r['db']:>6.1f} "
                        f"{r['page']:>8.1f} {r['page_p95']:>6.1f} {r['api']:>8.1f} "
                        f"{r['api_p95']:>6.1f} {r['api_kb']:>5.0f} {r['render']:>7.0f} "
                        f"{r['failures']:>6.1f} {r['deps']:>6.1f} {r['task']:>6.1f} "
                        f"{r['run']:>6.1f} {r['rss']:>7.1f} {r['peak']:>6.1f}",
                        flush=True,
                    )
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(template)
                    )
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
