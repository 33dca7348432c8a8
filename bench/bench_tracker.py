"""What tracking costs, side by side, in one run:

    .venv/bin/python bench/bench_tracker.py [--quick] [--dsn DSN] [--processes 200]
                                            [--updates 10000] [--parallel 50]

1. hot path: median ns per call of ``Subtask.advance()`` (and ``track_task_progress``, and one
   ``tracker.progress`` iteration) vs ``tqdm.update`` (to a null file) and a prometheus_client
   ``Gauge.set``; the target is advance <= 2x tqdm;
2. the original design's connect-update-close per status vs ours, on the same database;
3. progress call -> row visible in PostgreSQL (p50/p99), for ordinary progress (flushed on the
   0.5 s timer) and for transitions (written at once);
4. N processes x M updates: wall time tracked vs untracked, and rows exact;
5. ``import tracker`` in a fresh interpreter (median of several) and the RSS a tracked run adds
   (telemetry off), with psycopg's own share (its import and one connection, alone);
6. ``pipetrack progress 3/8`` inside ``pipetrack run``: ms per call, a shell loop of calls;
7. sustained coalesced writes at 1,000 runs in one process, as a share of the database's own
   batched-update ceiling (``bench_writes.py``, a shorter run of it).

Without ``--dsn`` a throw-away embedded PostgreSQL in a temporary folder is used (Unix socket).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import bench_database, compiled_like_an_install  # noqa: E402

import tracker  # noqa: E402
from tracker._runtime import trackers  # noqa: E402


def median_ns(call: Callable[[], object], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean ns per call in a loop of ``calls`` calls."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        results.append((time.perf_counter_ns() - started) / calls)
    return statistics.median(results)


def loop_overhead_ns(calls: int, rounds: int) -> float:
    def nothing() -> None:
        return None

    return median_ns(nothing, calls, rounds)


# -- 1. hot path -------------------------------------------------------------------------
def hot_path(t: tracker.Tracker, calls: int, rounds: int) -> dict[str, float]:
    """Median ns per call. The candidates are measured round-robin (one round of each, then
    again), so a shared machine's load shifts weigh on all of them alike; the ratio to tqdm is
    the median of the per-round ratios."""
    import io

    from prometheus_client import CollectorRegistry, Gauge
    from tqdm import tqdm

    null = open(os.devnull, "w")  # noqa: SIM115 - closed below
    bar = tqdm(total=10**12, file=null, mininterval=0.1)
    gauge = Gauge("bench_progress", "bench", registry=CollectorRegistry())
    run = t.run("BENCH_hot_path")
    st = run.subtask("advance", items_total=10**15)
    run.subtask("track_task_progress", items_total=10**15)  # innermost: track_task_progress's
    counter = iter(range(1, 10**15))

    def nothing() -> None:
        return None

    def compat() -> None:
        tracker.track_task_progress(next(counter))

    def set_gauge() -> None:
        gauge.set(1.0)

    items = range(calls)
    sink = io.StringIO()

    def tqdm_iterate() -> None:
        for _ in tqdm(items, file=sink, mininterval=0.1):
            pass

    def ours_iterate() -> None:
        for _ in run.progress(items, "iterate"):
            pass

    single: dict[str, Callable[[], object]] = {
        "empty call (loop overhead)": nothing,
        "tqdm.update()": bar.update,
        "prometheus Gauge.set()": set_gauge,
        "pipetrack Subtask.advance()": st.advance,
        "pipetrack track_task_progress(i)": compat,
    }
    loops = {
        "tqdm(iterable) per item": tqdm_iterate,
        "pipetrack progress(iterable) per item": ours_iterate,
    }
    samples: dict[str, list[float]] = {name: [] for name in [*single, *loops]}
    previous = trackers.set_default(t)
    try:
        for _ in range(rounds):
            for name, call in single.items():
                samples[name].append(median_ns(call, calls, 1))
            for name, loop in loops.items():
                started = time.perf_counter_ns()
                loop()
                samples[name].append((time.perf_counter_ns() - started) / calls)
    finally:
        trackers.set_default(previous)
        bar.close()
        null.close()
    run.finish()
    results = {name: statistics.median(values) for name, values in samples.items()}
    results["ratio advance/tqdm (median of rounds)"] = statistics.median(
        a / b
        for a, b in zip(
            samples["pipetrack Subtask.advance()"], samples["tqdm.update()"], strict=True
        )
    )
    return results


# -- 2. the original design's connect-update-close ------------------------------------------
def original_design(dsn: str, t: tracker.Tracker, samples: int) -> tuple[float, float]:
    """Median ms per status of the original sketch (connect, UPDATE, commit, close) and median
    ns per status of ours, on the same database."""
    import psycopg

    from tracker._db.connect import SCHEMA

    run = t.run("BENCH_original")
    t.flush(10)
    timings = []
    for i in range(samples):
        started = time.perf_counter_ns()
        conn = psycopg.connect(dsn, options=f"-c search_path={SCHEMA}")
        cur = conn.cursor()
        cur.execute(
            "UPDATE pipeline_status SET last_update = now(), execution_status = %s,"
            " subtask_items_complete = %s WHERE run_id = %s",
            ("RUNNING", i, run.run_id),
        )
        conn.commit()
        cur.close()
        conn.close()
        timings.append(time.perf_counter_ns() - started)
    st = run.subtask("ours", items_total=10**12)
    ours = median_ns(st.advance, 100_000, 5)
    run.finish()
    return statistics.median(timings) / 1e6, ours


# -- 3. latency to PostgreSQL ---------------------------------------------------------------
def latency(dsn: str, t: tracker.Tracker, samples: int) -> dict[str, tuple[float, float]]:
    import random

    import psycopg

    from tracker._db.connect import SCHEMA

    run = t.run("BENCH_latency")
    st = run.subtask("progress", items_total=10**9)
    t.flush(10)
    query = "SELECT subtask_items_complete, current_subtask FROM pipeline_status WHERE run_id = %s"
    progress_ms, transition_ms = [], []
    with psycopg.connect(dsn, options=f"-c search_path={SCHEMA}", autocommit=True) as conn:
        for i in range(1, samples + 1):
            time.sleep(random.uniform(0, 0.5))  # noqa: S311 - desynchronise from the flush timer
            started = time.perf_counter()
            st.advance()
            while True:
                row = conn.execute(query, (run.run_id,)).fetchone()
                if row and row[0] is not None and row[0] >= i:
                    break
                time.sleep(0.001)
            progress_ms.append((time.perf_counter() - started) * 1000)
        st.close()  # done units: 1; each closed transition subtask below adds one
        for k in range(min(samples, 50)):
            time.sleep(random.uniform(0, 0.1))  # noqa: S311
            started = time.perf_counter()
            run.subtask(f"transition {k}").close()
            wanted = k + 2
            while True:
                row = conn.execute(query, (run.run_id,)).fetchone()
                if row and row[1] is not None and row[1] >= wanted:
                    break
                time.sleep(0.001)
            transition_ms.append((time.perf_counter() - started) * 1000)
    run.finish()

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)]

    return {
        "advance() -> row (flush timer)": (p(progress_ms, 0.5), p(progress_ms, 0.99)),
        "subtask boundary -> row (at once)": (p(transition_ms, 0.5), p(transition_ms, 0.99)),
    }


# -- 4. N processes x M updates --------------------------------------------------------------
WORK = "x = 0\nfor j in range(20):\n    x += j\n"
UNTRACKED = "import sys\nm = int(sys.argv[1])\nfor i in range(m):\n" + "".join(
    "    " + line + "\n" for line in WORK.splitlines()
)
TRACKED = (
    "import sys, tracker\nm = int(sys.argv[1])\n"
    "with tracker.run(sys.argv[2], total_subtasks=1) as run:\n"
    "    with run.subtask('work', items_total=m) as st:\n"
    "        for i in range(m):\n"
    + "".join("            " + line + "\n" for line in WORK.splitlines())
    + "            st.advance()\n"
)


def fleet(
    dsn: str, processes: int, updates: int, parallel: int, data_dir: Path
) -> dict[str, float]:
    import psycopg

    from tracker._db.connect import SCHEMA

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPETRACK_", "PG", "OTEL_"))}
    env.update({"PIPETRACK_DSN": dsn, "PIPETRACK_DATA_DIR": str(data_dir)})
    prefix = f"BENCH_fleet_{uuid.uuid4().hex[:8]}"

    def run_all(code: str, tracked: bool) -> float:
        started = time.perf_counter()
        running: list[subprocess.Popen[bytes]] = []
        for n in range(processes):
            while len(running) >= parallel:
                running = [p for p in running if p.poll() is None]
                if len(running) >= parallel:
                    time.sleep(0.005)
            args = [sys.executable, "-c", code, str(updates)]
            if tracked:
                args.append(f"{prefix}_{n:04d}")
            running.append(subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL))
        for process in running:
            process.wait()
        return time.perf_counter() - started

    untracked = run_all(UNTRACKED, tracked=False)
    tracked_s = run_all(TRACKED, tracked=True)
    with psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as conn:
        exact = conn.execute(
            "SELECT count(*) FROM pipeline_status WHERE task_name LIKE %s"
            " AND execution_status = 'FINISHED' AND subtask_items_complete = %s"
            " AND overall_percent_complete = 100",
            (prefix + "%", updates),
        ).fetchone()
    spooled = sum(1 for _ in (data_dir / "spool").glob("*.jsonl")) if data_dir.exists() else 0
    return {
        "untracked_s": untracked,
        "tracked_s": tracked_s,
        "exact": int(exact[0]) if exact else 0,
        "spool_files_left": spooled,
    }


# -- 5. import cost and RSS ---------------------------------------------------------------
IMPORT = "import time; t = time.perf_counter(); import tracker; print(time.perf_counter() - t)"
RSS = """
import sys
def rss_kb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
before = rss_kb()
import tracker
t = tracker.Tracker(dsn=sys.argv[1], lifecycle=False)
with t.run('BENCH_rss', total_subtasks=1) as run:
    with run.subtask('x', items_total=100000) as st:
        for _ in range(100000):
            st.advance()
t.flush(30)
print(rss_kb() - before)
t.shutdown(10)
"""


DRIVER_RSS = """
import sys
def rss_kb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
before = rss_kb()
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute('SELECT 1')
print(rss_kb() - before)
conn.close()
"""


def startup(dsn: str, repeat: int) -> tuple[float, float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPETRACK_", "OTEL_"))}
    imports = [
        float(
            subprocess.run(
                [sys.executable, "-c", IMPORT], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(repeat)
    ]
    rss = [
        int(
            subprocess.run(
                [sys.executable, "-c", RSS, dsn],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(max(repeat // 2, 1))
    ]
    driver = [
        int(
            subprocess.run(
                [sys.executable, "-c", DRIVER_RSS, dsn],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(max(repeat // 2, 1))
    ]
    return (
        statistics.median(imports) * 1000,
        statistics.median(rss) / 1024,
        statistics.median(driver) / 1024,
    )


# -- 6. the side-channel command inside `pipetrack run` -------------------------------------
CALLS_SCRIPT = """
pt="$1"; n="$2"
start=$(date +%s%N)
i=1
while [ "$i" -le "$n" ]; do
    $pt progress "$i/$n" > /dev/null
    i=$((i + 1))
done
end=$(date +%s%N)
echo "$(( (end - start) / n / 1000 ))" > "$3"
"""


def progress_command(dsn: str, calls: int, scratch: Path) -> float:
    """Median ms per ``pipetrack progress i/n`` call from a wrapped shell script, over 3 runs."""
    script = scratch / "calls.sh"
    script.write_text(CALLS_SCRIPT)
    command = " ".join([sys.executable, "-m", "tracker"])
    env = {**os.environ, "PIPETRACK_DSN": dsn}
    results = []
    for attempt in range(3):
        out = scratch / f"calls-{attempt}.txt"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tracker",
                "run",
                "--task",
                "BENCH_cli",
                "--",
                "sh",
                str(script),
                command,
                str(calls),
                str(out),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        results.append(int(out.read_text()) / 1000)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or so)")
    parser.add_argument("--dsn", help="a migrated database (default: temporary embedded server)")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--updates", type=int, default=None)
    # The embedded server allows 100 connections; each tracked process holds one while it runs.
    parser.add_argument("--parallel", type=int, default=50, help="processes running at once")
    parser.add_argument(
        "--only", default="1,2,3,4,5,6,7", help="comma-separated sections to run (default: all)"
    )
    args = parser.parse_args()
    compiled_like_an_install()
    quick = args.quick
    processes = args.processes or (20 if quick else 200)
    updates = args.updates or (1_000 if quick else 10_000)
    calls, rounds = (50_000, 5) if quick else (200_000, 9)

    only = {part.strip() for part in args.only.split(",")}
    print(
        f"pipetrack tracker benchmark ({'quick' if quick else 'full'}), python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    with bench_database(args.dsn) as dsn, tempfile.TemporaryDirectory() as scratch:
        t = tracker.Tracker(dsn=dsn, lifecycle=False, spool_dir=Path(scratch) / "spool")
        try:
            if "1" in only:
                print("\n1. hot path (median ns per call)")
                hot = hot_path(t, calls, rounds)
                ratio = hot.pop("ratio advance/tqdm (median of rounds)")
                for name, value in hot.items():
                    print(f"   {name:<40} {value:>9.0f} ns")
                print(f"   advance / tqdm.update = {ratio:.2f}x (median of per-round ratios)")
            if "2" in only:
                print("\n2. original design: connect-update-close per status, same database")
                original_ms, ours_ns = original_design(dsn, t, 50 if quick else 200)
                print(f"   original (connect, UPDATE, commit, close)   {original_ms:>9.2f} ms")
                print(f"   pipetrack advance()                         {ours_ns:>9.0f} ns")
                print(f"   ratio = {original_ms * 1e6 / ours_ns:,.0f}x (target >= 1000x)")
            if "3" in only:
                print("\n3. progress call -> row visible in PostgreSQL")
                for name, (p50, p99) in latency(dsn, t, 30 if quick else 200).items():
                    print(f"   {name:<36} p50 {p50:>7.1f} ms   p99 {p99:>7.1f} ms")
        finally:
            t.shutdown(10)
        if "4" in only:
            print(f"\n4. {processes} processes x {updates} updates ({args.parallel} at once)")
            result = fleet(dsn, processes, updates, args.parallel, Path(scratch) / "fleet")
            untracked, tracked_s = float(result["untracked_s"]), float(result["tracked_s"])
            print(f"   untracked wall {untracked:>8.2f} s")
            print(
                f"   tracked wall   {tracked_s:>8.2f} s   (+{tracked_s - untracked:.2f} s, "
                f"+{(tracked_s - untracked) / processes * 1000:.0f} ms per process)"
            )
            print(
                f"   rows exact     {result['exact']}/{processes}"
                f"   spool files left: {result['spool_files_left']}"
            )
        if "5" in only:
            print("\n5. start-up and memory")
            import_ms, rss_mb, driver_mb = startup(dsn, 5 if quick else 11)
            print(f"   import tracker (fresh interpreter, median)  {import_ms:>6.1f} ms")
            print(f"   RSS added by a tracked run, telemetry off   {rss_mb:>6.1f} MB")
            print(f"     of which psycopg alone (import, connect)  {driver_mb:>6.1f} MB")
        if "6" in only:
            calls = 20 if quick else 100
            print(f"\n6. `pipetrack progress i/n` inside `pipetrack run` ({calls} calls)")
            per_call = progress_command(dsn, calls, Path(scratch))
            print(f"   per call (median of 3 runs)                 {per_call:>6.1f} ms")
        if "7" in only:
            from bench_writes import measure

            window, repeat = (2.0, 3) if quick else (5.0, 5)
            print(f"\n7. sustained writes, 1,000 runs, {repeat} x {window:g} s windows a side")
            r = measure(dsn, 1000, window, repeat, Path(scratch))
            print(
                f"   writer {r['writer']:,.0f}/s, ceiling {r['ceiling']:,.0f}/s: "
                f"{r['ratio']:.0%} (pairs {r['ratio_low']:.0%}-{r['ratio_high']:.0%})"
            )


if __name__ == "__main__":
    main()
