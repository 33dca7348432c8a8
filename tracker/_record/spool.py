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

The folder is private (0700, files 0600, whatever the umask). A file appears under its name only
once its header is written and its owner holds its lock (it is born under a temporary name), so
a replay never meets a newborn file. Every file is judged on its own (``_spool_files``): one
that is not a regular file of this user, is not UTF-8 JSON or lacks its header is moved aside as
``*.corrupt`` with one warning, and the replay goes on with the next; a file with a torn or
unreadable line has its good lines replayed and is moved aside too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tracker._model.snapshot import Snapshot
from tracker._record.spool_files import (
    QUARANTINE_SUFFIX,
    Unfit,
    claimed,
    create,
    directory_problem,
    lines_of,
    lock,
    make_directory,
    open_for_reading,
    quarantine,
    read_header,
)
from tracker._record.store import Rejected, Unavailable

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
    files_quarantined: int = 0
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
    bad_lines: int = 0
    problem: str | None = None  # why it is not read (replay moves it aside)


def _silent(step: str) -> None:
    """No one to tell."""


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
        self._directory_checked = False
        self._warned: set[str] = set()  # files that could not be moved aside, warned about

    # -- appending --------------------------------------------------------------------------
    def append(
        self,
        key: str,
        snapshots: list[Snapshot],
        *,
        durable: bool = True,
        say: Callable[[str], None] | None = None,
    ) -> int:
        """Append ``snapshots`` (in order); returns how many were kept (the rest were dropped).

        ``durable``: a final snapshot is synced to disk (``fsync``). A process ending on a signal
        passes False: its final state needs to be in the kernel, which keeps it once the process
        is gone, and an ``fsync`` on a disk busy with other writers can take seconds, longer than
        the handler may wait. ``say`` is told each step, for a handler that gives up waiting.
        """
        say = say or _silent
        kept = 0
        say("waiting for the spool's lock")
        with self._lock:
            for snapshot in snapshots:
                line = json.dumps(snapshot.to_json(), separators=(",", ":"), default=str) + "\n"
                size = len(line.encode("utf-8"))
                if not snapshot.final and self._total_size() + size > self.max_bytes:
                    self._drop()
                    continue
                try:
                    say("opening the spool file")
                    handle = self._open(key)
                    say("writing the spool file")
                    handle.write(line)
                    handle.flush()
                    if snapshot.final and durable:
                        # A process that ends while the database is down leaves this behind.
                        say("syncing the spool file")
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
            try:
                paths = self._files()
            except OSError:
                paths = []  # an unlistable folder: the write itself will fail and say so
            for path in paths:
                try:
                    total += path.lstat().st_size
                except OSError:
                    continue
            self._size_known = total
        return self._size_known

    def _open(self, key: str) -> IO[str]:
        if self._file is not None and not self._file.closed:
            return self._file
        make_directory(self.directory)
        self._check_directory()
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        # Born under a name replay ignores, locked, with its header: then renamed, so a file
        # under its real name is never headerless (a replay would set it aside) nor unlocked.
        temporary = self.directory / f".{name}.tmp"
        handle = os.fdopen(create(temporary), "a", encoding="utf-8")
        try:
            lock(handle.fileno(), block=True)  # nobody else knows the name: never waits
            header = {
                "pipetrack_spool": FORMAT_VERSION,
                "target": key,
                "host": _hostname(),
                "pid": os.getpid(),
            }
            handle.write(json.dumps(header) + "\n")
            handle.flush()
            os.rename(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                handle.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._file, self._path = handle, path
        return handle

    def _check_directory(self) -> None:
        """Warn (once) if the folder exists open to other users or owned by another."""
        if self._directory_checked:
            return
        self._directory_checked = True
        problem = directory_problem(self.directory)
        if problem is not None:
            logger.warning("spool folder %s %s", self.directory, problem)

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
        """The spool files, oldest first. Raises OSError if the folder cannot be listed."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []

    def set_aside(self) -> list[Path]:
        """The files moved aside (``*.corrupt``), for someone to look at."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(QUARANTINE_SUFFIX))
        except FileNotFoundError:
            return []

    def replay(
        self, key: str | None, write: Callable[[Snapshot], None], *, own_first: bool = True
    ) -> ReplayResult:
        """Replay every closed file meant for ``key`` (any target if None), oldest first.

        Stops at the first ``Unavailable`` (the rest waits for the next chance). Files fully
        replayed are deleted; a file that cannot be trusted or read is moved aside, and the
        replay goes on with the next. Raises OSError only if the folder cannot be listed.
        """
        result = ReplayResult()
        if own_first:
            self.rotate()
        self._check_directory()
        for path in self._files():
            try:
                with claimed(path) as claim:
                    if claim is None:
                        result.files_skipped += 1
                        continue
                    target, lines = claim
                    if key is not None and target != key:
                        result.files_skipped += 1
                        continue
                    bad = self._replay_lines(lines, write, result)
            except Unfit as exc:
                self._set_aside(path, f"{exc.reason}; not replayed", result)
                continue
            except Unavailable as exc:
                result.unavailable = str(exc)
                return result
            result.files_done += 1
            if bad:
                reason = f"{bad} unreadable line(s) skipped, the rest replayed"
                self._set_aside(path, reason, result)
            else:
                path.unlink(missing_ok=True)
        with self._lock:
            self._size_known = None
        if result.replayed:
            logger.info("replayed %d spooled snapshot(s)", result.replayed)
        return result

    def _set_aside(self, path: Path, reason: str, result: ReplayResult) -> None:
        try:
            moved = quarantine(path)
        except FileNotFoundError:
            return  # another replay moved it first
        except OSError as exc:
            # E.g. another user's file in a sticky folder: left where it is, and never read.
            result.files_skipped += 1
            if str(path) not in self._warned:
                self._warned.add(str(path))
                logger.warning(
                    "spool file %s: %s; cannot rename it (%s), so it is left and ignored",
                    path,
                    reason,
                    exc.strerror or exc,
                )
            return
        result.files_quarantined += 1
        logger.warning(
            "spool file %s: %s; renamed to end in %s",
            path,
            reason,
            moved.name[len(path.name) :],
        )

    def _replay_lines(
        self, lines: Iterator[bytes], write: Callable[[Snapshot], None], result: ReplayResult
    ) -> int:
        """Write each snapshot in ``lines``; returns how many lines could not be read."""
        bad = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                snapshot = Snapshot.from_json(json.loads(line.decode("utf-8")))
            except Exception:
                # A process killed mid-write leaves a partial last line; a disk, worse. Any
                # error at all (bad UTF-8, JSON nested past the recursion limit, a field of
                # the wrong type) is this line's alone.
                result.corrupt += 1
                bad += 1
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
            except Unavailable:
                raise
            except Exception as exc:
                # Values no writer makes (a spool from elsewhere): the line cannot be encoded.
                result.corrupt += 1
                bad += 1
                logger.debug("cannot write spooled snapshot of run %s: %r", snapshot.run_id, exc)
                continue
            result.replayed += 1
        return bad

    def status(self) -> list[SpoolFile]:
        """Every spool file, with what it holds (for ``pipetrack spool status``).

        Only looks: a file that replay would move aside is listed with its ``problem``."""
        self._check_directory()
        found = []
        for path in self._files():
            try:
                found.append(_describe(path))
            except FileNotFoundError:
                continue
            except Unfit as exc:
                found.append(
                    SpoolFile(
                        path=path,
                        size=0,
                        records=0,
                        target=None,
                        host=None,
                        pid=None,
                        in_use=False,
                        problem=exc.reason,
                    )
                )
        return found


def _describe(path: Path) -> SpoolFile:
    """One file as ``status`` shows it. Raises Unfit, or FileNotFoundError if it is gone."""
    fd = open_for_reading(path)
    if fd is None:
        raise FileNotFoundError(path)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        in_use = not lock(fd, block=False)
        header = read_header(handle)
        runs: set[str] = set()
        records = bad = 0
        for line in lines_of(handle):
            if not line.strip():
                continue
            try:
                runs.add(str(json.loads(line.decode("utf-8"))["run"]["run_id"]))
            except Exception:
                bad += 1
                continue
            records += 1
    pid = header.get("pid")
    host = header.get("host")
    return SpoolFile(
        path=path,
        size=size,
        records=records,
        target=header["target"],
        host=host if isinstance(host, str) else None,
        pid=pid if isinstance(pid, int) else None,
        in_use=in_use,
        runs=runs,
        bad_lines=bad,
    )


def _hostname() -> str:
    return socket.gethostname()
