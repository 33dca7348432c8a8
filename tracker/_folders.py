"""The folders pipetrack makes for itself: private to the user (0700) whatever the umask.

Its data folder holds the embedded server, its start-up lock and the spool: nothing another
user of the machine should list or read. Missing folders above it are made as ``mkdir -p``
makes them; a folder that already exists is left as it is (the spool warns about one open to
others)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FOLDER = 0o700


def make_private(directory: Path) -> None:
    """Create ``directory`` 0700, its missing parents as ``mkdir -p`` would; idempotent."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(directory, PRIVATE_FOLDER)
    except FileExistsError:
        return  # another process made it at the same moment
    with contextlib.suppress(OSError):
        os.chmod(directory, PRIVATE_FOLDER)  # the umask may have taken the owner's bits
