"""The spool's files on disk: a private folder, files born whole, and opening without trust.

Anything in the spool folder may be hostile or broken: a FIFO (``open`` would block for ever), a
link to ``/etc/passwd``, a device, another user's file, bytes that are not UTF-8. So a file is
judged before it is read (``lstat``: a regular file of this user, one link), opened so that it
can neither block nor follow a link (``O_NOFOLLOW | O_NONBLOCK``), judged again on what was
opened (``fstat``: the same inode), and read as bytes. Whatever fails, the caller gets ``Unfit``
with a reason to show, and the file can be moved aside with ``quarantine``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tracker._folders import make_private

# Imported with the module, not when first locking: the signal worker may spool, and must
# import nothing (tracker._runtime.lifecycle).
if sys.platform != "win32":
    import fcntl

QUARANTINE_SUFFIX = ".corrupt"
FILE_MODE = 0o600

_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
)
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | os.O_APPEND
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class Unfit(Exception):
    """The file must not be read (or could not be): ``reason`` says why, for a warning."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _euid() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid is not None else None  # Windows: no owners to compare


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def judge(info: os.stat_result) -> None:
    """Raise Unfit unless ``info`` is a regular file of this user with a single link."""
    if not stat.S_ISREG(info.st_mode):
        raise Unfit(_kind(info.st_mode))
    euid = _euid()
    if euid is not None and info.st_uid != euid:
        raise Unfit(f"owned by uid {info.st_uid}, not by this user")
    if info.st_nlink != 1:
        # A hard link to a file elsewhere would be read (and its name deleted) like our own.
        raise Unfit(f"a file with {info.st_nlink} hard links")


def open_for_reading(path: Path) -> int | None:
    """An open descriptor on ``path`` once it passed ``judge``; None if it is gone.

    Never blocks and never follows a link: a FIFO, a device or a link is refused by ``lstat``
    before any ``open``, and should one be swapped in afterwards, ``O_NOFOLLOW`` / ``O_NONBLOCK``
    and the inode check on ``fstat`` catch it."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unfit(f"cannot be examined ({exc.strerror or exc})") from exc
    judge(before)
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unfit(f"cannot be opened ({exc.strerror or exc})") from exc
    try:
        opened = os.fstat(fd)
        judge(opened)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise Unfit("replaced while it was being opened")
        # Reads of a regular file never block anyway; a plain descriptor reads more simply.
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create(path: Path) -> int:
    """A new file, 0600 whatever the umask; never an existing file, never through a link."""
    fd = os.open(path, _CREATE_FLAGS, FILE_MODE)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits the owner needs
    except BaseException:
        os.close(fd)
        raise
    return fd


def quarantine(path: Path) -> Path:
    """Move ``path`` aside as ``<name>.corrupt`` (never over another file); returns the new path.

    A rename within the folder: the link itself, never what it points at. Raises OSError if the
    file cannot be moved (e.g. another user's file in a sticky folder)."""
    target = path.with_name(path.name + QUARANTINE_SUFFIX)
    number = 0
    while os.path.lexists(target):
        number += 1
        target = path.with_name(f"{path.name}.{number}{QUARANTINE_SUFFIX}")
    os.rename(path, target)
    return target


def make_directory(directory: Path) -> None:
    """Create ``directory`` 0700 whatever the umask, and its parent (pipetrack's data folder,
    unless the spool is configured elsewhere) too."""
    make_private(directory.parent)
    make_private(directory)


def directory_problem(directory: Path) -> str | None:
    """What is wrong with an existing spool folder's owner or modes, if anything."""
    try:
        info = os.stat(directory)
    except OSError:
        return None  # missing: it will be created private
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    euid = _euid()
    if euid is not None and info.st_uid != euid:
        return f"is owned by uid {info.st_uid}, not by this user, who may read and plant files"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return f"is open to other users (mode {mode:04o}; 0700 expected), who may read it"
    return None


def lock(fd: int, *, block: bool) -> bool:
    if sys.platform == "win32":  # no advisory locks
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


@contextmanager
def claimed(path: Path) -> Iterator[tuple[str, Iterator[bytes]] | None]:
    """The file's target and lines while holding its lock; None if in use or gone.

    Raises Unfit if the file must not be read or cannot be."""
    fd = open_for_reading(path)
    if fd is None:
        yield None
        return
    with os.fdopen(fd, "rb") as handle:
        if not lock(fd, block=False):
            yield None
            return
        header = read_header(handle)
        yield header["target"], lines_of(handle)


def lines_of(handle: IO[bytes]) -> Iterator[bytes]:
    """The file's lines as bytes; a read error (a failing disk) makes the file Unfit."""
    while True:
        try:
            line = handle.readline()
        except OSError as exc:
            raise Unfit(f"cannot be read ({exc.strerror or exc})") from exc
        if not line:
            return
        yield line


def read_header(handle: IO[bytes]) -> dict[str, Any]:
    """The first line as a header naming its database; Unfit if it is none."""
    try:
        line = handle.readline()
    except OSError as exc:
        raise Unfit(f"cannot be read ({exc.strerror or exc})") from exc
    if not line:
        raise Unfit("is empty, without a spool header")
    if not line.endswith(b"\n"):
        raise Unfit("its header line is cut short")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unfit("its header line is not UTF-8") from exc
    try:
        data = json.loads(text)
    except Exception as exc:  # ValueError, or RecursionError for absurd nesting
        raise Unfit("its header line is not JSON") from exc
    if not (
        isinstance(data, dict) and "pipetrack_spool" in data and isinstance(data.get("target"), str)
    ):
        raise Unfit("its first line is not a spool header naming a database")
    return data
