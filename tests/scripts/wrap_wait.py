"""Child for `pipetrack run` tests: says it is ready (and its pid), then waits to be signalled."""

import os
import sys
import time

print("::pipetrack::enter::Waiting", flush=True)
print(f"ready {os.getpid()}", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)  # a child that works until someone stops it
sys.exit(0)
