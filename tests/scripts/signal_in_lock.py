"""A signal that lands while the main thread holds a lock the end of the run needs (issue 14).

    python signal_in_lock.py MODE SIGNAL
MODE ``observer``: an observer holds its own (non-reentrant) lock in ``on_subtask_start`` and
the process signals itself there; ``on_run_end`` wants the same lock. ``run_lock``: the main
thread holds the run's lock. ``handler``: as ``observer``, with the script's own handler.
``spans``: the main thread holds the lock of the run's telemetry spans (telemetry on).
Prints ``RUN <run_id>`` first. Untracked, the process would die of SIGNAL (or exit 7 from its
handler); it must do so within the exit bound, with the run CANCELLED in the database.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import tracker
from tracker._runtime import observers

MODE, SIGNUM = sys.argv[1], getattr(signal, sys.argv[2])


def signal_myself() -> None:
    os.kill(os.getpid(), SIGNUM)
    for _ in range(100_000):  # the handler runs at one of these bytecodes, still in the lock
        pass
    raise AssertionError("the signal did not end the process")


class Holding:
    """An observer with a lock of its own, as any observer (telemetry's had one) may have."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.armed = False

    def on_subtask_start(self, run: tracker.Run, subtask: tracker.Subtask) -> None:
        with self.lock:
            if self.armed:
                signal_myself()

    def on_run_end(self, run: tracker.Run) -> None:
        with self.lock:
            print(f"END {run.status}", flush=True)


if MODE == "handler":

    def on_term(signum: int, frame: object) -> None:
        print("own handler ran", flush=True)
        sys.exit(7)

    signal.signal(SIGNUM, on_term)

observer = Holding()
observers.add_observer(observer)
run = tracker.run(f"DAILY_signal_in_{MODE}", total_subtasks=3)
print(f"RUN {run.run_id}", flush=True)
with run.subtask("first", items_total=2) as first:
    first.advance()
if MODE == "run_lock":
    with run._lock:
        signal_myself()
if MODE == "spans":
    from tracker._telemetry import OBSERVER

    spans = OBSERVER._runs[run.run_id].spans
    assert spans is not None, "telemetry is off"
    with spans._lock:
        signal_myself()
observer.armed = True
run.subtask("second")
