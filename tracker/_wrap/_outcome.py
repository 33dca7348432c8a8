"""How a wrapped command ended, in the run's terms: status, exit code and a readable reason.

Pure functions of what the wrapper observed (the wait status, the signal it forwarded, stderr's
last lines, the cgroup's OOM-kill counter), so every path is testable without a process.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tracker._wrap.protocol import Error

__all__ = [
    "CANCEL_SIGNALS",
    "Outcome",
    "StderrTail",
    "decide",
    "oom_kill_count",
    "signal_name",
]

CANCEL_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
"""Signals by which someone asks a run to stop: a run they end is CANCELLED, not FAILED."""

TAIL_BYTES = 8192
TAIL_LINES = 20
SHELL_SIGNAL_BASE = 128


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED, FAILED or CANCELLED
    exit_code: int  # what `pipetrack run` exits with, as a shell reports it (128+N for signal N)
    error_message: str | None = None
    error_detail: str | None = None


class StderrTail:
    """The last few kilobytes a stream carried, for the error message of a failed run."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit

    def add(self, chunk: bytes) -> None:
        if len(chunk) >= self._limit:
            self._chunks.clear()
            self._chunks.append(chunk[-self._limit :])
            self._size = self._limit
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def lines(self, count: int = TAIL_LINES) -> list[str]:
        text = b"".join(self._chunks)[-self._limit :].decode("utf-8", errors="replace")
        return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def decide(
    returncode: int,
    *,
    cancel_signal: int | None = None,
    stderr_lines: list[str] | None = None,
    reported_error: Error | None = None,
    oom_killed: bool = False,
) -> Outcome:
    """The outcome of a child that ended with ``returncode`` (``-N``: killed by signal N).

    ``cancel_signal`` is a stop signal the wrapper received (and forwarded, or the child got from
    the terminal too); ``reported_error`` is what the child said through the protocol.
    """
    tail = stderr_lines or []
    detail = "\n".join(tail) or None
    if reported_error is not None:
        message, detail = reported_error.message, reported_error.detail or detail
    if returncode < 0:
        return _by_signal(-returncode, detail, oom_killed=oom_killed)
    if returncode == 0:
        if reported_error is not None:
            return Outcome("FAILED", 0, message, detail)
        return Outcome("FINISHED", 0)
    if cancel_signal is not None:
        name = signal_name(cancel_signal)
        return Outcome(
            "CANCELLED",
            returncode,
            f"cancelled: the command exited with code {returncode} after {name}",
            detail,
        )
    if reported_error is None:
        last = f": {tail[-1]}" if tail else ""
        message = f"exited with code {returncode}{last}"
    return Outcome("FAILED", returncode, message, detail)


def _by_signal(number: int, detail: str | None, *, oom_killed: bool) -> Outcome:
    name = signal_name(number)
    code = SHELL_SIGNAL_BASE + number
    if number in CANCEL_SIGNALS:
        return Outcome("CANCELLED", code, f"cancelled: the command was ended by {name}", detail)
    if number == signal.SIGKILL:
        reason = (
            "killed by SIGKILL from the kernel's out-of-memory killer"
            if oom_killed
            else "killed by SIGKILL (by another process, or by the out-of-memory killer)"
        )
        return Outcome("FAILED", code, reason, detail)
    return Outcome("FAILED", code, f"killed by {name}", detail)


def _cgroup_events_path() -> Path | None:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):  # cgroup v2's unified hierarchy
            return Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events"
    return None


def oom_kill_count() -> int | None:
    """The cgroup's count of processes the OOM killer ended (cgroup v2), or None if unknown.

    The child runs in the wrapper's cgroup, so a rise between start and end means the kernel's
    OOM killer sent the SIGKILL.
    """
    path = _cgroup_events_path()
    if path is None:
        return None
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def wait_status_to_returncode(status: int) -> int:
    """``os.waitpid``'s status as ``subprocess`` reports it: ``-N`` for signal N."""
    return os.waitstatus_to_exitcode(status)
