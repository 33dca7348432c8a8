"""A tracked tight loop of every kind of call, for the signal stress test (issue 14).

    python signal_stress.py TASK MODE
Prints ``ready <run_id>`` once its run is going, then loops until a signal ends it: genter,
subtask, advance, gmessage, gexit, over and over, so that the signal lands anywhere in them.
MODE ``default`` leaves the signals alone (the process dies of the signal); ``handler`` installs
the script's own SIGTERM/SIGINT handler first, which exits with 100 + the signal's number.
With ``SIGNAL_STRESS_LOG`` set, the tracker's debug log goes to that file (read when a run goes
wrong).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import tracker

task, mode = sys.argv[1], sys.argv[2]
if os.environ.get("SIGNAL_STRESS_LOG"):
    logging.basicConfig(
        filename=os.environ["SIGNAL_STRESS_LOG"],
        level=logging.DEBUG,
        format="%(relativeCreated)d %(threadName)s %(name)s %(levelname)s %(message)s",
    )
if mode == "handler":

    def on_signal(signum: int, frame: object) -> None:
        sys.exit(100 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

with tracker.run(task) as run:
    print(f"ready {run.run_id}", flush=True)
    step = 0
    while True:
        step += 1
        tracker.genter(f"outer {step}")
        with run.subtask(f"inner {step}", items_total=8) as inner:
            for _ in range(8):
                inner.advance()
        tracker.gmessage(f"step {step} done")
        tracker.gexit()
