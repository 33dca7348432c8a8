"""Grandchild for `pipetrack run` tests: holds ~150 MB until a file appears, then exits."""

import os
import sys
import time

block = bytearray(150 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page so it counts as resident
print("allocated", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.05)
