"""The resource sampler's cost, the storage its samples take, and the socket figures compared.

    python bench/bench_sampler.py [--repeat 50] [--dsn DSN] [--only SECTION ...]

sampling:  ms per ResourceSampler.sample() of this process alone and of a tree of 10, 50 and
           200 sleeping children (each holding a pipe and an unconnected socket), with the /proc
           reader and with psutil's (median and p90 of --repeat samples; the children start
           before timing). The /proc reader's socket table dumps the kernel's TCP table at the
           first sample and then every 30 s while the tree holds sockets that are no
           connection (these children's); "dumping" is that sample's cost, measured with a
           table that rechecks at every sample; "dumps" counts the dumps of the timed samples
storage:   the rows and bytes (pg_total_relation_size of pipeline_run_sample, its index and
           TOAST included) one run-hour of samples takes at the default cadence (one per 10 s
           in a run's first hour, one per 60 s after), measured by inserting 24 hours of one run
download:  a child downloads 20 MiB from a local HTTP server: what /proc/PID/io's rchar grew by
           (the figure a "rchar minus storage" measure would use) against the TCP bytes the
           sampler reports from tcp_info
Without --dsn, a temporary embedded PostgreSQL is used.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_support import bench_database
from tracker._sampling import ResourceSampler, SampleCadence
from tracker._sampling._socket_table import SocketTable

SLEEPER = "import socket, sys, time\ns = socket.socket()\nsys.stdin.read()\n"
MIB = 1 << 20


def timed(sampler: ResourceSampler, repeat: int, size: int) -> str:
    """median / p90 ms of ``repeat`` samples."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sample = sampler.sample()
        times.append((time.perf_counter() - start) * 1000)
    assert sample is not None
    assert sample.processes == size + 1, sample
    times.sort()
    return f"{statistics.median(times):7.2f} / {times[len(times) * 9 // 10]:6.2f}"


def sampling(sizes: list[int], repeat: int) -> None:
    print("sampling: ms per sample (median / p90)")
    print(
        f"{'processes':>10} {'proc reader':>16} {'dumps':>5} {'proc, dumping':>16}"
        f" {'psutil reader':>16}"
    )
    for size in sizes:
        children = [
            subprocess.Popen([sys.executable, "-c", SLEEPER], stdin=subprocess.PIPE)
            for _ in range(size)
        ]
        try:
            time.sleep(1.0 + size / 50)  # let them start
            table = SocketTable()
            sampler = ResourceSampler(reader="proc", socket_table=table)
            before = table.dumps  # the baseline's, before timing
            cached = timed(sampler, repeat, size)
            dumps = table.dumps - before
            always = SocketTable(recheck_after=0.0)
            dumping = timed(ResourceSampler(reader="proc", socket_table=always), repeat, size)
            portable = timed(ResourceSampler(reader="psutil"), repeat, size)
            print(f"{size + 1:>10} {cached:>16} {dumps:>5} {dumping:>16} {portable:>16}")
        finally:
            for child in children:
                if child.stdin is not None:
                    child.stdin.close()
            for child in children:
                child.wait()


def storage(dsn: str) -> None:
    import psycopg

    cadence = SampleCadence()
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path = pipetrack")
        conn.execute(
            "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id,"
            " execution_start, execution_status) VALUES (gen_random_uuid(), 'bench', 'h', 1, %s,"
            " 'RUNNING') RETURNING run_id",
            (start,),
        )
        run_id = conn.execute("SELECT run_id FROM pipeline_status").fetchone()[0]
        base = conn.execute("SELECT pg_total_relation_size('pipeline_run_sample')").fetchone()[0]
        rows: list[tuple[object, ...]] = []
        last = None
        for second in range(0, 24 * 3600 + 1):
            if cadence.due(float(second), last):
                last = float(second)
                n = len(rows)
                rows.append(
                    (run_id, start + timedelta(seconds=second), n % 7 + 1, 3, 512 * MIB + n,
                     87.5, 1.5 * n, 4096 * n, 65536 * n, 1024 * n, 128 * n, 1, 2, 23)
                )  # fmt: skip
        first_hour = [r for r in rows if r[1] < start + timedelta(hours=1)]
        sizes = []
        with conn.cursor() as cur:
            for batch in (first_hour, rows[len(first_hour) :]):
                cur.executemany(
                    "INSERT INTO pipeline_run_sample VALUES"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    batch,
                )
                conn.execute("VACUUM ANALYZE pipeline_run_sample")
                total = conn.execute("SELECT pg_total_relation_size('pipeline_run_sample')")
                sizes.append(total.fetchone()[0] - base)
        marks = [(1, first_hour, sizes[0]), (24, rows, sizes[1])]
    print("storage: one run's samples at the default cadence")
    for hour, upto, size in marks:
        print(
            f"  first {hour:>2} h: {len(upto):>5} rows, {size / 1024:8.1f} KiB"
            f" ({size / len(upto):5.1f} B/row, {size / hour / 1024:6.1f} KiB per run-hour)"
        )
    later = marks[1]
    rows_later = (len(later[1]) - len(marks[0][1])) / 23
    bytes_later = (later[2] - marks[0][2]) / 23
    per_hour = f"{rows_later:.0f} rows and {bytes_later / 1024:.1f} KiB per run-hour"
    print(f"  after the first hour: {per_hour}")


class _Payload(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = os.urandom(MIB) * 20

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


FETCH = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
sys.stdin.readline()
conn.request("GET", "/")
response = conn.getresponse()
while response.read(1 << 16):
    pass
print("done", flush=True)
sys.stdin.readline()
"""


def rchar(pid: int) -> int:
    with open(f"/proc/{pid}/io", "rb") as file:
        fields = dict(line.split(b":") for line in file.read().splitlines())
    return int(fields[b"rchar"])


def download() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Payload)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    child = subprocess.Popen(
        [sys.executable, "-c", FETCH, str(server.server_address[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        time.sleep(1.0)
        sampler = ResourceSampler(child.pid)
        before = rchar(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()
        grown = rchar(child.pid) - before
        sample = sampler.sample()
        assert sample is not None
        print("download: 20 MiB over HTTP on 127.0.0.1, connection still open")
        print(f"  rchar grew by      {grown / MIB:8.2f} MiB  (recv() is not counted in rchar)")
        print(f"  tcp_info received  {(sample.tcp_received_bytes or 0) / MIB:8.2f} MiB")
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait()
        server.shutdown()
        server.server_close()


SECTIONS = ["sampling", "download", "storage"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--dsn", default=None)
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="sections to run"
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"processes on this machine: {sum(1 for p in os.listdir('/proc') if p.isdigit())}")
    if "sampling" in args.only:
        sampling([0, 9, 49, 199], args.repeat)
    if "download" in args.only:
        download()
    if "storage" in args.only:
        with bench_database(args.dsn) as dsn:
            storage(dsn)


if __name__ == "__main__":
    main()
