"""Tracking past one machine: writes through PgBouncer, server connections, a fleet's latency.

    .venv/bin/python bench/bench_pooler.py [--only 1,2,3] [--counts 50,200,500]
                                           [--fleet-processes 200] [--fleet-runs 50]

Debian's PostgreSQL 15 (``max_connections = 40``) and PgBouncer 1.18 in transaction mode
(``default_pool_size = 10``) are started in temporary folders, as the tests start them
(tests/debian_pg.py, tests/fix_pgbouncer.py), and stopped at the end.

1. writes per second, one process tracking 1,000 runs each changed every cycle
   (``bench_writes.Fleet``), direct and through the pooler, windows alternating; the ratio;
2. server connections used by N tracked processes running at once (each a run of three
   subtasks of ten items, an item every 0.2 s), through the pooler: the most seen in
   ``pg_stat_activity``, against N;
3. a fleet: ``--fleet-processes`` processes each tracking ``--fleet-runs`` runs at once
   (10,000 runs in all by default) through the pooler; every process moves one item of each of
   its runs every second and notes when; the bench polls the rows and reports how long each
   change took to show (p50, p99), in the steady state (once every run's row has shown: 200
   interpreters starting at once on two cores is no fleet's state) and over the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import compiled_like_an_install  # noqa: E402
from bench_writes import Fleet  # noqa: E402

from tests import debian_pg  # noqa: E402
from tests.fix_pgbouncer import Bouncer, pgbouncer_program  # noqa: E402
from tracker._db import migrate  # noqa: E402
from tracker._db.connect import connect  # noqa: E402
from tracker._db.dsn import DatabaseTarget  # noqa: E402

STEADY = ROOT / "tests" / "scripts" / "ops_steady_run.py"

FLEET_CHILD = """
import sys, time, tracker
prefix, runs, seconds, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
t = tracker.Tracker(lifecycle=False, console=False)
tracked = [t.run(f"{prefix}{i:03d}", total_subtasks=1) for i in range(runs)]
steps = [run.subtask("work", items_total=10**9) for run in tracked]
notes = []
end = time.monotonic() + seconds
step = 0
while time.monotonic() < end:
    step += 1
    for run, st in zip(tracked, steps):
        st.update(step)
        notes.append(f"{run.run_id} {step} {time.time():.6f}")
    time.sleep(1.0)
for st, run in zip(steps, tracked):
    st.close()
    run.finish()
t.shutdown(30)
with open(log, "w") as out:
    out.write("\\n".join(notes) + "\\n")
"""


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str, Bouncer, str]]:
    """(direct DSN, pooled DSN, the bouncer, the superuser DSN) of a migrated database."""
    program = pgbouncer_program()
    if program is None or not (debian_pg.BIN / "postgres").exists():
        raise SystemExit("needs Debian's postgresql-15 and pgbouncer (apt-get install ...)")
    primary = debian_pg.start_primary(debian_pg.server_user())
    bouncer: Bouncer | None = None
    try:
        name = f"pipetrack_bench_{uuid.uuid4().hex[:8]}"
        primary.create_database(name)
        direct = primary.app_dsn(name)
        with connect(DatabaseTarget(conninfo=direct, source="bench")) as conn:
            migrate.upgrade(conn)
        bouncer = Bouncer(program, primary, {"default_pool_size": 10, "max_client_conn": 2000})
        bouncer.start()
        yield direct, bouncer.dsn(name), bouncer, primary.cluster.dsn(name)
    finally:
        if bouncer is not None:
            bouncer.close()
        primary.cluster.remove()


def writes(direct: str, pooled: str, window: float, repeat: int, scratch: Path) -> None:
    print("\n1. writes per second, one process, 1,000 runs changed every cycle")
    os.environ["PIPETRACK_PREPARE"] = "off"  # PgBouncer 1.18 (the same for both sides)
    fleets = {
        "direct": Fleet(direct, 1000, scratch / "spool-direct", "BENCH_DIRECT_"),
        "pooled": Fleet(pooled, 1000, scratch / "spool-pooled", "BENCH_POOLED_"),
    }
    rates: dict[str, list[float]] = {name: [] for name in fleets}
    try:
        for _ in range(repeat):
            for name, fleet in fleets.items():
                rates[name].append(fleet.rate(window))
    finally:
        for fleet in fleets.values():
            fleet.close()
    pairs = [p / d for p, d in zip(rates["pooled"], rates["direct"], strict=True)]
    for name, values in rates.items():
        print(f"   {name:<7} {statistics.median(values):>10,.0f} snapshots/s (median)")
    print(
        f"   pooled / direct = {statistics.median(pairs):.0%} "
        f"(pairs {min(pairs):.0%}-{max(pairs):.0%}; target >= 70 %)"
    )


@contextlib.contextmanager
def _children(
    count: int, env: dict[str, str], argv: list[list[str]]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        for args in argv[:count]:
            started.append(
                subprocess.Popen(
                    [sys.executable, *args],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield started
    finally:
        for child in started:
            if child.poll() is None:
                child.kill()
            child.wait()


def _server_connections(superuser: str) -> int:
    with psycopg.connect(superuser, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def connections(pooled: str, superuser: str, counts: list[int], scratch: Path) -> None:
    print("\n2. server connections used by N tracked processes at once, through the pooler")
    env = {**os.environ, "PIPETRACK_DSN": pooled, "PIPETRACK_PREPARE": "off"}
    env["PIPETRACK_DATA_DIR"] = str(scratch / "data-connections")
    for count in counts:
        prefix = f"BENCH_CONN_{count}_"
        argv = [[str(STEADY), f"{prefix}{i:04d}", "3", "0.2"] for i in range(count)]
        most = 0
        alive_most = 0
        with contextlib.ExitStack() as stack:
            children = stack.enter_context(_children(count, env, argv))
            while any(child.poll() is None for child in children):
                alive = sum(child.poll() is None for child in children)
                alive_most = max(alive_most, alive)
                most = max(most, _server_connections(superuser))
                time.sleep(0.2)
            failed = sum(child.returncode != 0 for child in children)
        with psycopg.connect(superuser, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE execution_status = 'FINISHED'), count(*)"
                " FROM pipetrack.pipeline_status WHERE task_name LIKE %s",
                (prefix + "%",),
            ).fetchone()
        print(
            f"   N = {count:>4}: at most {alive_most:>4} running at once, "
            f"at most {most:>3} server connections; {row[0] if row else 0}/{count} runs "
            f"FINISHED, {failed} processes failed"
        )


def fleet(
    pooled: str, superuser: str, *, processes: int, runs: int, seconds: float, scratch: Path
) -> None:
    print(
        f"\n3. a fleet: {processes} processes x {runs} runs = {processes * runs:,} runs, "
        f"through the pooler, an item of every run every second for {seconds:g} s"
    )
    env = {**os.environ, "PIPETRACK_DSN": pooled, "PIPETRACK_PREPARE": "off"}
    env["PIPETRACK_DATA_DIR"] = str(scratch / "data-fleet")
    logs = [scratch / f"fleet-{i}.log" for i in range(processes)]
    argv = [
        ["-c", FLEET_CHILD, f"BENCH_FLEET_{i:03d}_", str(runs), str(seconds), str(log)]
        for i, log in enumerate(logs)
    ]
    # Per run, when each new item count first showed: a change is visible once the row shows it
    # or a later one (the writer keeps the latest state only).
    seen: dict[str, list[tuple[int, float]]] = {}
    started = time.time()
    with contextlib.ExitStack() as stack:
        children = stack.enter_context(_children(processes, env, argv))
        with psycopg.connect(superuser, autocommit=True) as conn:
            while any(child.poll() is None for child in children):
                now = time.time()
                for run_id, step in conn.execute(
                    "SELECT run_id::text, subtask_items_complete FROM pipetrack.pipeline_status"
                    " WHERE task_name LIKE 'BENCH_FLEET_%' AND execution_status = 'RUNNING'"
                ).fetchall():
                    shown = seen.setdefault(str(run_id), [])
                    if not shown or shown[-1][0] < int(step or 0):
                        shown.append((int(step or 0), now))
                time.sleep(0.05)
    # Steady state: from when every run's row had shown (all processes up, each writer
    # connected). Before it, 200 interpreters start at once on this machine's two cores (each
    # importing psycopg and connecting), which no fleet spread over hosts does.
    firsts = [shown[0][1] for shown in seen.values() if shown]
    steady_from = max(firsts) if len(firsts) == processes * runs else float("inf")
    latencies, steady = [], []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text().split("\n"):
            if not line:
                continue
            run_id, step, at = line.split()
            first = next((when for value, when in seen.get(run_id, []) if value >= int(step)), None)
            if first is not None:
                latencies.append(first - float(at))
                if float(at) >= steady_from:
                    steady.append(first - float(at))
    if not latencies:
        print("   no change was seen")
        return
    print(
        f"   steady state (every run's row shown, {steady_from - started:.1f} s after the "
        f"start): {_percentiles(steady)} (target p99 <= 2 s)"
    )
    print(f"   every change, the start-up included: {_percentiles(latencies)}")
    print("   (rows polled every 50 ms)")


def _percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "no change"
    latencies = sorted(latencies)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return (
        f"{len(latencies):,} changes, call -> row visible p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="1,2,3", help="sections to run")
    parser.add_argument("--counts", default="50,200,500", help="processes for section 2")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fleet-processes", type=int, default=200)
    parser.add_argument("--fleet-runs", type=int, default=50)
    parser.add_argument("--fleet-seconds", type=float, default=60.0)
    args = parser.parse_args()
    compiled_like_an_install()
    only = set(args.only.split(","))
    print(
        f"pipetrack pooler benchmark, python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        "PostgreSQL 15 (max_connections 40), PgBouncer (pool_mode transaction, pool 10)"
    )
    with servers() as (direct, pooled, _bouncer, superuser), tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if "1" in only:
            writes(direct, pooled, args.window, args.repeat, scratch)
        if "2" in only:
            counts = [int(part) for part in args.counts.split(",")]
            connections(pooled, superuser, counts, scratch)
        if "3" in only:
            fleet(
                pooled,
                superuser,
                processes=args.fleet_processes,
                runs=args.fleet_runs,
                seconds=args.fleet_seconds,
                scratch=scratch,
            )


if __name__ == "__main__":
    main()
