"""A process for the sampler's tests: does what each line on stdin says, then prints "ok".

write PATH MIB        write MIB MiB to PATH and fsync it
grandchild            start a grandchild running this script
via COMMAND...        have the grandchild do COMMAND
reap                  end the grandchild (close its stdin) and wait for it
fetch URL             download URL over a kept-alive HTTP/1.1 connection, and keep it open
connect N DSN...      open N PostgreSQL connections to DSN (the rest of the line), keep them
burst N KIB           run N short children one after another, each writing KIB KiB and exiting
release               close what fetch and connect keep
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import urllib.parse

held: list[object] = []
grandchild: subprocess.Popen[str] | None = None
BURST = (
    "import os, sys\n"
    "with open(sys.argv[1], 'wb') as f:\n"
    "    f.write(b'b' * int(sys.argv[2]) * 1024); f.flush(); os.fsync(f.fileno())\n"
)


def write(path: str, mib: int) -> None:
    block = b"\xa5" * (1 << 20)
    with open(path, "wb") as file:
        for _ in range(mib):
            file.write(block)
        file.flush()
        os.fsync(file.fileno())


def fetch(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", parts.path)
    response = conn.getresponse()
    while response.read(1 << 16):
        pass
    held.append(conn)


def connect(dsn: str, count: int) -> None:
    import psycopg

    held.extend(psycopg.connect(dsn) for _ in range(count))


def burst(count: int, kib: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for i in range(count):
            path = os.path.join(folder, str(i))
            subprocess.run([sys.executable, "-c", BURST, path, str(kib)], check=True)


for line in sys.stdin:
    command, *args = line.split()
    if command == "write":
        write(args[0], int(args[1]))
    elif command == "grandchild":
        grandchild = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
    elif command == "via" and grandchild is not None:
        assert grandchild.stdin is not None
        assert grandchild.stdout is not None
        grandchild.stdin.write(" ".join(args) + "\n")
        grandchild.stdin.flush()
        grandchild.stdout.readline()
    elif command == "reap" and grandchild is not None:
        assert grandchild.stdin is not None
        grandchild.stdin.close()
        grandchild.wait()
    elif command == "fetch":
        fetch(args[0])
    elif command == "connect":
        connect(" ".join(args[1:]), int(args[0]))
    elif command == "burst":
        burst(int(args[0]), int(args[1]))
    elif command == "release":
        for thing in held:
            thing.close()  # type: ignore[attr-defined]
        held.clear()
    else:
        print(f"unknown command {line!r}", file=sys.stderr)
        sys.exit(2)
    print("ok", flush=True)
