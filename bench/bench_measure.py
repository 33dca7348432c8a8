"""What measuring resources costs a tracked script: its first run's start (the sampler is made
there) and a subtask boundary (a sample on the caller's thread as a step starts and ends).

    python bench/bench_measure.py [--dsn DSN] [--subtasks 2000] [--rounds 5]

start:      ms for ``tracker.run()`` in a fresh interpreter (median of --rounds), the first run
            of the process and a second one
boundaries: µs per subtask (enter and close, nothing inside) in a loop, while the process holds
            no socket and while it holds one TCP connection (then a sample asks the kernel's
            socket table), with the writer writing to the database; and µs per subtask of
            1 ms and of 10 ms of work
starved:    ms for the writer to end 1,000 / 4,000 / 16,000 empty steps that all began and ended
            on one reused boundary sample (what a tight loop leaves a starved writer; made so
            here by a boundary gap of an hour), then write them: linear, not quadratic

Uses only the public API, so the same command measures a version without resource samples
(run it from that version's tree) for the difference. Without --dsn a temporary embedded
PostgreSQL is used.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import bench_database, compiled_like_an_install  # noqa: E402

import tracker  # noqa: E402

START = """
import sys, time, tracker
t = tracker.Tracker(dsn=sys.argv[1], lifecycle=False, console=False, spool_dir=sys.argv[2])
first = time.perf_counter(); run = t.run("BENCH_start"); first = time.perf_counter() - first
second = time.perf_counter(); other = t.run("BENCH_start_2"); second = time.perf_counter() - second
other.finish(); run.finish(); t.shutdown(10)
print(first * 1000, second * 1000)
"""


def start(dsn: str, rounds: int, spool: str) -> tuple[float, float]:
    firsts, seconds = [], []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", START, dsn, spool],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.split()
        firsts.append(float(out[0]))
        seconds.append(float(out[1]))
    return statistics.median(firsts), statistics.median(seconds)


def boundaries(t: tracker.Tracker, count: int, rounds: int, work: float) -> float:
    """Median µs per subtask (enter, ``work`` seconds of busy work, close)."""
    results = []
    for _ in range(rounds):
        with t.run("BENCH_boundaries") as run:
            began = time.perf_counter()
            for _ in range(count):
                with run.subtask("step"):
                    if work:
                        until = time.perf_counter() + work
                        while time.perf_counter() < until:
                            pass
            results.append((time.perf_counter() - began) / count * 1e6)
        t.flush(30)
    return statistics.median(results)


def starved(t: tracker.Tracker, count: int, rounds: int) -> float:
    """Median ms for the flush that ends ``count`` steps left to the writer."""
    from tracker._record import measure

    gap, measure.BOUNDARY_GAP = measure.BOUNDARY_GAP, 3600.0
    results = []
    try:
        for _ in range(rounds):
            with t.run("BENCH_starved") as run:
                for _ in range(count):
                    with run.subtask("step"):
                        pass
                began = time.perf_counter()
                t.flush(600)
                results.append((time.perf_counter() - began) * 1000)
            t.flush(600)
    finally:
        measure.BOUNDARY_GAP = gap
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--subtasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["starved"], help="run only this part")
    args = parser.parse_args()
    compiled_like_an_install()
    with bench_database(args.dsn) as dsn, tempfile.TemporaryDirectory() as spool:
        if args.only == "starved":
            t = tracker.Tracker(dsn=dsn, lifecycle=False, console=False, spool_dir=spool)
            try:
                for count in (1000, 4000, 16000):
                    took = starved(t, count, args.rounds)
                    print(f"starved: {took:.0f} ms to end {count:,} steps on one sample")
            finally:
                t.shutdown(10)
            return
        first, second = start(dsn, args.rounds, spool)
        print(f"start: first run {first:.2f} ms, second run {second:.2f} ms (median)")
        t = tracker.Tracker(dsn=dsn, lifecycle=False, console=False, spool_dir=spool)
        try:
            bare = boundaries(t, args.subtasks, args.rounds, 0.0)
            print(f"boundaries: {bare:.1f} µs per empty subtask, no socket held")
            server = socket.create_server(("127.0.0.1", 0))
            client = socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
            try:
                held = boundaries(t, args.subtasks, args.rounds, 0.0)
                print(f"boundaries: {held:.1f} µs per empty subtask, one TCP connection held")
                busy = boundaries(t, max(args.subtasks // 10, 50), args.rounds, 0.001)
                print(f"boundaries: {busy:.1f} µs per subtask of 1 ms work, TCP connection held")
            finally:
                for each in (accepted, client, server):
                    each.close()
            busy = boundaries(t, max(args.subtasks // 10, 50), args.rounds, 0.001)
            print(f"boundaries: {busy:.1f} µs per subtask of 1 ms work, no socket held")
            busy = boundaries(t, max(args.subtasks // 40, 20), args.rounds, 0.01)
            print(f"boundaries: {busy:.1f} µs per subtask of 10 ms work, no socket held")
        finally:
            t.shutdown(10)


if __name__ == "__main__":
    main()
