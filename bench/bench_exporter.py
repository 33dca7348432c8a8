"""Scrape latency of the exporter against synthetic history: runs x tasks.

For each size a fresh database (migrated schema) gets ``runs`` runs spread over ``tasks`` tasks
in one INSERT ... SELECT generate_series, then VACUUM ANALYZE. The insert runs with triggers off
(session_replication_role = replica, superuser only) and the trigger-kept tables are rebuilt
set-based afterwards, with the migrations' own backfill where there is one: thousands of
upserts of one row inside one transaction are quadratic (each walks the row's dead versions),
which production, one run per transaction, never does. Measured, warm (medians, and p95):
  db       server time of the scrape's four statements (EXPLAIN ANALYZE: planning + execution)
  collect  PipetrackCollector.collect(): the database read and the families with their
           exposition lines written (exporter/_lines.py), wall
  cpu      the exporter process's CPU time for one collect (what machine load cannot inflate)
  scrape   collect + the exposition the server writes for Prometheus' Accept header, wall
  scrape cpu  the same scrape's CPU time: the full work of one answer, as load cannot inflate it
              (collect's share of the work moved when the lines began to be written there)
  naive    SELECT DISTINCT ON (task_name) ... ORDER BY task_name, execution_start DESC: the
           latest-run-per-task query without the trigger-kept table, for comparison (wall)
With --subtasks N (default 8) the last 5 FINISHED runs of every task get N completed subtasks
each (what the predicted finish's progress curve reads for running tasks); with --declare every
task is declared with a daily schedule, and each depends on the task before it (the schedule
checks). `db` then includes the curve, declaration and starts statements too.

    .venv/bin/python bench/bench_exporter.py                      # every size (minutes)
    .venv/bin/python bench/bench_exporter.py --runs 1000000 --tasks 1000
    .venv/bin/python bench/bench_exporter.py --dsn postgresql://... # an existing server

Without --dsn a temporary embedded PostgreSQL is started (and stopped) in a temporary folder.
The role must be allowed to create databases.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from exporter import PipetrackCollector
from exporter._exposition import choose
from exporter._queries import LAST_ENDED_SQL, LATEST_SQL, OUTCOMES_SQL, RUNNING_SQL
from exporter._schedule import SCHEDULE_SQL, STARTS_SQL
from tracker._db import embedded, migrate
from tracker._db.connect import connect
from tracker._db.dsn import DatabaseTarget
from tracker._ops.eta_history import CURVE_SQL

# Runs end FINISHED (90 %), FAILED (8 %) or CANCELLED (2 %), except the newest run of a share
# of the tasks, which is still RUNNING. One run per minute, oldest first.
SEED_SQL = """
INSERT INTO pipeline_status
    (run_id, task_name, task_stage, hostname, process_id, execution_start, execution_end,
     last_update, last_progress, execution_status, total_subtasks, current_subtask,
     subtask_status, overall_percent_complete, subtask_percent_complete, memory_mb, cpu_percent)
SELECT gen_random_uuid(),
       'DAILY_' || lpad((i %% %(tasks)s)::text, 5, '0') || '_bench',
       'DAILY', 'bench-host', i %% 32768,
       start, CASE WHEN running THEN NULL ELSE start + took END,
       start + took, start + took,
       CASE WHEN running THEN 'RUNNING'
            WHEN i %% 50 = 0 THEN 'CANCELLED'
            WHEN i %% 50 < 5 THEN 'FAILED'
            ELSE 'FINISHED' END,
       10, CASE WHEN running THEN 4 ELSE 10 END,
       CASE WHEN running THEN 'RUNNING' ELSE 'COMPLETED' END,
       CASE WHEN running THEN 37.5 ELSE 100 END,
       CASE WHEN running THEN 75 ELSE 100 END,
       200 + i %% 800, (i %% 400)::numeric / 2
FROM (
    SELECT i,
           now() - (%(runs)s - i) * interval '1 minute' AS start,
           (30 + i %% 600) * interval '1 second' AS took,
           i > %(runs)s - %(tasks)s AND (i %% 100) < %(running_percent)s AS running
    FROM generate_series(1, %(runs)s) AS i
) AS synthetic
"""

REBUILD_SQL = [
    """INSERT INTO pipeline_task_latest (task_name, run_id, execution_start)
       SELECT DISTINCT ON (task_name) task_name, run_id, execution_start
       FROM pipeline_status ORDER BY task_name, execution_start DESC, run_id DESC""",
    """INSERT INTO pipeline_task_outcomes (task_name, execution_status, runs)
       SELECT task_name, execution_status, count(*) FROM pipeline_status
       WHERE execution_status IN ('FINISHED', 'FAILED', 'CANCELLED')
       GROUP BY task_name, execution_status""",
]
BACKFILL_MARK = "-- Runs that ended before this migration"

# The last 5 FINISHED runs of every task: %(subtasks)s completed subtasks of unequal length.
SUBTASKS_SQL = """
INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status, started_at,
                              ended_at)
SELECT r.run_id, k, 'step ' || k, 'COMPLETED',
       r.execution_start + (r.execution_end - r.execution_start) * ((k - 1) ^ 2)
                                                                 / (%(subtasks)s ^ 2),
       r.execution_start + (r.execution_end - r.execution_start) * (k ^ 2) / (%(subtasks)s ^ 2)
FROM (SELECT run_id, execution_start, execution_end,
             row_number() OVER (PARTITION BY task_name ORDER BY execution_start DESC) AS n
      FROM pipeline_status WHERE execution_status = 'FINISHED') AS r,
     generate_series(1, %(subtasks)s) AS k
WHERE r.n <= 5
"""

DECLARE_SQL = """
INSERT INTO pipeline_task_schedule (task_name, task_stage, schedule, depends_on)
SELECT task_name, 'DAILY', '0 2 * * *',
       CASE WHEN lag(task_name) OVER w IS NULL THEN '{}'
            ELSE ARRAY[lag(task_name) OVER w]::varchar(255)[] END
FROM (SELECT DISTINCT task_name FROM pipeline_status) AS t
WINDOW w AS (ORDER BY task_name)
"""

# Prometheus 2.x's scrape Accept header: OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

NAIVE_SQL = """
SELECT DISTINCT ON (task_name) task_name, task_stage, execution_status, execution_start
FROM pipeline_status
ORDER BY task_name, execution_start DESC
"""


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="pipetrack-bench-") as folder:
        pgdata = Path(folder) / "postgres"
        uri = embedded.ensure_running(pgdata)
        try:
            yield uri
        finally:
            embedded.stop(pgdata)


@contextmanager
def scratch_database(admin: str, template: str) -> Iterator[str]:
    name = f"pipetrack_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def timed(fn: object, repeat: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = clock()
        fn()  # type: ignore[operator]
        samples.append((clock() - started) * 1000)
    return samples


def server_ms(conn: psycopg.Connection[tuple[object, ...]]) -> float:
    """Planning + execution time the server reports for the scrape's statements."""
    import datetime as dt

    running = [
        str(r[0])
        for r in conn.execute(
            "SELECT DISTINCT task_name FROM pipeline_status"
            " WHERE execution_status IN ('STARTED', 'RUNNING')"
        )
    ]
    declared = [str(r[0]) for r in conn.execute("SELECT task_name FROM pipeline_task_schedule")]
    since = (
        dt.datetime.now(dt.timezone.utc)
        .replace(hour=2, minute=0, second=0, microsecond=0)
        .timestamp()
    )
    statements: list[tuple[str, tuple[object, ...]]] = [
        (LATEST_SQL, ()),
        (RUNNING_SQL, ()),
        (OUTCOMES_SQL, ()),
        (LAST_ENDED_SQL, ()),
        (SCHEDULE_SQL, ()),
        (CURVE_SQL, (running,)),
    ]
    if declared:
        grace = 15 * 60.0
        statements.append(
            (STARTS_SQL, (declared, [since] * len(declared), [grace] * len(declared)))
        )
    total = 0.0
    for statement, params in statements:
        row = conn.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}".encode(), params or None
        ).fetchone()
        plan = row[0][0] if row else {}  # type: ignore[index]
        total += float(plan["Planning Time"]) + float(plan["Execution Time"])
    return total


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def last_outcome_backfill() -> str:
    """sql/0005's own backfill statement, so the bench fills the table exactly as it does."""
    text = (migrate.sql_dir() / "0005_task_last_outcome.sql").read_text("utf-8")
    start = text.index(BACKFILL_MARK)
    return text[start : text.index(";", start)]


def seed(
    conn: psycopg.Connection[tuple[object, ...]],
    runs: int,
    tasks: int,
    share: int,
    *,
    subtasks: int = 0,
    declare: bool = False,
) -> None:
    try:
        conn.execute("SET session_replication_role = replica")
        triggers_off = True
    except psycopg.errors.InsufficientPrivilege:
        triggers_off = False  # not a superuser: the triggers fill the tables (slowly)
    conn.execute(SEED_SQL, {"runs": runs, "tasks": tasks, "running_percent": share})
    if subtasks:
        conn.execute(SUBTASKS_SQL, {"subtasks": subtasks})
    if declare:
        conn.execute(DECLARE_SQL)
    if triggers_off:
        conn.execute("SET session_replication_role = DEFAULT")
        for statement in (*REBUILD_SQL, last_outcome_backfill()):
            conn.execute(statement.encode())


def measure(dsn: str, runs: int, tasks: int, args: argparse.Namespace) -> dict[str, float]:
    target = DatabaseTarget(conninfo=dsn, source="bench")
    with connect(target) as conn:
        started = time.perf_counter()
        seed(
            conn,
            runs,
            tasks,
            args.running_percent,
            subtasks=args.subtasks,
            declare=args.declare,
        )
        seeded = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE")
        running = conn.execute(
            "SELECT count(*) FROM pipeline_status WHERE execution_status = 'RUNNING'"
        ).fetchone()
        naive = timed(lambda: conn.execute(NAIVE_SQL).fetchall(), args.naive_repeat)
        database = [server_ms(conn) for _ in range(args.repeat)]

    collector = PipetrackCollector(target)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        for _ in range(3):  # connect, prepare statements, warm caches
            list(collector.collect())
        collect = timed(lambda: list(collector.collect()), args.repeat)
        cpu = timed(lambda: list(collector.collect()), args.repeat, time.process_time)
        encode, _ = choose(PROMETHEUS_ACCEPT)
        scrape = timed(lambda: encode(registry), args.repeat)
        scrape_cpu = timed(lambda: encode(registry), args.repeat, time.process_time)
        body = generate_latest(registry)
        assert registry.get_sample_value("pipetrack_last_scrape_error") == 0
    finally:
        collector.close()
    return {
        "seed_s": seeded,
        "running": float(running[0]) if running else 0.0,
        "db_median": statistics.median(database),
        "cpu_median": statistics.median(cpu),
        "collect_median": statistics.median(collect),
        "collect_p95": p95(collect),
        "scrape_median": statistics.median(scrape),
        "scrape_p95": p95(scrape),
        "scrape_cpu_median": statistics.median(scrape_cpu),
        "series": float(body.count(b"\n") - body.count(b"\n#")),
        "naive_median": statistics.median(naive),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="server to use (default: a temporary embedded one)")
    parser.add_argument("--runs", type=sizes, default=sizes("10000,100000,1000000"))
    parser.add_argument("--tasks", type=sizes, default=sizes("100,1000,10000"))
    parser.add_argument("--repeat", type=int, default=30, help="timed collects per size")
    parser.add_argument("--naive-repeat", type=int, default=5, help="timed naive queries")
    parser.add_argument(
        "--running-percent", type=int, default=5, help="share of tasks with a running run"
    )
    parser.add_argument(
        "--subtasks",
        type=int,
        default=8,
        help="subtasks of each task's last 5 FINISHED runs (0: none)",
    )
    parser.add_argument(
        "--declare", action="store_true", help="declare every task (daily schedule, a dependency)"
    )
    args = parser.parse_args()

    header = (
        f"{'runs':>9} {'tasks':>6} {'running':>7} {'series':>7} {'seed s':>7} {'db ms':>6} "
        f"{'collect ms':>10} {'p95':>6} {'cpu ms':>6} {'scrape ms':>9} {'p95':>6} "
        f"{'scrape cpu ms':>13} {'naive DISTINCT ON ms':>21}"
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
                    if tasks > runs:
                        continue
                    with scratch_database(admin, template) as dsn:
                        r = measure(dsn, runs, tasks, args)
                    print(
                        f"{runs:>9} {tasks:>6} {r['running']:>7.0f} {r['series']:>7.0f} "
                        f"{r['seed_s']:>7.1f} {r['db_median']:>6.1f} "
                        f"{r['collect_median']:>10.1f} {r['collect_p95']:>6.1f} "
                        f"{r['cpu_median']:>6.1f} {r['scrape_median']:>9.1f} "
                        f"{r['scrape_p95']:>6.1f} {r['scrape_cpu_median']:>13.1f} "
                        f"{r['naive_median']:>21.1f}",
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
