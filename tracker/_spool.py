"""The local spool: snapshots the database could not take, kept until it can.

One append-only JSON-lines file per process (``<time_ns>-<pid>-<random>.jsonl``) under
``<data dir>/spool``; its first line names the database it was meant for, so a spool is replayed
only into that database. The owning process holds an exclusive ``flock`` on its file while it
appends, so another process never replays (and deletes) a file still being written.

Replay (by the same process once the database answers, by the next process that connects, or by
``pipetrack spool replay``) reads the files in name order — creation order — and each file in line
order; writes are idempotent thanks to ``seq``, so replaying a line twice is harmless. The folder
is size-capped: beyond the cap, non-final snapshots are dropped (counted and warned); a run's
final snapshot is always kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tracker._model import Snapshot
from tracker._store import Rejected, Unavailable

logger = logging.getLogger("tracker")

FORMAT_VERSION = 1
SUFFIX = ".jsonl"


@dataclass
class ReplayResult:
    """What one replay did."""

    replayed: int = 0
    rejected: int = 0
    corrupt: int = 0
    files_done: int = 0
    files_skipped: int = 0
    unavailable: str | None = None


@dataclass
class SpoolFile:
    """One spool file as ``pipetrack spool status`` shows it."""

    path: Path
    size: int
    records: int
    target: str | None
    host: str | None
    pid: int | None
    in_use: bool
    runs: set[str] = field(default_factory=set)


def _lock(fd: int, *, block: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


class Spool:
    """The spool folder, and this process's own file in it."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.dropped = 0  # not kept: the folder reached its cap
        self.lost = 0  # not kept: the disk refused the write
        self.written = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._size_known: int | None = None

    # -- appending --------------------------------------------------------------------------
    def append(self, key: str, snapshots: list[Snapshot]) -> int:
        """Append ``snapshots`` (in order); returns how many were kept (the rest were dropped)."""
        kept = 0
        with self._lock:
            for snapshot in snapshots:
                line = json.dumps(snapshot.to_json(), separators=(",", ":"), default=str) + "\n"
                size = len(line.encode("utf-8"))
                if not snapshot.final and self._total_size() + size > self.max_bytes:
                    self._drop()
                    continue
                try:
                    handle = self._open(key)
                    handle.write(line)
                    handle.flush()
                    if snapshot.final:
                        # A process that ends while the database is down leaves this behind.
                        os.fsync(handle.fileno())
                except OSError as exc:
                    self._lose(snapshot, exc)
                    continue
                self._size_known = self._total_size() + size
                self.written += 1
                kept += 1
        return kept

    def _lose(self, snapshot: Snapshot, exc: OSError) -> None:
        """A write failed (disk full, quota, permissions): count it, say so, start afresh.

        The file's buffer still holds the failed line, so it is abandoned (closing it would try
        the write again); the next append opens a new file."""
        self.lost += 1
        broken, self._file, self._path = self._file, None, None
        if broken is not None:
            with contextlib.suppress(OSError):
                broken.close()
        self._size_known = None
        if snapshot.final:
            logger.warning(
                "cannot write to the spool in %s (%s): the final state of run %s is lost",
                self.directory,
                exc,
                snapshot.run_id,
            )
        elif self.lost == 1 or math.log10(self.lost).is_integer():
            logger.warning(
                "cannot write to the spool in %s (%s): lost %d snapshot(s) so far",
                self.directory,
                exc,
                self.lost,
            )

    def _drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or math.log10(self.dropped).is_integer():
            logger.warning(
                "spool in %s is full (cap %d bytes): dropped %d snapshot(s) so far; "
                "final states are still kept",
                self.directory,
                self.max_bytes,
                self.dropped,
            )

    def _total_size(self) -> int:
        if self._size_known is None:
            total = 0
            for path in self._files():
                try:
                    total += path.stat().st_size
                except OSError:
                    continue
            self._size_known = total
        return self._size_known

    def _open(self, key: str) -> IO[str]:
        if self._file is not None and not self._file.closed:
            return self._file
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while spooling
        _lock(handle.fileno(), block=True)
        header = {
            "pipetrack_spool": FORMAT_VERSION,
            "target": key,
            "host": _hostname(),
            "pid": os.getpid(),
        }
        handle.write(json.dumps(header) + "\n")
        handle.flush()
        self._file, self._path = handle, path
        return handle

    def rotate(self) -> None:
        """Close this process's file (releasing its lock) so that it can be replayed."""
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):  # a full disk fails the last flush
                    self._file.close()
            self._file = self._path = None

    @property
    def active(self) -> bool:
        return self._file is not None

    # -- replaying --------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []

    def replay(
        self, key: str | None, write: Callable[[Snapshot], None], *, own_first: bool = True
    ) -> ReplayResult:
        """Replay every closed file meant for ``key`` (any target if None), oldest first.

        Stops at the first ``Unavailable`` (the rest waits for the next chance). Files fully
        replayed are deleted.
        """
        result = ReplayResult()
        if own_first:
            self.rotate()
        for path in self._files():
            with _claimed(path) as claimed:
                if claimed is None:
                    result.files_skipped += 1
                    continue
                header, lines = claimed
                if key is not None and header.get("target") != key:
                    result.files_skipped += 1
                    continue
                try:
                    self._replay_lines(lines, write, result)
                except Unavailable as exc:
                    result.unavailable = str(exc)
                    return result
                path.unlink(missing_ok=True)
                result.files_done += 1
        with self._lock:
            self._size_known = None
        if result.replayed:
            logger.info("replayed %d spooled snapshot(s)", result.replayed)
        return result

    def _replay_lines(
        self, lines: Iterator[str], write: Callable[[Snapshot], None], result: ReplayResult
    ) -> None:
        for line in lines:
            if not line.strip():
                continue
            try:
                snapshot = Snapshot.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                # A process killed mid-write leaves a partial last line.
                result.corrupt += 1
                logger.warning("skipping a corrupt spool line (%d bytes)", len(line))
                continue
            try:
                write(snapshot)
            except Rejected as exc:
                result.rejected += 1
                logger.warning(
                    "the database rejected spooled snapshot seq %d of run %s: %s; dropped",
                    snapshot.seq,
                    snapshot.run_id,
                    exc,
                )
                continue
            result.replayed += 1

    def status(self) -> list[SpoolFile]:
        """Every spool file, with what it holds (for ``pipetrack spool status``)."""
        found = []
        for path in self._files():
            try:
                size = path.stat().st_size
                with open(path, encoding="utf-8") as handle:
                    in_use = not _lock(handle.fileno(), block=False)
                    header = _header(handle.readline())
                    runs: set[str] = set()
                    records = 0
                    for line in handle:
                        if not line.strip():
                            continue
                        records += 1
                        try:
                            runs.add(str(json.loads(line)["run"]["run_id"]))
                        except (ValueError, KeyError, TypeError):
                            continue
            except FileNotFoundError:
                continue
            pid = header.get("pid")
            found.append(
                SpoolFile(
                    path=path,
                    size=size,
                    records=records,
                    target=header.get("target"),
                    host=header.get("host"),
                    pid=pid if isinstance(pid, int) else None,
                    in_use=in_use,
                    runs=runs,
                )
            )
        return found


@contextmanager
def _claimed(path: Path) -> Iterator[tuple[dict[str, Any], Iterator[str]] | None]:
    """The file's header and lines while holding its lock; None if in use or gone."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed in finally
    except FileNotFoundError:
        yield None
        return
    try:
        if not _lock(handle.fileno(), block=False):
            yield None
            return
        header = _header(handle.readline())
        yield header, iter(handle)
    finally:
        handle.close()


def _header(line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    return data if isinstance(data, dict) and "pipetrack_spool" in data else {}


def _hostname() -> str:
    import socket

    return socket.gethostname()
