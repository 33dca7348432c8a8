"""Writes pipetrack's Grafana dashboards to grafana/dashboards/*.json.

    python grafana/build_dashboards.py          # regenerate the JSON
    python grafana/build_dashboards.py --check  # exit 1 if the JSON is not what the code makes

Metric names come from docs/metrics.md and the recording rules in prometheus/rules/; the SQL reads
the views and tables of sql/ as the read-only role. Tests run every query for real.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The board modules sit beside this script, which runs as a file rather than from a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _failures import failures
from _overview import overview
from _stages import stages
from _task_detail import task_detail

OUT = Path(__file__).resolve().parent / "dashboards"

BOARDS = {
    "pipetrack-overview.json": overview,
    "pipetrack-task-detail.json": task_detail,
    "pipetrack-stages.json": stages,
    "pipetrack-failures.json": failures,
}


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in BOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON files are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale dashboards (run python grafana/build_dashboards.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
