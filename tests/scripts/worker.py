"""One of many concurrent pipeline processes: ``worker.py N`` tracks a run with N items."""

from __future__ import annotations

import sys

import tracker

n = int(sys.argv[1])
with tracker.run(f"DAILY_worker_{n:03d}", total_subtasks=2) as run:
    with run.subtask("load", items_total=n) as st:
        for _ in range(n):
            st.advance()
    tracker.genter("write {n} rows")
    tracker.track_task_progress(n, n, "wrote {n}")
    tracker.gexit()
    run.message(f"worker {n} done")
print(run.run_id, flush=True)
