"""A tracked run of SUBTASKS subtasks of 10 items, one item every STEP seconds.

    python ops_steady_run.py TASK SUBTASKS STEP
Prints "ready" once the run has started, so a test can act on a run that exists.
"""

import sys
import time

import tracker

task, subtasks, step = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with tracker.run(task, total_subtasks=subtasks) as run:
    print("ready", flush=True)
    for index in range(subtasks):
        with run.subtask(f"step {index + 1}", items_total=10) as subtask:
            for _ in range(10):
                time.sleep(step)
                subtask.advance()
