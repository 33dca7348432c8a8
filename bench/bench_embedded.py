"""How long the embedded PostgreSQL takes to be ready, as a fresh `pipetrack` process sees it.

    python bench/bench_embedded.py [--repeat 5]

cold:    first use on an empty data directory (initdb + start + migrations)
stopped: data directory exists, server stopped (start + migration check)
warm:    server already running (what every tracked script after the first pays)
Each figure is the median wall time of `pipetrack db url` (cold: `db start`) in a new process,
so it includes interpreter start-up; `python -c pass` is shown for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    cli = [sys.executable, "-m", "tracker"]
    results: dict[str, list[float]] = {"python -c pass": [], "cold": [], "stopped": [], "warm": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            env = {**os.environ, "PIPETRACK_DATA_DIR": str(Path(folder))}
            for name in ("PIPETRACK_DSN", "PGHOST", "PGDATABASE", "PGPORT", "PGUSER"):
                env.pop(name, None)
            results["python -c pass"].append(timed([sys.executable, "-c", "pass"], env))
            results["cold"].append(timed([*cli, "db", "start"], env))
            results["warm"].append(timed([*cli, "db", "url"], env))
            subprocess.run([*cli, "db", "stop"], env=env, check=True, capture_output=True)
            results["stopped"].append(timed([*cli, "db", "start"], env))
            subprocess.run([*cli, "db", "stop"], env=env, check=True, capture_output=True)
    print(f"{'case':<16} {'median s':>9} {'min s':>7} {'max s':>7}   (n={repeat})")
    for name, values in results.items():
        print(
            f"{name:<16} {statistics.median(values):>9.3f} {min(values):>7.3f} {max(values):>7.3f}"
        )


if __name__ == "__main__":
    main()
