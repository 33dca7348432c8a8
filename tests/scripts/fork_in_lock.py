"""A fork while another thread holds the locks a child's tracking needs (issue 14).

    python fork_in_lock.py
A thread takes the observers', telemetry's, the default Tracker's and its runs' locks and keeps
them; the main thread forks meanwhile. The child, where those locks stay held for ever, starts
and finishes a run of its own, printing ``CHILD <run_id>``; the parent prints ``PARENT`` once
the child has exited 0 and then releases the locks and finishes its own run.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import tracker
from tracker._runtime import observers, trackers
from tracker._telemetry import _context, _metrics

parent_run = tracker.run("DAILY_fork_parent")
held = [
    observers._lock,
    _context._lock,
    _metrics._instruments_lock,
    trackers._default_lock,
    trackers.default_tracker()._lock,
    parent_run._lock,
]
taken, release = threading.Event(), threading.Event()


def hold() -> None:
    for lock in held:
        lock.acquire()
    taken.set()
    release.wait()
    for lock in reversed(held):
        lock.release()


holder = threading.Thread(target=hold)
holder.start()
taken.wait()
pid = os.fork()
if pid == 0:
    # Telemetry takes this one at a run's start when it is on (off here: no collector).
    with _metrics._instruments_lock:
        pass
    with tracker.run("DAILY_fork_child", total_subtasks=1) as run:
        tracker.genter("in the child")
        tracker.gmessage("still going")
        tracker.gexit()
    print(f"CHILD {run.run_id}", flush=True)
    tracker.shutdown()
    os._exit(0)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print(f"PARENT {os.waitstatus_to_exitcode(status)}", flush=True)
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("PARENT hung child killed", flush=True)
release.set()
holder.join()
parent_run.finish()
