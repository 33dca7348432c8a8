"""Reading the figures of every process of a tree, now: from /proc on Linux, else through psutil.

Both readers give the same ``Reading`` per process. The Linux one reads ``/proc`` itself: one
``stat`` and one ``io`` file, the ``fd`` folder (and each descriptor's link) and each thread's
``children`` list per process, or one pass over every ``/proc/PID/stat`` to find children where
the kernel lacks ``/proc/PID/task/TID/children``.
psutil does the same through many more calls (about twice the time for a tree of 50), and
cannot say which sockets a process holds without parsing the whole socket table once per
process. psutil is imported only by the portable reader, only when it is made.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple, Protocol

from tracker._sampling._sockets import socket_inodes

__all__ = ["ProcReader", "PsutilReader", "Reading", "TreeReader", "make_reader"]


class Reading(NamedTuple):
    """One process's figures. Counters are the kernel's, since the process started, and
    include those of the children it has reaped (the kernel adds them at wait())."""

    pid: int
    ident: float  # when the process started: a reused pid has another
    ppid: int
    rss: int  # bytes; 0 for a zombie
    cpu: float  # user + system seconds, its own and its reaped children's
    disk: tuple[int, int] | None  # read_bytes, write_bytes (storage); None: not readable
    fds: int | None  # open file descriptors; None: not ours to see
    sockets: frozenset[int] | None  # inodes of the sockets it holds; None: unknown


class TreeReader(Protocol):
    def read(
        self, root: int, also: Iterable[tuple[int, float]], skip_fds: Collection[int]
    ) -> list[Reading]:
        """Readings of ``root``, its descendants, and those of ``also`` (pid, ident) still
        alive; ``skip_fds`` are this process's descriptors to leave out of ``sockets``."""
        ...


def make_reader(kind: str | None = None) -> TreeReader:
    """The /proc reader on Linux, psutil's elsewhere; ``kind`` ("proc", "psutil") forces one."""
    if kind == "psutil" or (kind is None and not sys.platform.startswith("linux")):
        return PsutilReader()
    if kind not in (None, "proc"):
        raise ValueError(f"unknown process reader {kind!r}")
    return ProcReader()


class _Stat(NamedTuple):
    ppid: int
    zombie: bool
    cpu: float
    start: int
    rss: int
    threads: int


def _read(path: str) -> bytes:
    """The whole of a /proc file, without a buffered file object (a third of the cost). Read
    to the end: a seq_file with many records (``children``) answers short before its end."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class ProcReader:
    """Reads /proc directly (Linux)."""

    def __init__(self) -> None:
        self._tick = float(os.sysconf("SC_CLK_TCK"))
        self._page = int(os.sysconf("SC_PAGE_SIZE"))
        self._me = os.getpid()
        self._children_files = os.path.exists(f"/proc/{self._me}/task/{self._me}/children")

    def _stat(self, pid: int) -> _Stat | None:
        try:
            data = _read(f"/proc/{pid}/stat")
        except OSError:
            return None
        # The command name (field 2) is in parentheses and may hold anything, ")" included.
        fields = data[data.rindex(b")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return _Stat(
            ppid=int(fields[1]),
            zombie=fields[0] in (b"Z", b"X"),
            cpu=ticks / self._tick,
            start=int(fields[19]),
            rss=int(fields[21]) * self._page,
            threads=int(fields[17]),
        )

    def _scan(self) -> dict[int, _Stat]:
        stats: dict[int, _Stat] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = self._stat(int(name))
                if stat is not None:
                    stats[int(name)] = stat
        return stats

    def _children(self, pid: int, threads: int) -> list[int]:
        """The children of each thread of ``pid``; a process of one thread (it had one when its
        stat was read) has no other thread's list to look for."""
        found: list[int] = []
        try:
            tids = os.listdir(f"/proc/{pid}/task") if threads > 1 else [str(pid)]
        except OSError:
            return found
        for tid in tids:
            try:
                found.extend(
                    int(child) for child in _read(f"/proc/{pid}/task/{tid}/children").split()
                )
            except OSError:
                continue
        return found

    def _tree(self, root: int) -> dict[int, _Stat]:
        if not self._children_files:
            everything = self._scan()
            children: dict[int, list[int]] = {}
            for pid, stat in everything.items():
                children.setdefault(stat.ppid, []).append(pid)
            members: dict[int, _Stat] = {}
            queue = [root] if root in everything else []
            while queue:
                pid = queue.pop()
                if pid not in members:
                    members[pid] = everything[pid]
                    queue.extend(children.get(pid, ()))
            return members
        found: dict[int, _Stat] = {}
        queue = [root]
        while queue:
            pid = queue.pop()
            current = self._stat(pid) if pid not in found else None
            if current is not None:
                found[pid] = current
                queue.extend(self._children(pid, current.threads))
        return found

    def _io(self, pid: int) -> dict[bytes, int]:
        try:
            lines = _read(f"/proc/{pid}/io").split(b"\n")
        except OSError:  # gone, or another user's (it needs the right to ptrace-read)
            return {}
        values = {}
        for line in lines:
            key, _, value = line.partition(b":")
            if value:
                values[key] = int(value)
        return values

    def read(
        self, root: int, also: Iterable[tuple[int, float]], skip_fds: Collection[int]
    ) -> list[Reading]:
        members = self._tree(root)
        for pid, ident in also:
            if pid not in members:
                stat = self._stat(pid)
                if stat is not None and stat.start == ident:  # still the process we knew
                    members[pid] = stat
        readings = []
        for pid, stat in members.items():
            try:
                fds, inodes = socket_inodes(pid, skip_fds if pid == self._me else ())
                held: tuple[int | None, frozenset[int] | None] = (fds, frozenset(inodes))
            except OSError:  # a zombie has none; another user's are not ours to see
                held = (None, None)
            io = self._io(pid)
            readings.append(
                Reading(
                    pid=pid,
                    ident=float(stat.start),
                    ppid=stat.ppid,
                    rss=0 if stat.zombie else stat.rss,
                    cpu=stat.cpu,
                    disk=(io[b"read_bytes"], io[b"write_bytes"]) if io else None,
                    fds=held[0],
                    sockets=held[1],
                )
            )
        return readings


class PsutilReader:
    """Reads through psutil (any platform psutil supports; sockets are not attributed)."""

    def __init__(self) -> None:
        import psutil

        self._psutil: Any = psutil
        self._gone = (psutil.NoSuchProcess, psutil.AccessDenied)

    def read(
        self, root: int, also: Iterable[tuple[int, float]], skip_fds: Collection[int]
    ) -> list[Reading]:
        ps = self._psutil
        try:
            top = ps.Process(root)
            members = {p.pid: p for p in (top, *top.children(recursive=True))}
        except self._gone:
            members = {}
        for pid, ident in also:
            if pid not in members:
                try:
                    process = ps.Process(pid)
                    if process.create_time() == ident:
                        members[pid] = process
                except self._gone:
                    continue
        readings = []
        for process in members.values():
            reading = self._one(process)
            if reading is not None:
                readings.append(reading)
        return readings

    def _one(self, process: Any) -> Reading | None:
        ps = self._psutil
        try:
            with process.oneshot():
                zombie = process.status() == ps.STATUS_ZOMBIE
                times = process.cpu_times()
                reading = Reading(
                    pid=process.pid,
                    ident=process.create_time(),
                    ppid=process.ppid(),
                    rss=0 if zombie else process.memory_info().rss,
                    cpu=times.user + times.system + times.children_user + times.children_system,
                    disk=self._disk(process),
                    fds=self._fds(process),
                    sockets=None,
                )
        except self._gone:
            return None
        return reading

    def _disk(self, process: Any) -> tuple[int, int] | None:
        try:
            io = process.io_counters()
        except (AttributeError, self._psutil.AccessDenied, NotImplementedError):
            return None  # macOS has no per-process I/O counters
        return int(io.read_bytes), int(io.write_bytes)

    def _fds(self, process: Any) -> int | None:
        try:
            return int(process.num_fds())
        except (AttributeError, self._psutil.AccessDenied):
            return None
