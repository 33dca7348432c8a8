"""Throughput of `pipetrack run`: a child printing 1M lines, bare vs wrapped.

    python bench/bench_wrapper.py [--lines 1000000] [--repeat 3] [--dsn DSN]

bare:       the child alone, its stdout to /dev/null
bare|cat:   the child piped through `cat` to /dev/null (one pipe hop, like the wrapper adds)
wrapped:    `pipetrack run -- child`, the wrapper's stdout to /dev/null
wrapped+p:  the same with 100k ::pipetrack:: progress lines among the 1M (every 10th line)
bare>log, wrapped>log:  both with stdout to a log file, as a cron job's usually is
start-up:   `pipetrack run -- true`: the fixed cost (interpreter, imports, first and last write)
Each figure is the best of --repeat runs (wall time, so start-up is included: interpreter,
database connection, the run's first and last write). Throughput = lines / seconds; the ratio
is against `bare`. Without --dsn, the embedded PostgreSQL is used (started if needed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_support import compiled_like_an_install

CHILD = """
import sys
lines, every = int(sys.argv[1]), int(sys.argv[2])
write = sys.stdout.write
for i in range(lines):
    if every and i % every == 0:
        write(f"::pipetrack::progress done={i},total={lines}\\n")
    else:
        write(f"{i:07d} the quick brown fox jumps over the lazy dog\\n")
"""


def timed(
    command: list[str], env: dict[str, str], *, shell: bool = False, sink: str = os.devnull
) -> float:
    started = time.perf_counter()
    with open(sink, "wb") as out:
        subprocess.run(command, env=env, check=True, stdout=out, shell=shell)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    compiled_like_an_install()
    env = dict(os.environ)
    if args.dsn:
        env["PIPETRACK_DSN"] = args.dsn
    with tempfile.TemporaryDirectory() as folder:
        child = Path(folder) / "child.py"
        child.write_text(CHILD)
        bare = [sys.executable, str(child), str(args.lines), "0"]
        protocol = [sys.executable, str(child), str(args.lines), "10"]
        wrap = [sys.executable, "-m", "tracker", "run", "--task", "bench_wrapper", "--"]
        piped = " ".join([*bare, "| cat"])
        cases = {
            "bare": (bare, False),
            "bare|cat": (piped, True),
            "wrapped": ([*wrap, *bare], False),
            "wrapped+p": ([*wrap, *protocol], False),
            "bare>log": (bare, False),
            "wrapped>log": ([*wrap, *bare], False),
            "start-up": ([*wrap, "true"], False),
        }
        log = str(Path(folder) / "out.log")
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            for name, (command, shell) in cases.items():
                sink = log if name.endswith(">log") else os.devnull
                took = timed(command if not shell else [str(command)], env, shell=shell, sink=sink)
                best[name] = min(best.get(name, took), took)
    print(f"{args.lines:,} lines, best of {args.repeat}")
    print(f"{'case':<11} {'seconds':>8} {'lines/s':>12} {'vs bare':>8}  (>log: vs bare>log)")
    for name, seconds in best.items():
        if name == "start-up":
            print(f"{name:<11} {seconds:>8.3f}")
            continue
        baseline = best["bare>log"] if name.endswith(">log") else best["bare"]
        ratio = baseline / seconds
        print(f"{name:<11} {seconds:>8.3f} {args.lines / seconds:>12,.0f} {ratio:>8.1%}")
    # What the pass-through itself costs, once the fixed start-up is paid.
    for name in ("wrapped", "wrapped+p"):
        steady = max(best[name] - best["start-up"], 1e-9)
        print(
            f"{name} without start-up: {args.lines / steady:,.0f} lines/s, "
            f"{best['bare'] / steady:.1%} of bare"
        )


if __name__ == "__main__":
    main()
