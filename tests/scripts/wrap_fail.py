"""Child for `pipetrack run` tests: writes to stderr, then exits with the code it is given."""

import sys

print("::pipetrack::enter::Doomed step", flush=True)
for i in range(30):
    sys.stderr.write(f"noise line {i}\n")
sys.stderr.write("Traceback (most recent call last):\nValueError: bad input file\n")
sys.exit(int(sys.argv[1]))
