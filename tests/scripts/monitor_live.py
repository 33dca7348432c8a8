"""Child for the monitor's live test: a tracked run that reports progress, says when, and
finishes when the test says so (a file named go in the folder it is given)."""

import sys
import time
from pathlib import Path

import tracker

folder = Path(sys.argv[1])
with tracker.run("DAILY_77_live", total_subtasks=2) as run:
    with run.subtask("loading files", items_total=10) as step:
        for _ in range(3):
            step.advance()
        (folder / "advanced").write_text(str(time.time()))
        deadline = time.monotonic() + 120
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the test decides when the run goes on
        for _ in range(7):
            step.advance()
    with run.subtask("writing report"):
        run.message("all written")
