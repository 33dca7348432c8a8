"""The resource sampler against real processes: disk bytes, non-disk (socket and pipe) bytes,
database connections, and counters that never run backwards when processes come and go."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.tracker_support import proxy_for, read_line
from tracker._sampling import DATABASE_PORTS, DatabaseEndpoints, ResourceSample, ResourceSampler
from tracker._sampling._readers import ProcReader, Reading

SCRIPT = Path(__file__).parent / "scripts" / "resource_child.py"
MIB = 1 << 20
READERS = ["proc", "psutil"]


class Child:
    """tests/scripts/resource_child.py, driven line by line; always reaped."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid

    def do(self, line: str, timeout: float = 60.0) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = read_line(self.process, timeout)
        assert answer == "ok", f"{line!r} -> {answer!r}; stderr: {self.process.stderr}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def child() -> Iterator[Child]:
    made = Child()
    try:
        yield made
    finally:
        made.close()


def within_ten_percent(value: int | None, expected: int) -> bool:
    return value is not None and expected <= value <= expected * 1.1


@pytest.mark.parametrize("reader", READERS)
def test_a_child_writing_64_mib_with_fsync_shows_64_mib_written(child, tmp_path, reader):
    sampler = ResourceSampler(child.pid, reader=reader)
    child.do(f"write {tmp_path / 'data'} 64")
    sample = sampler.sample()
    assert sample is not None
    assert within_ten_percent(sample.disk_write_bytes, 64 * MIB), sample
    assert sample.disk_write_rate is not None
    assert sample.disk_write_rate > 0


@pytest.mark.parametrize("reader", READERS)
def test_a_grandchilds_writes_are_summed_once_whether_seen_alive_reaped_or_both(
    child, tmp_path, reader
):
    sampler = ResourceSampler(child.pid, reader=reader)
    child.do("grandchild")
    child.do(f"via write {tmp_path / 'a'} 32")
    alive = sampler.sample()  # sees the grandchild with its 32 MiB
    assert alive is not None
    assert alive.processes == 2
    assert within_ten_percent(alive.disk_write_bytes, 32 * MIB), alive
    child.do(f"via write {tmp_path / 'b'} 32")
    child.do("reap")  # the last 32 MiB were never seen in the grandchild: only in its parent
    reaped = sampler.sample()
    assert reaped is not None
    assert reaped.processes == 1
    assert within_ten_percent(reaped.disk_write_bytes, 64 * MIB), reaped


def test_this_process_writing_64_mib_shows_64_mib_written(tmp_path):
    sampler = ResourceSampler()  # this process, as the tracker's writer samples it
    with open(tmp_path / "data", "wb") as file:
        for _ in range(64):
            file.write(b"\x5a" * MIB)
        file.flush()
        os.fsync(file.fileno())
    sample = sampler.sample()
    assert sample is not None
    assert within_ten_percent(sample.disk_write_bytes, 64 * MIB), sample


class _Payload(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client holds the connection afterwards
    body = os.urandom(MIB) * 20

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Payload)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/payload"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_20_mib_download_shows_in_the_tcp_received_bytes_and_its_connection(child, http_server):
    sampler = ResourceSampler(child.pid)
    child.do(f"fetch {http_server}")  # the connection stays open (HTTP/1.1 keep-alive)
    sample = sampler.sample()
    assert sample is not None
    assert sample.tcp_received_bytes is not None
    assert 20 * MIB <= sample.tcp_received_bytes <= 21 * MIB, sample
    assert sample.tcp_sent_bytes is not None
    assert 0 < sample.tcp_sent_bytes < 4096
    assert sample.tcp_receive_rate is not None
    assert sample.tcp_receive_rate > 0
    assert (sample.other_connections, sample.db_connections) == (1, 0), sample
    child.do("release")
    after = sampler.sample()
    assert after is not None
    assert after.tcp_received_bytes == sample.tcp_received_bytes  # a closed socket loses nothing
    assert after.tcp_receive_rate == 0
    assert after.other_connections == 0


def test_a_download_opened_and_closed_between_two_samples_is_not_seen(child, http_server):
    # The documented limit of per-socket counters (and why rchar is not used instead: Python's
    # sockets, like curl's and libpq's, use recv(), which /proc/PID/io's rchar does not count).
    sampler = ResourceSampler(child.pid)
    child.do(f"fetch {http_server}")
    child.do("release")
    sample = sampler.sample()
    assert sample is not None
    assert sample.tcp_received_bytes == 0
    assert sample.other_connections == 0


def test_the_portable_reader_says_nothing_about_sockets(child, http_server):
    sampler = ResourceSampler(child.pid, reader="psutil")
    child.do(f"fetch {http_server}")
    sample = sampler.sample()
    assert sample is not None
    assert sample.tcp_received_bytes is None
    assert sample.db_connections is None
    assert sample.other_connections is None
    assert sample.open_fds is not None
    assert sample.open_fds >= 4


def test_three_connections_over_the_servers_unix_socket_count_as_database(child, db_dsn):
    sampler = ResourceSampler(child.pid)
    child.do(f"connect 3 {db_dsn}")
    sample = sampler.sample()
    assert sample is not None
    assert (sample.db_connections, sample.other_connections) == (3, 0), sample
    child.do("release")
    after = sampler.sample()
    assert after is not None
    assert after.db_connections == 0


def test_tcp_connections_to_the_configured_database_count_as_database(child, db_dsn):
    with proxy_for(db_dsn) as proxy:  # PostgreSQL over TCP, on a port no list knows
        unknown = ResourceSampler(child.pid)
        configured = ResourceSampler(child.pid, database=DatabaseEndpoints.from_conninfo(proxy.dsn))
        child.do(f"connect 3 {proxy.dsn}")
        seen_unknown = unknown.sample()
        seen_configured = configured.sample()
        child.do("release")
    assert seen_unknown is not None
    assert seen_configured is not None
    assert (seen_unknown.db_connections, seen_unknown.other_connections) == (0, 3)
    assert (seen_configured.db_connections, seen_configured.other_connections) == (3, 0)


def test_a_well_known_database_port_counts_as_database_without_configuration():
    listener = _listen_on_a_database_port()
    port = listener.getsockname()[1]
    script = (
        "import socket, sys\n"
        f"held = [socket.create_connection(('127.0.0.1', {port})) for _ in range(2)]\n"
        "print('ok', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        sampler = ResourceSampler(holder.pid)
        assert read_line(holder) == "ok"
        tree = sampler.sample()
    finally:
        holder.communicate("\n", timeout=30)
        listener.close()
    assert tree is not None
    assert (tree.db_connections, tree.other_connections) == (2, 0), tree


def _listen_on_a_database_port() -> socket.socket:
    for port in DATABASE_PORTS:
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:  # taken here: another of the list will do
            listener.close()
            continue
        listener.listen(8)
        return listener
    raise AssertionError(f"every well-known database port is taken: {sorted(DATABASE_PORTS)}")


def test_the_trackers_own_connection_is_left_out_when_named(db_dsn):
    with psycopg.connect(db_dsn) as own, psycopg.connect(db_dsn) as users:
        counted = ResourceSampler().sample()
        skipping = ResourceSampler(skip_fds=lambda: {own.fileno()}).sample()
        assert users.fileno() != own.fileno()
    assert counted is not None
    assert skipping is not None
    assert counted.db_connections == 2
    assert skipping.db_connections == 1


@pytest.mark.parametrize("reader", READERS)
def test_children_exiting_between_samples_never_give_a_negative_rate(child, reader):
    sampler = ResourceSampler(child.pid, reader=reader)
    samples: list[ResourceSample] = []
    for _ in range(8):
        child.do("burst 3 256")  # three children, each writes 256 KiB and exits
        sample = sampler.sample()
        assert sample is not None
        samples.append(sample)
    for sample in samples:
        rates = (
            sample.disk_read_rate,
            sample.disk_write_rate,
            *((sample.tcp_receive_rate, sample.tcp_send_rate) if reader == "proc" else ()),
        )
        assert all(rate is not None and rate >= 0 for rate in rates), sample
        assert sample.cpu_percent >= 0
    for before, after in itertools.pairwise(samples):
        assert after.disk_write_bytes >= before.disk_write_bytes
        assert after.cpu_seconds >= before.cpu_seconds
    # 24 children of 256 KiB each: counted once (absorbed into the parent at reaping), not twice.
    assert within_ten_percent(samples[-1].disk_write_bytes, 24 * 256 * 1024), samples[-1]


def test_a_sampler_of_a_process_that_is_gone_says_none():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert ResourceSampler(gone.pid).sample() is None
    assert ResourceSampler(-1).sample() is None


def test_the_sampler_says_none_instead_of_raising_when_its_reader_fails():
    class Failing:
        def read(self, root, also, skip_fds):
            raise RuntimeError("the platform refuses")

    sampler = ResourceSampler(reader="proc")
    sampler._reader = Failing()
    assert sampler.sample() is None
    assert sampler.sample() is None  # and stays quiet


class Scripted:
    """A reader that replays given readings: pid reuse and counters that go backwards."""

    def __init__(self, rounds: list[list[Reading]]) -> None:
        self.rounds = rounds

    def read(self, root, also, skip_fds):
        return self.rounds.pop(0)


def reading(pid, ident, ppid, cpu, disk) -> Reading:
    return Reading(pid, ident, ppid, 1000, cpu, disk, 3, frozenset())


def test_a_reused_pid_or_a_counter_going_backwards_never_gives_a_negative_rate():
    ticks = iter(range(100))
    sampler = ResourceSampler(1, reader="proc", clock=lambda: float(next(ticks)))
    sampler._reader = Scripted(
        [
            [reading(1, 1.0, 0, 1.0, (0, 0)), reading(2, 5.0, 1, 9.0, (0, 900))],
            # pid 2 is now another process, started later, with smaller counters
            [reading(1, 1.0, 0, 1.0, (0, 0)), reading(2, 7.0, 1, 0.5, (0, 100))],
            # the same process reporting less than before (a kernel oddity): clamped
            [reading(1, 1.0, 0, 0.5, (0, 0)), reading(2, 7.0, 1, 0.5, (0, 50))],
        ]
    )
    sampler._take(baseline=True)
    first = sampler.sample()
    second = sampler.sample()
    assert first is not None
    assert second is not None
    # The first pid-2 process was a baseline (900 before sampling); the second counts whole.
    assert first.disk_write_bytes == 100
    assert first.cpu_seconds == 0.5
    assert second.disk_write_bytes == 100
    assert second.disk_write_rate == 0
    assert second.cpu_percent == 0


def test_a_child_started_by_another_thread_is_in_the_tree():
    # /proc lists a child under the thread that forked it: a process of several threads has
    # each thread's list read (one of a single thread, only its own).
    started: list[subprocess.Popen[bytes]] = []
    done = threading.Event()

    def spawn() -> None:
        started.append(subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE))
        done.wait(60)  # the thread lives while the test samples: the child stays its own

    thread = threading.Thread(target=spawn)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not started:
            assert time.monotonic() < deadline, "the thread never started its child"
            time.sleep(0.01)
        pids = {r.pid for r in ProcReader().read(os.getpid(), [], ())}
        assert started[0].pid in pids
        assert os.getpid() in pids
    finally:
        done.set()
        thread.join(60)
        for process in started:
            process.communicate(b"\n", timeout=30)
