"""Text a script controls never reaches a terminal as control sequences.

Task names, messages and error text are written by any tracked script. The terminal views and
the library's console echo print them with C0/C1 controls and bidi overrides replaced by
visible stand-ins; the only escape sequences left are the views' own colours on a TTY.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid

import pytest

from tests.tracker_support import child_env
from tracker._model.terminal import printable

pytestmark = pytest.mark.db

RUN = uuid.UUID("55555555-5555-4555-8555-555555555555")
# OSC 52 writes the operator's clipboard; then clear screen, a colour, a C1 CSI, BEL, backspace,
# DEL, NEL, a line separator and a right-to-left override.
HOSTILE = (
    "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[31mred\x9b1mbold\x07\x08\x7f\x85x\u2028y\u202eevil\u2066z"
)
UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
# What the views themselves emit on a terminal: SGR colours, and top's home + clear screen.
OWN_SEQUENCES = re.compile(r"\x1b\[[0-9;]*m|\x1b\[H\x1b\[2J")


@pytest.fixture
def hostile_run(db):
    db.execute(
        """
        INSERT INTO pipeline_status (run_id, task_name, task_stage, task_type, hostname,
            process_id, execution_start, execution_end, execution_status, total_subtasks,
            current_subtask, subtask_name, subtask_status, overall_percent_complete,
            error_message, error_detail, overall_progress_message, log_path)
        VALUES (%s, %s, 'DAILY', 'python', %s, 7, now() - interval '5 minutes', now(), 'FAILED',
            2, 1, %s, 'FAILED', 50, %s, %s, %s, %s)
        """,
        (
            RUN,
            "DAILY_" + HOSTILE,
            "host" + HOSTILE,
            "sub" + HOSTILE,
            "error" + HOSTILE,
            "Traceback" + HOSTILE + "\nline 2" + HOSTILE,
            "message" + HOSTILE,
            "/var/log/" + HOSTILE,
        ),
    )
    db.execute(
        """
        INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,
            started_at, message)
        VALUES (%s, 1, %s, 'FAILED', now() - interval '1 minute', %s)
        """,
        (RUN, "subtask" + HOSTILE, "note" + HOSTILE),
    )
    return RUN


def _views(run_id: uuid.UUID) -> list[list[str]]:
    return [
        ["status"],
        ["top", "--count", "1", "--interval", "0.1"],
        ["history", "DAILY_" + HOSTILE],
        ["show", str(run_id)],
    ]


def _pipetrack(dsn: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args, "--dsn", dsn],
        capture_output=True,
        env={**os.environ, "NO_COLOR": ""},
        timeout=120,
        check=False,
    )


def test_printable_replaces_every_control_and_bidi_character_visibly():
    shown = printable(HOSTILE)
    assert not UNSAFE.search(shown)
    assert "\n" not in shown
    assert shown.startswith("␛]52;c;cHduZWQ=␇␛[2J␛[31mred\\x9b1mbold␇␈␡\\x85x\\u2028y\\u202eevil")
    assert printable("plain ascii, é, 東京 and … stay") == "plain ascii, é, 東京 and … stay"
    assert printable("a\nb\x1b", keep_newlines=True) == "a\nb␛"
    assert printable("a\nb") == "a␊b"


@pytest.mark.parametrize("view", range(4))
def test_views_print_no_control_sequence_from_the_database(hostile_run, db_dsn, view):
    args = _views(hostile_run)[view]
    result = _pipetrack(db_dsn, *args)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "␛]52" in out  # the hostile text is shown, as stand-ins
    assert not UNSAFE.search(out), f"{args}: {out!r}"
    assert not UNSAFE.search(result.stderr.decode())


def _on_a_terminal(dsn: str, *args: str, timeout: float = 120.0) -> str:
    """What ``pipetrack ARGS`` writes to a pseudo-terminal (so the views colour their output)."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker", *args, "--dsn", dsn],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=max(deadline - time.monotonic(), 1.0)) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
        os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("view", range(4))
def test_on_a_terminal_only_the_views_own_colours_remain(hostile_run, db_dsn, view):
    args = _views(hostile_run)[view]
    out = _on_a_terminal(db_dsn, *args)
    assert "␛]52" in out
    if args[0] in ("status", "history"):
        assert "\x1b[31m" in out  # FAILED is painted red: colours were on
    assert not UNSAFE.search(OWN_SEQUENCES.sub("", out)), f"{args}: {out!r}"


def test_genter_and_gmessage_echo_no_control_sequence(db_dsn, tmp_path):
    script = tmp_path / "hostile_echo.py"
    script.write_text(
        "import sys\n"
        "from tracker import genter, gexit, gmessage, track_finish, track_init\n"
        "text = sys.argv[1]\n"
        "track_init('DAILY_echo', 1)\n"
        "genter('entering ' + text)\n"
        "gmessage('message ' + text)\n"
        "gexit()\n"
        "track_finish('done')\n"
    )
    env = child_env(db_dsn, tmp_path / "data", PIPETRACK_CONSOLE="1")
    result = subprocess.run(
        [sys.executable, str(script), HOSTILE],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    assert "entering ␛]52" in err
    assert "message ␛]52" in err
    assert not UNSAFE.search(err), err
    assert not UNSAFE.search(result.stdout.decode())


def test_command_errors_show_database_text_without_controls(db_dsn):
    result = _pipetrack(db_dsn, "show", "not-a-uuid" + HOSTILE)
    assert result.returncode == 1
    assert not UNSAFE.search(result.stderr.decode())
