"""A pipeline script for the lifecycle tests: ``lifecycle.py MODE`` ends its run the MODE way.

Prints ``READY <run_id>`` once its run is going (the signal tests wait for it).
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import tracker

MODE = sys.argv[1]


def ready(run_id: str) -> None:
    print(f"READY {run_id}", flush=True)


def loop_forever(run: tracker.Run) -> None:
    with run.subtask("waiting for a signal", items_total=10**9) as st:
        st.advance()
        ready(run.run_id)
        while True:
            st.advance()
            time.sleep(0.005)


if MODE == "normal":
    # The original design's API; no track_finish: exit alone must make it FINISHED.
    ready(tracker.track_init("DAILY_lifecycle_normal", total_subtasks=2))
    tracker.genter("one")
    tracker.gexit()
    tracker.genter("two")
    tracker.gexit()
elif MODE == "exception":
    ready(tracker.track_init("DAILY_lifecycle_exception"))
    tracker.genter("loading")

    def load_state(code: str) -> None:
        raise ValueError(f"bad state file {code}")

    load_state("DE")
elif MODE in ("sigterm", "sigint"):
    loop_forever(tracker.run("DAILY_lifecycle_signal"))
elif MODE == "handler":
    # The script's own SIGTERM handler, installed before tracking starts, still runs.
    def on_term(signum: int, frame: object) -> None:
        print("own handler ran", flush=True)
        sys.exit(7)

    signal.signal(signal.SIGTERM, on_term)
    loop_forever(tracker.run("DAILY_lifecycle_handler"))
elif MODE == "error":
    ready(tracker.track_init("DAILY_lifecycle_error"))
    tracker.genter("loading")
    tracker.track_error("could not load Delaware", "file missing: DE.csv")
    # The script carries on and exits 0: the run stays FAILED.
elif MODE == "finish_twice":
    ready(tracker.track_init("DAILY_lifecycle_twice"))
    tracker.track_finish("first")
    tracker.track_finish("second")
elif MODE == "thread_exception":
    ready(tracker.track_init("DAILY_lifecycle_thread"))

    def worker() -> None:
        raise RuntimeError("worker died")

    thread = threading.Thread(target=worker, name="loader")
    thread.start()
    thread.join()
elif MODE == "sys_exit":
    with tracker.run("DAILY_lifecycle_exit") as run:
        ready(run.run_id)
        sys.exit(3)
elif MODE == "embedded":
    # No database configured at all: the embedded server is started and migrated for us.
    with tracker.run("DAILY_lifecycle_embedded", total_subtasks=1) as run:
        ready(run.run_id)
        for _ in tracker.progress(range(3), "three items"):
            pass
else:
    raise SystemExit(f"unknown mode {MODE}")
