"""`pipetrack run`: real child processes, real PostgreSQL, exact rows and exit codes."""

from __future__ import annotations

import os
import pty
import random
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracker._wrap._scanner import LineScanner
from tracker._wrap.protocol import MARKER

SCRIPTS = Path(__file__).parent / "scripts"
PIPETRACK = [sys.executable, "-m", "tracker"]


def run_wrapped(dsn, *args, **kwargs):
    env = {**os.environ, "PIPETRACK_DSN": dsn, **kwargs.pop("env", {})}
    return subprocess.run(
        [*PIPETRACK, "run", *args], env=env, capture_output=True, timeout=120, check=False, **kwargs
    )


def start_wrapped(dsn, *args):
    env = {**os.environ, "PIPETRACK_DSN": dsn}
    return subprocess.Popen(
        [*PIPETRACK, "run", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def the_run(db, task):
    rows = db.execute(
        "SELECT execution_status, exit_code, error_message, error_detail, total_subtasks, "
        "task_stage, task_type, script_file, log_path, log_file, overall_percent_complete, "
        "overall_progress_message, run_id, execution_end IS NOT NULL, memory_mb, peak_memory_mb "
        "FROM pipeline_status WHERE task_name = %s",
        (task,),
    ).fetchall()
    assert len(rows) == 1, rows
    keys = [
        "status",
        "exit_code",
        "error_message",
        "error_detail",
        "total_subtasks",
        "stage",
        "task_type",
        "script_file",
        "log_path",
        "log_file",
        "overall",
        "overall_message",
        "run_id",
        "ended",
        "memory_mb",
        "peak_memory_mb",
    ]
    return dict(zip(keys, rows[0], strict=True))


def subtasks(db, run_id):
    return db.execute(
        "SELECT subtask_index, parent_index, subtask_name, subtask_status, items_total, "
        "items_complete, message, ended_at IS NOT NULL FROM pipeline_subtask WHERE run_id = %s "
        "ORDER BY subtask_index",
        (run_id,),
    ).fetchall()


def read_until(stream, marker, deadline_seconds=60):
    deadline = time.monotonic() + deadline_seconds
    seen = b""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        if marker in line:
            return line
    raise AssertionError(f"never saw {marker!r}; got {seen!r}")


def test_exit_zero_finishes_the_run_with_the_subtasks_the_protocol_reported(db, db_dsn, tmp_path):
    log = tmp_path / "steps.log"
    done = run_wrapped(
        db_dsn, "--log", str(log), "--", sys.executable, str(SCRIPTS / "wrap_steps.py")
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"before\nloaded file 1\nloaded file 2\nloaded file 3\n"
    assert b"a warning on stderr\n" in done.stderr
    assert log.read_bytes().count(b"loaded file") == 3
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # the command's output is its user's
    run = the_run(db, "wrap_steps")
    assert run["status"] == "FINISHED"
    assert run["exit_code"] == 0
    assert run["error_message"] is None
    assert run["total_subtasks"] == 2
    assert run["stage"] == "DAILY"
    assert run["task_type"] == "python"
    assert run["script_file"] == "wrap_steps.py"
    assert run["log_path"] == str(log)
    assert run["log_file"] == "steps.log"
    assert float(run["overall"]) == 100.0
    assert run["overall_message"] == "all done"
    assert run["ended"] is True
    assert subtasks(db, run["run_id"]) == [
        (1, None, "Outer", "COMPLETED", None, 0, None, True),
        (2, 1, "Loading files", "COMPLETED", 3, 3, "file 3 of 3", True),
        (3, 1, "Writing: 50% done", "COMPLETED", None, 0, "almost\nthere", True),
    ]


def test_nonzero_exit_fails_the_run_with_the_exit_code_and_the_last_stderr_lines(db, db_dsn):
    done = run_wrapped(
        db_dsn,
        "--task",
        "DAILY_09_Doomed",
        "--",
        sys.executable,
        str(SCRIPTS / "wrap_fail.py"),
        "3",
    )
    assert done.returncode == 3
    run = the_run(db, "DAILY_09_Doomed")
    assert run["status"] == "FAILED"
    assert run["exit_code"] == 3
    assert run["error_message"] == "exited with code 3: ValueError: bad input file"
    detail = run["error_detail"].splitlines()
    assert len(detail) == 20
    assert detail[-2:] == ["Traceback (most recent call last):", "ValueError: bad input file"]
    assert detail[0] == "noise line 12"
    assert run["stage"] == "DAILY"
    [(index, _, name, status, *_)] = subtasks(db, run["run_id"])
    assert (index, name, status) == (1, "Doomed step", "FAILED")


def test_sigterm_is_forwarded_and_marks_the_run_cancelled_with_exit_143(db, db_dsn):
    wrapper = start_wrapped(
        db_dsn, "--task", "waits", "--", sys.executable, str(SCRIPTS / "wrap_wait.py")
    )
    try:
        read_until(wrapper.stdout, b"ready")
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=60) == 143
    finally:
        wrapper.kill()
        wrapper.communicate()
    run = the_run(db, "waits")
    assert run["status"] == "CANCELLED"
    assert run["exit_code"] == 143
    assert run["error_message"] == "cancelled: the command was ended by SIGTERM"
    assert run["ended"] is True


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_sigint_and_sighup_are_forwarded_too(db, db_dsn, sig, code):
    wrapper = start_wrapped(
        db_dsn, "--task", "waits", "--", sys.executable, str(SCRIPTS / "wrap_wait.py")
    )
    try:
        read_until(wrapper.stdout, b"ready")
        wrapper.send_signal(sig)
        assert wrapper.wait(timeout=60) == code
    finally:
        wrapper.kill()
        wrapper.communicate()
    run = the_run(db, "waits")
    assert (run["status"], run["exit_code"]) == ("CANCELLED", code)


def test_sigkill_of_the_child_fails_the_run_with_a_clear_reason_and_exit_137(db, db_dsn):
    wrapper = start_wrapped(
        db_dsn, "--task", "killed", "--", sys.executable, str(SCRIPTS / "wrap_wait.py")
    )
    try:
        line = read_until(wrapper.stdout, b"ready")
        os.kill(int(line.split()[1]), signal.SIGKILL)
        assert wrapper.wait(timeout=60) == 137
    finally:
        wrapper.kill()
        wrapper.communicate()
    run = the_run(db, "killed")
    assert run["status"] == "FAILED"
    assert run["exit_code"] == 137
    assert run["error_message"] == (
        "killed by SIGKILL (by another process, or by the out-of-memory killer)"
    )
    [(_, _, name, status, *_)] = subtasks(db, run["run_id"])
    assert (name, status) == ("Waiting", "FAILED")


def test_a_command_that_does_not_exist_exits_127_and_is_recorded_as_failed(db, db_dsn):
    done = run_wrapped(db_dsn, "--task", "missing", "--", "/nonexistent/command", "x")
    assert done.returncode == 127
    assert b"cannot run '/nonexistent/command'" in done.stderr
    run = the_run(db, "missing")
    assert (run["status"], run["exit_code"]) == ("FAILED", 127)
    assert run["error_message"].startswith("cannot run '/nonexistent/command'")


def test_nothing_to_run_is_a_usage_error(db_dsn):
    done = run_wrapped(db_dsn, "--task", "x")
    assert done.returncode == 2
    assert b"nothing to run" in done.stderr


def _payload():
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    parts = [
        bytes(range(256)),
        b"\xff\xfe invalid utf-8 \xc3\x28\n",
        b"x" * (3 * 1024 * 1024),  # a very long line, no newline for 3 MB
        b"\n",
        MARKER + b"not-a-command::kept as output\n",
        b"  " + MARKER + b"enter::indented, kept\n",
    ]
    for _ in range(200):
        parts.append(rng.randbytes(rng.randint(0, 300)))
        parts.append(rng.choice([b"\n", b"\r\n", MARKER, b"\n" + MARKER + b"enter::x", b"\x00"]))
    parts.append(b"partial last line without newline \x00\xff")
    return b"".join(parts)


def test_stdout_and_stderr_pass_through_byte_for_byte(db, db_dsn, tmp_path):
    payload = _payload()
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    log = tmp_path / "out.log"
    script = str(SCRIPTS / "wrap_bytes.py")
    on_stderr = run_wrapped(
        db_dsn, "--task", "bytes-err", "--", sys.executable, script, str(source), "2"
    )
    assert on_stderr.returncode == 0
    assert on_stderr.stderr == payload  # stderr never goes through the protocol scanner
    echoed = run_wrapped(
        db_dsn,
        "--echo-protocol",
        "--log",
        str(log),
        "--task",
        "bytes-echo",
        "--",
        sys.executable,
        script,
        str(source),
    )
    assert echoed.returncode == 0
    assert echoed.stdout == payload
    assert log.read_bytes() == payload
    plain = run_wrapped(db_dsn, "--task", "bytes", "--", sys.executable, script, str(source))
    assert plain.returncode == 0
    expected = LineScanner()
    assert plain.stdout == expected.feed(payload).output + expected.close().output
    for task in ("bytes-err", "bytes-echo", "bytes"):
        assert the_run(db, task)["status"] == "FINISHED"


def test_random_bytes_never_crash_the_wrapper_nor_lose_output(db, db_dsn, tmp_path):
    rng = random.Random(11)  # noqa: S311 - reproducible test data
    for attempt in range(3):
        blob = b"".join(
            rng.choice([rng.randbytes(rng.randint(1, 2000)), MARKER, b"\n" + MARKER, b"%0A", b"\n"])
            for _ in range(400)
        )
        source = tmp_path / f"random{attempt}.bin"
        source.write_bytes(blob)
        done = run_wrapped(
            db_dsn,
            "--echo-protocol",
            "--task",
            f"random{attempt}",
            "--",
            sys.executable,
            str(SCRIPTS / "wrap_bytes.py"),
            str(source),
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout == blob
        assert the_run(db, f"random{attempt}")["status"] == "FINISHED"


def test_pipetrack_subcommands_report_to_the_wrapped_run(db, db_dsn):
    command = " ".join([sys.executable, "-m", "tracker"])
    done = run_wrapped(db_dsn, "--task", "side", "--", str(SCRIPTS / "wrap_report.sh"), command)
    assert done.returncode == 0, done.stderr
    run = the_run(db, "side")
    assert run["status"] == "FINISHED"
    assert subtasks(db, run["run_id"]) == [
        (1, None, "Side channel", "COMPLETED", 4, 3, "via the socket", True),
    ]


def test_the_side_channel_commands_and_help_never_load_psycopg(db, db_dsn, tmp_path):
    # They run inside a pipeline's loops: a second of psycopg per call would show.
    log = tmp_path / "imports.log"
    command = " ".join([sys.executable, "-m", "tracker"])
    script = str(SCRIPTS / "wrap_report_imports.sh")
    done = run_wrapped(db_dsn, "--task", "light", "--", script, command, str(log))
    assert done.returncode == 0, done.stderr
    run_id = the_run(db, "light")["run_id"]
    assert subtasks(db, run_id)[0][4:6] == (8, 3)
    counts = db.execute("SELECT counts FROM pipeline_status WHERE run_id = %s", (run_id,))
    assert counts.fetchone()[0] == {"rows": 5}  # `pipetrack count` is as light as the rest
    helped = subprocess.run(
        [*PIPETRACK, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        timeout=60,
        check=True,
    )
    for imports in (log.read_text(), helped.stderr):
        loaded = {line.split("|")[-1].strip() for line in imports.splitlines() if "|" in line}
        assert "tracker.cli" in loaded
        assert not {m for m in loaded if m.split(".")[0] in ("psycopg", "psycopg_binary")}


def test_pipetrack_subcommands_outside_a_wrapped_run_warn_and_succeed_unless_strict():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRACK_")}
    lenient = subprocess.run([*PIPETRACK, "enter", "x"], env=env, capture_output=True, check=False)
    assert lenient.returncode == 0
    assert b"not inside `pipetrack run`" in lenient.stderr
    strict = subprocess.run(
        [*PIPETRACK, "progress", "1/2"],
        env={**env, "PIPETRACK_STRICT": "1"},
        capture_output=True,
        check=False,
    )
    assert strict.returncode == 1


def test_memory_of_the_whole_process_tree_is_recorded(db, db_dsn, tmp_path):
    release = tmp_path / "release"
    shell = f'"{sys.executable}" "{SCRIPTS / "wrap_memory.py"}" "{release}"; echo done'
    wrapper = start_wrapped(db_dsn, "--task", "memory", "--", "sh", "-c", shell)
    try:
        read_until(wrapper.stdout, b"allocated")
        deadline = time.monotonic() + 30
        memory = None
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT memory_mb FROM pipeline_status WHERE task_name = 'memory'"
            ).fetchone()
            memory = row[0] if row else None
            if memory is not None and memory >= 150:
                break
            time.sleep(0.1)  # polling the row with a deadline
        assert memory is not None
        assert memory >= 150
        release.touch()
        assert wrapper.wait(timeout=60) == 0
    finally:
        wrapper.kill()
        wrapper.communicate()
    run = the_run(db, "memory")
    assert run["status"] == "FINISHED"
    assert run["peak_memory_mb"] >= 150


def test_an_unreachable_database_never_stops_the_command(db_dsn):
    down = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    done = run_wrapped(down, "--task", "offline", "--", "sh", "-c", "echo still runs; exit 4")
    assert done.returncode == 4
    assert done.stdout == b"still runs\n"
    assert b"spooling" in done.stderr


def test_a_closed_reader_gives_the_child_the_sigpipe_it_would_have_had(db, db_dsn):
    env = {**os.environ, "PIPETRACK_DSN": db_dsn}
    wrapper = subprocess.Popen(
        [*PIPETRACK, "run", "--task", "yes", "--", "yes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wrapper.stdout.read(2) == b"y\n"
        wrapper.stdout.close()  # like `| head -1`
        assert wrapper.wait(timeout=60) == 128 + signal.SIGPIPE
    finally:
        wrapper.kill()
        wrapper.communicate()
    run = the_run(db, "yes")
    assert (run["status"], run["exit_code"], run["error_message"]) == (
        "FAILED",
        141,
        "killed by SIGPIPE",
    )


def _read_pty(fd, marker, deadline_seconds=60):
    deadline = time.monotonic() + deadline_seconds
    seen = b""
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_ctrl_c_at_a_terminal_reaches_the_command_once_and_cancels_the_run(db, db_dsn):
    argv = [
        *PIPETRACK,
        "run",
        "--task",
        "ctrl-c",
        "--",
        sys.executable,
        str(SCRIPTS / "wrap_ctrl_c.py"),
    ]
    env = {**os.environ, "PIPETRACK_DSN": db_dsn}
    pid, master = pty.fork()
    if pid == 0:  # the child: the wrapper, in the foreground of a new terminal
        os.execvpe(argv[0], argv, env)  # noqa: S606 - exec the wrapper itself, no shell
    try:
        assert b"ready" in _read_pty(master, b"ready")
        os.write(master, b"\x03")  # the terminal sends SIGINT to the foreground process group
        assert b"count 1" in _read_pty(master, b"count")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 3
    run = the_run(db, "ctrl-c")
    assert (run["status"], run["exit_code"]) == ("CANCELLED", 3)
    assert run["error_message"] == "cancelled: the command exited with code 3 after SIGINT"
