"""How a wrapped command's end maps to the run's status, exit code and error (pure rules)."""

from __future__ import annotations

import signal

import pytest

from tracker._wrap._outcome import Outcome, StderrTail, decide
from tracker._wrap.protocol import Error


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"returncode": 0}, Outcome("FINISHED", 0)),
        (
            {"returncode": 0, "reported_error": Error("no rows", "in load()")},
            Outcome("FAILED", 0, "no rows", "in load()"),
        ),
        (
            {"returncode": 2, "stderr_lines": ["a", "b"]},
            Outcome("FAILED", 2, "exited with code 2: b", "a\nb"),
        ),
        ({"returncode": 2}, Outcome("FAILED", 2, "exited with code 2", None)),
        (
            {"returncode": 1, "stderr_lines": ["x"], "reported_error": Error("bad")},
            Outcome("FAILED", 1, "bad", "x"),
        ),
        (
            {"returncode": 1, "cancel_signal": signal.SIGTERM},
            Outcome("CANCELLED", 1, "cancelled: the command exited with code 1 after SIGTERM"),
        ),
        ({"returncode": 0, "cancel_signal": signal.SIGTERM}, Outcome("FINISHED", 0)),
        (
            {"returncode": -signal.SIGTERM},
            Outcome("CANCELLED", 143, "cancelled: the command was ended by SIGTERM"),
        ),
        (
            {"returncode": -signal.SIGHUP},
            Outcome("CANCELLED", 129, "cancelled: the command was ended by SIGHUP"),
        ),
        (
            {"returncode": -signal.SIGKILL, "oom_killed": True},
            Outcome("FAILED", 137, "killed by SIGKILL from the kernel's out-of-memory killer"),
        ),
        (
            {"returncode": -signal.SIGKILL},
            Outcome(
                "FAILED",
                137,
                "killed by SIGKILL (by another process, or by the out-of-memory killer)",
            ),
        ),
        ({"returncode": -signal.SIGSEGV}, Outcome("FAILED", 139, "killed by SIGSEGV")),
    ],
)
def test_outcomes(kwargs, expected):
    assert decide(**kwargs) == expected


def test_stderr_tail_keeps_the_last_lines_of_a_long_stream():
    tail = StderrTail(limit=64)
    for i in range(100):
        tail.add(f"line {i}\n".encode())
    tail.add(b"\xff broken utf-8 and no newline")
    lines = tail.lines(3)
    assert lines == ["line 98", "line 99", "\ufffd broken utf-8 and no newline"]
    tail.add(b"z" * 500)
    assert tail.lines() == ["z" * 64]
