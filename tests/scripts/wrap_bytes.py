"""Child for `pipetrack run` tests: writes the bytes of a file to stdout and stderr, unchanged."""

import os
import sys

with open(sys.argv[1], "rb") as f:
    data = f.read()
target = int(sys.argv[2]) if len(sys.argv) > 2 else 1
view = memoryview(data)
while view:
    # Odd-sized writes, so chunk boundaries fall anywhere in the wrapper's reads.
    written = os.write(target, view[:7919])
    view = view[written:]
