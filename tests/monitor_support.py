"""What the monitor's tests share: a seeded pipeline, a served monitor, a headless browser.

The seeded pipeline holds every case a page draws: declared tasks with dependencies (and one
overdue, never run), finished runs with subtasks, a running run, a failed one, a lost one, a
cancelled one, a child run, and text a script could write to attack a page.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from exporter._webconfig import WebConfig
from monitor._app import MonitorSettings, monitor_server
from monitor._database import MonitorDatabase
from tracker._db.dsn import DatabaseTarget

CHROMIUM = "/usr/bin/chromium"
REQUIRE_BROWSER = "PIPETRACK_REQUIRE_BROWSER"
ARTIFACTS_VAR = "PIPETRACK_TEST_ARTIFACTS"
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
HOSTILE = "<script>alert(1)</script>\"quoted\" 'single' </script><img src=x onerror=alert(2)>"
NOW = datetime.now(timezone.utc).replace(microsecond=0)

RUNNING = uuid.UUID("a1111111-1111-4111-8111-111111111111")
FAILED = uuid.UUID("a2222222-2222-4222-8222-222222222222")
LOST = uuid.UUID("a3333333-3333-4333-8333-333333333333")
CANCELLED = uuid.UUID("a4444444-4444-4444-8444-444444444444")
CHILD = uuid.UUID("a5555555-5555-4555-8555-555555555555")
HOSTILE_RUN = uuid.UUID("a6666666-6666-4666-8666-666666666666")
# The declared graph: PREREQ_01 -> DAILY_01 -> DAILY_02 -> DAILY_04, DAILY_01 -> DAILY_03.
# Finished durations: 100, 600, 300, 50 (DAILY_03), 200 (DAILY_04): the critical path is
# PREREQ_01 -> DAILY_01 -> DAILY_02 -> DAILY_04, 1200 s.
DECLARED = {
    "PREREQ_01_calendar": ((), 100),
    "DAILY_01_extract": (("PREREQ_01_calendar",), 600),
    "DAILY_02_transform": (("DAILY_01_extract",), 300),
    "DAILY_03_side": (("DAILY_01_extract",), 50),
    "DAILY_04_publish": (("DAILY_02_transform",), 200),
}
CRITICAL = ["PREREQ_01_calendar", "DAILY_01_extract", "DAILY_02_transform", "DAILY_04_publish"]
OVERDUE_TASK = "ANNUAL_DEC_01_report"


def insert_run(db, **columns) -> uuid.UUID:
    row = {
        "run_id": uuid.uuid4(),
        "hostname": "etl-1",
        "process_id": 4242,
        "execution_status": "FINISHED",
        "last_update": datetime.now(timezone.utc),
    }
    row.update(columns)
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO pipeline_status ({names}) VALUES ({marks})", list(row.values()))
    return row["run_id"]


def insert_subtasks(db, run_id, start, steps) -> None:
    """``steps``: (name, seconds, status) one after another from ``start``."""
    at = start
    for index, (name, seconds, status) in enumerate(steps, 1):
        db.execute(
            "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
            " started_at, ended_at, items_total, items_complete, message)"
            " VALUES (%s, %s, %s, %s, %s, %s, 10, 10, %s)",
            (run_id, index, name, status, at, at + timedelta(seconds=seconds), f"{name} done"),
        )
        at += timedelta(seconds=seconds)


def seed_pipeline(db) -> None:
    """The pipeline every monitor test reads (see the module docstring), as of now (ages such
    as "no heartbeat for 60 s" are the database's now minus these times)."""
    at = datetime.now(timezone.utc).replace(microsecond=0)
    for task, (depends, _) in DECLARED.items():
        db.execute(
            "INSERT INTO pipeline_task_schedule (task_name, task_stage, depends_on, schedule)"
            " VALUES (%s, %s, %s, NULL)",
            (task, task.split("_")[0], list(depends)),
        )
    # Declared an hour ago, due every day at 00:00 UTC... and never run: overdue once the
    # grace has passed (synced_at before the last expected start).
    db.execute(
        "INSERT INTO pipeline_task_schedule (task_name, task_stage, schedule, start_grace,"
        " synced_at) VALUES (%s, 'ANNUAL_DEC', '* * * * *', interval '0 seconds',"
        " now() - interval '2 days')",
        (OVERDUE_TASK,),
    )
    for day in (2, 1):
        for task, (_, seconds) in DECLARED.items():
            start = at - timedelta(days=day)
            run = insert_run(
                db,
                task_name=task,
                task_stage=task.split("_")[0],
                execution_start=start,
                execution_end=start + timedelta(seconds=seconds),
                overall_percent_complete=100,
                total_subtasks=2,
                current_subtask=2,
                memory_mb=120,
                peak_memory_mb=150,
                cpu_percent=80.5,
            )
            insert_subtasks(
                db,
                run,
                start,
                [("load", seconds * 0.75, "COMPLETED"), ("write", seconds * 0.25, "COMPLETED")],
            )
    insert_run(
        db,
        run_id=RUNNING,
        task_name="DAILY_01_extract",
        task_stage="DAILY",
        execution_status="RUNNING",
        execution_start=at - timedelta(seconds=120),
        last_progress=at,
        total_subtasks=2,
        current_subtask=1,
        subtask_name="load",
        subtask_status="RUNNING",
        overall_percent_complete=20,
        subtask_percent_complete=40,
        subtask_items_total=10,
        subtask_items_complete=4,
        overall_progress_message="loading state 4 of 10",
        trace_id="0123456789abcdef0123456789abcdef",
        environment='{"LANG": "C.UTF-8", "DB_PASSWORD": "hunter2", "URL": "postgresql://u:pw@h/db"}',
        memory_mb=300,
        peak_memory_mb=310,
        cpu_percent=97.0,
    )
    insert_subtasks(db, RUNNING, at - timedelta(seconds=120), [("load", 60, "RUNNING")])
    insert_run(
        db,
        run_id=CHILD,
        task_name="DAILY_01_extract_part",
        task_stage="DAILY",
        execution_start=at - timedelta(seconds=100),
        execution_end=at - timedelta(seconds=90),
        parent_run_id=RUNNING,
    )
    insert_run(
        db,
        run_id=FAILED,
        task_name="PERIODIC_01_reindex",
        task_stage="PERIODIC",
        execution_status="FAILED",
        execution_start=at - timedelta(hours=3),
        execution_end=at - timedelta(hours=3) + timedelta(seconds=45),
        exit_code=1,
        error_message="exited with code 1: disk full after 1234 rows",
        error_detail="Traceback (most recent call last):\n  boom",
    )
    insert_run(
        db,
        task_name="PERIODIC_01_reindex",
        task_stage="PERIODIC",
        execution_status="FAILED",
        execution_start=at - timedelta(hours=5),
        execution_end=at - timedelta(hours=5) + timedelta(seconds=40),
        error_message="exited with code 1: disk full after 99 rows",
    )
    insert_run(
        db,
        run_id=LOST,
        task_name="PERIODIC_02_silent",
        task_stage="PERIODIC",
        execution_status="RUNNING",
        execution_start=at - timedelta(hours=1),
        last_update=at - timedelta(minutes=10),
    )
    insert_run(
        db,
        run_id=CANCELLED,
        task_name="STATIC_01_maps",
        task_stage="STATIC",
        execution_status="CANCELLED",
        execution_start=at - timedelta(hours=2),
        execution_end=at - timedelta(hours=2) + timedelta(seconds=5),
        error_message="cancelled by SIGTERM",
    )
    insert_run(
        db,
        run_id=HOSTILE_RUN,
        task_name="DAILY_09_" + HOSTILE,
        task_stage="DAILY",
        hostname="host" + HOSTILE,
        execution_status="FAILED",
        execution_start=at - timedelta(minutes=30),
        execution_end=at - timedelta(minutes=29),
        error_message="error " + HOSTILE + " \x1b[31mred\u202eevil",
        error_detail="Traceback " + HOSTILE,
        overall_progress_message="message " + HOSTILE,
        subtask_name="sub" + HOSTILE,
        environment='{"X": "' + HOSTILE.replace('"', '\\"') + '"}',
    )
    insert_subtasks(db, HOSTILE_RUN, at - timedelta(minutes=30), [(HOSTILE, 30, "FAILED")])


@contextmanager
def served_monitor(dsn: str, *, jaeger: str | None = None) -> Iterator[str]:
    """The monitor for ``dsn`` on a free port of 127.0.0.1; yields its base URL (no slash)."""
    database = MonitorDatabase(DatabaseTarget(conninfo=dsn, source="test"))
    chosen = MonitorSettings(
        host="127.0.0.1",
        port=0,
        web_config=WebConfig(),
        jaeger_url=jaeger,
        read_timeout=10.0,
        max_connections=16,
    )
    server = monitor_server(database, chosen)
    server.start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.shutdown()
        database.close()


def artifacts_dir() -> Path:
    """Where browser tests write screenshots: $PIPETRACK_TEST_ARTIFACTS, else a fixed folder
    under the temporary directory (printed at the end of the session)."""
    given = os.environ.get(ARTIFACTS_VAR)
    folder = Path(given) if given else Path(tempfile.gettempdir()) / "pipetrack-test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_or_skip() -> str:
    """Debian's chromium; a skip without it, unless CI demands it (then a failure)."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail("chromium is not installed and PIPETRACK_REQUIRE_BROWSER=1")
    pytest.skip("chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")
