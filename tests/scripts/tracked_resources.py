"""A tracked run for the resource-record tests: does what each line on stdin says, each inside a
subtask named after its command (release aside), waits until the writer has recorded the subtask's end, then
prints "ok". ``finish`` (or the end of stdin) ends the run, and the script prints its run id.

write PATH MIB        write MIB MiB to PATH and fsync it
allocate MIB          hold MIB MiB of memory for a moment, then free it
idle SECONDS          do nothing for a while
fetch URL             download URL over a kept-alive HTTP/1.1 connection, and keep it open
connect N DSN...      open N PostgreSQL connections to DSN (the rest of the line), keep them
count NAME N          tracker.gcount(NAME, N): the subtask's count, and so the run's
release               close what fetch and connect keep
"""

from __future__ import annotations

import http.client
import os
import sys
import time
import urllib.parse

import tracker

held: list[object] = []


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


def release() -> None:
    while held:
        held.pop().close()  # type: ignore[attr-defined]


def do(words: list[str]) -> None:
    command = words[0]
    if command == "write":
        write(words[1], int(words[2]))
    elif command == "allocate":
        memory = bytearray(int(words[1]) << 20)
        memory[:: 1 << 12] = b"\x01" * len(memory[:: 1 << 12])  # touch every page
        time.sleep(0.2)
        del memory
    elif command == "idle":
        time.sleep(float(words[1]))
    elif command == "fetch":
        fetch(words[1])
    elif command == "connect":
        connect(" ".join(words[2:]), int(words[1]))
    elif command == "count":
        tracker.gcount(words[1], int(words[2]))
    elif command == "release":
        release()
    else:
        raise SystemExit(f"unknown command {command!r}")


with tracker.run("DAILY_resources") as run:
    print("READY", run.run_id, flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words == ["finish"]:
            break
        if words[0] == "release":
            do(words)
        else:
            with run.subtask(words[0]):
                do(words)
        tracker.flush()  # the subtask's end is measured and written
        print("ok", flush=True)
print(run.run_id, flush=True)
