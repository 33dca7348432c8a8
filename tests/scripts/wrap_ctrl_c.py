"""Child for the Ctrl-C test: counts the SIGINTs it receives, then exits 3."""

import signal
import sys
import time

received = []
signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
print("ready", flush=True)
deadline = time.monotonic() + 60
while not received and time.monotonic() < deadline:
    time.sleep(0.01)
# A duplicate (forwarded by the wrapper as well) would arrive within this half second.
settle = time.monotonic() + 0.5
while time.monotonic() < settle:
    time.sleep(0.01)
print(f"count {len(received)}", flush=True)
sys.exit(3)
