"""The resource record, end to end: real tracked processes (and a command under ``pipetrack
run``) write to real PostgreSQL their totals, their subtasks' totals and their rows of
``pipeline_run_sample``."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.rows import dict_row

from tests.tracker_support import (
    SCRIPTS,
    child_env,
    fetch_run,
    fetch_subtasks,
    make_tracker,
    proxy_for,
    read_line,
)

MIB = 1 << 20
PIPETRACK = [sys.executable, "-m", "tracker"]


class Tracked:
    """tests/scripts/tracked_resources.py: a tracked run doing what it is told; always reaped."""

    def __init__(self, env: dict[str, str], launcher: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [*launcher, sys.executable, str(SCRIPTS / "tracked_resources.py")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = read_line(self.process, 60)
        assert ready.startswith("READY "), ready
        self.run_id = ready.split()[1]

    def do(self, line: str, timeout: float = 120.0) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = read_line(self.process, timeout)
        assert answer == "ok", f"{line!r} -> {answer!r}"

    def finish(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("finish\n")
        self.process.stdin.flush()
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == self.run_id

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(60)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def tracked(db_dsn: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Tracked] = []

    def start(dsn: str | None = None, launcher: tuple[str, ...] = ()) -> Tracked:
        made.append(Tracked(child_env(dsn or db_dsn, tmp_path / "data"), launcher))
        return made[-1]

    try:
        yield start
    finally:
        for each in made:
            each.close()


def within_ten_percent(value: int | None, expected: int) -> bool:
    return value is not None and expected <= value <= expected * 1.1


def samples(db: Any, run_id: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM pipeline_run_sample WHERE run_id = %s ORDER BY sampled_at", (run_id,)
        ).fetchall()


def test_a_tracked_script_writing_64_mib_with_fsync_records_64_mib_on_the_run_and_its_step(
    tracked, db, tmp_path
):
    run = tracked()
    run.do(f"write {tmp_path / 'data'} 64")
    run.do("idle 0.3")
    run.finish()
    row = fetch_run(db, run.run_id)
    assert within_ten_percent(row["disk_write_bytes"], 64 * MIB), row["disk_write_bytes"]
    assert row["cpu_seconds"] > 0
    write, idle = fetch_subtasks(db, run.run_id)
    # The step that wrote has the 64 MiB; the idle one next to it has none of them.
    assert within_ten_percent(write["disk_write_bytes"], 64 * MIB), write
    assert idle["disk_write_bytes"] < MIB, idle
    # Each step has its CPU time. Not compared: the process's other threads (the writer, the
    # sampler) run during the idle step too, and CPU time moves in 10 ms ticks (both steps
    # showed 0.02 s on a busy machine).
    assert write["cpu_seconds"] > 0, write
    assert idle["cpu_seconds"] >= 0, idle
    rows = samples(db, run.run_id)
    assert rows, "no sample rows"
    last = rows[-1]
    assert within_ten_percent(last["disk_write_bytes"], 64 * MIB), last
    assert last["cpu_seconds"] == pytest.approx(row["cpu_seconds"])
    assert last["processes"] == 1
    assert last["open_fds"] > 0


def test_the_memory_a_step_peaks_at_is_its_own(tracked, db):
    run = tracked()
    run.do("idle 0.1")
    run.do("allocate 256")
    run.do("idle 0.1")
    run.finish()
    before, allocate, after = fetch_subtasks(db, run.run_id)
    assert allocate["peak_rss_bytes"] >= 256 * MIB, allocate
    assert before["peak_rss_bytes"] < 200 * MIB, before
    # The kernel's peak (ru_maxrss) is the process's, reached during "allocate": never blamed
    # on a later step that did not reach it again.
    assert after["peak_rss_bytes"] < 200 * MIB, after
    assert fetch_run(db, run.run_id)["peak_memory_mb"] >= 256


# Holds 300 MiB (every page touched), then becomes the command it is given: Linux carries
# ru_maxrss across exec, so the tracked script's "kernel peak" would be this one's.
BIG_LAUNCHER = (
    sys.executable,
    "-c",
    "import os, sys\n"
    "held = bytearray(300 << 20)\n"
    "held[:: 1 << 12] = b'\\x01' * len(held[:: 1 << 12])\n"
    "os.execv(sys.argv[1], sys.argv[1:])",
)


def test_a_script_started_by_a_big_process_reports_its_own_peak_not_its_parents(tracked, db):
    run = tracked(launcher=BIG_LAUNCHER)
    run.do("idle 0.1")
    run.do("allocate 64")
    run.finish()
    idle, allocate = fetch_subtasks(db, run.run_id)
    assert idle["peak_rss_bytes"] < 200 * MIB, idle
    assert 64 * MIB <= allocate["peak_rss_bytes"] < 200 * MIB, allocate
    assert 64 <= fetch_run(db, run.run_id)["peak_memory_mb"] < 200


class _Payload(http.server.BaseHTTPRequestHandler):
    """20 MiB at about 100 MiB/s, as a fast server far away sends it (not at memory speed)."""

    protocol_version = "HTTP/1.1"  # keep-alive: the client holds the connection afterwards
    chunk = os.urandom(MIB)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(20 * MIB))
        self.end_headers()
        for _ in range(20):
            self.wfile.write(self.chunk)
            time.sleep(0.01)

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


def test_a_20_mib_download_shows_in_the_tcp_received_bytes(tracked, db, http_server):
    # Linux gives per-process network bytes only per open TCP socket (tcp_info): the download's
    # connection is seen because it is still open (kept alive) when the step ends. A connection
    # opened and closed between two samples is not seen (tests/test_sampler.py shows it).
    run = tracked()
    run.do(f"fetch {http_server}")
    run.finish()
    row = fetch_run(db, run.run_id)
    assert row["tcp_received_bytes"] >= 20 * MIB, row["tcp_received_bytes"]
    assert row["tcp_sent_bytes"] > 0  # the request
    (fetch,) = fetch_subtasks(db, run.run_id)
    assert fetch["tcp_received_bytes"] >= 20 * MIB, fetch
    last = samples(db, run.run_id)[-1]
    assert last["tcp_received_bytes"] >= 20 * MIB
    assert last["other_connections"] == 1  # the HTTP connection, still open at the end
    assert last["db_connections"] == 0  # the tracker's own connection is left out


def test_three_connections_to_the_database_read_three_without_the_trackers_own(tracked, db, db_dsn):
    # Over TCP, to a port no list of well-known ports knows: only the configured DSN's
    # address (the tracker's own, which it leaves out of the count) makes them database ones.
    with proxy_for(db_dsn) as proxy:
        run = tracked(proxy.dsn)
        run.do(f"connect 3 {proxy.dsn}")
        run.finish()  # with the three still open: the last sample sees them
    last = samples(db, run.run_id)[-1]
    assert last["db_connections"] == 3, last
    assert last["other_connections"] == 0, last
    assert fetch_run(db, run.run_id)["execution_status"] == "FINISHED"


def test_a_command_under_pipetrack_run_has_its_whole_trees_writes(db, db_dsn, tmp_path):
    # The wrapped command writes 32 MiB itself and has a child write 32 MiB more; it exits
    # right after, so its last writes are read from its zombie, before it is reaped.
    code = (
        "import os, subprocess, sys\n"
        "def write(path):\n"
        "    with open(path, 'wb') as f:\n"
        "        f.write(b'x' * (32 << 20)); f.flush(); os.fsync(f.fileno())\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        '\'import os; f = open(os.environ["TARGET"] + "/b", "wb"); '
        'f.write(b"y" * (32 << 20)); f.flush(); os.fsync(f.fileno())\'])\n'
        "write(os.environ['TARGET'] + '/a')\n"
        "child.wait()\n"
    )
    env = {**os.environ, "PIPETRACK_DSN": db_dsn, "TARGET": str(tmp_path)}
    done = subprocess.run(
        [*PIPETRACK, "run", "--task", "tree_writes", "--", sys.executable, "-c", code],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_id,) = db.execute(
        "SELECT run_id::text FROM pipeline_status WHERE task_name = 'tree_writes'"
    ).fetchone()
    row = fetch_run(db, run_id)
    assert within_ten_percent(row["disk_write_bytes"], 64 * MIB), row["disk_write_bytes"]
    rows = samples(db, run_id)
    assert rows
    assert within_ten_percent(rows[-1]["disk_write_bytes"], 64 * MIB), rows[-1]
    with contextlib.suppress(FileNotFoundError):
        assert (tmp_path / "a").stat().st_size == (tmp_path / "b").stat().st_size == 32 * MIB


def test_pipetrack_show_prints_the_totals_the_steps_and_a_sparkline_of_the_samples(
    tracked, db, db_dsn, tmp_path, http_server
):
    run = tracked()
    run.do(f"write {tmp_path / 'data'} 32")
    run.do("count rows_written 1500")
    run.do(f"fetch {http_server}")
    run.do("release")
    run.do("count files 3")
    run.finish()
    env = {**os.environ, "PIPETRACK_DSN": db_dsn, "PYTHONIOENCODING": "utf-8"}
    shown = subprocess.run(
        [*PIPETRACK, "show", run.run_id], env=env, capture_output=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.decode().splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert any(line.startswith("disk_write_bytes:") and "MiB" in line for line in lines)
    assert "counts:                   files=3, rows_written=1500" in lines
    head = lines.index(
        f"{'#':>4} {'CPU':>7} {'READ':>10} {'WRITTEN':>10} {'TCP IN':>10} {'PEAK':>10}  COUNTS"
    )
    write, count, fetch, _ = lines[head + 1 : head + 5]
    written, received = slice(24, 34), slice(35, 45)  # the WRITTEN and TCP IN columns
    assert (write[:4], write[written]) == ("   1", "  32.0 MiB")
    assert (count[:4], count.split()[-1]) == ("   2", "rows_written=1500")
    assert (fetch[:4], fetch[received]) == ("   3", "  20.0 MiB")
    (summary,) = [line for line in lines if line.startswith("resources: ")]
    assert summary.split()[1] == str(len(samples(db, run.run_id)))
    sparks = {line.split()[0]: line for line in lines[lines.index(summary) + 1 :]}
    # (A CPU line only where rows are a second or more apart: a row's CPU figure is taken over
    # the time since the row before, and is NULL over less, not 10 ms-tick noise.)
    assert {"memory", "disk", "tcp", "open"} <= set(sparks)
    assert any(block in sparks["memory"] for block in "▁▂▃▄▅▆▇█")
    as_json = subprocess.run(
        [*PIPETRACK, "show", run.run_id, "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    data = json.loads(as_json.stdout)
    assert data["run"]["counts"] == {"rows_written": 1500, "files": 3}
    assert data["samples"][-1]["disk_write_bytes"] >= 32 * MIB
    assert data["subtasks"][0]["disk_write_bytes"] >= 32 * MIB
    assert data["subtasks"][1]["counts"] == {"rows_written": 1500}


def test_a_step_begun_on_a_reused_sample_never_counts_the_step_before_it(
    db, db_dsn, tmp_path, monkeypatch
):
    # Boundaries reuse a sample younger than BOUNDARY_GAP; made long here, so that "write"
    # ends, and "after" begins, on the sample "write" began with (what a quick step does). The
    # writer's next sample ends "write": "after" must begin there too, not count the 8 MiB
    # again (it did, until the end of a deferred step moved the next one's start).
    from tracker._record import measure

    monkeypatch.setattr(measure, "BOUNDARY_GAP", 60.0)
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_reused_boundary", total_subtasks=2)
        with run.subtask("write"), open(tmp_path / "out.bin", "wb") as out:
            for _ in range(8):
                out.write(os.urandom(MIB))
                out.flush()
                os.fsync(out.fileno())
        with run.subtask("after"):
            pass
        run.finish()
        assert t.flush(30)
    finally:
        t.shutdown(10)
    write, after = fetch_subtasks(db, run.run_id)
    assert write["disk_write_bytes"] >= 8 * MIB, write
    assert after["disk_write_bytes"] is not None, after
    assert after["disk_write_bytes"] < MIB, after
    assert (
        write["disk_write_bytes"] + after["disk_write_bytes"]
        <= (fetch_run(db, run.run_id)["disk_write_bytes"])
    )


def test_thousands_of_steps_on_one_reused_sample_are_each_measured_and_count_each_byte_once(
    db, db_dsn, tmp_path, monkeypatch
):
    # A tight loop whose steps all begin and end on one reused sample, as when the writer is
    # starved: the writer's next sample ends them all. Each gets figures, and what the first
    # step wrote counts once. (Ending them walked every step held, at each end: quadratic, and
    # under the run's lock, which a signal's final state then waited for.)
    from tracker._record import measure

    monkeypatch.setattr(measure, "BOUNDARY_GAP", 60.0)
    steps = 5000
    t = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = t.run("DAILY_many_on_one_sample", total_subtasks=steps + 1)
        with run.subtask("write"), open(tmp_path / "out.bin", "wb") as out:
            for _ in range(4):
                out.write(os.urandom(MIB))
                out.flush()
                os.fsync(out.fileno())
        for index in range(steps):
            with run.subtask(f"step {index}"):
                pass
        run.finish()
        assert t.flush(60)
        assert not t.writer._measure._runs  # every step let go with its run
    finally:
        t.shutdown(10)
    write, *rest = fetch_subtasks(db, run.run_id)
    assert len(rest) == steps
    assert write["disk_write_bytes"] >= 4 * MIB, write
    assert all(row["disk_write_bytes"] is not None for row in rest)
    assert sum(row["disk_write_bytes"] for row in rest) < MIB
