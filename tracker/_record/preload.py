"""The modules the writer thread needs, loaded by it once, with forks waiting meanwhile.

``import tracker`` stays cheap because the writer loads psycopg, the spool and the rest on its
own thread when it starts. A process that forks while another thread is half-way through an
import hands the child a half-initialised module that the child can never finish (the importing
thread does not exist there): every later import of it fails in the child, and its writer with
it. So the writer thread loads them all at once under a lock that a fork takes first (an
``os.register_at_fork`` hook): a fork waits the fraction of a second the loading takes, and
never lands inside it. The lock is taken by the forking thread only; nothing else holds it
but the writer thread, and only for the imports.
"""

from __future__ import annotations

import os
import threading

WRITER_MODULES = (
    "psycopg",
    "psycopg.conninfo",
    "psycopg.pq",
    "tracker._db.connect",
    "tracker._db.dsn",
    "tracker._db.embedded",
    "tracker._db.migrate",
    "tracker._record.git",
    "tracker._record.literals",
    "tracker._record.spool",
    "tracker._record.spool_files",
    "tracker._record.statements",
    "tracker._record.store",
    "tracker._sampling",
)

_lock = threading.Lock()
_loaded = False


def load_writer_modules() -> None:
    """Import ``WRITER_MODULES`` (once; called by the writer thread before its first cycle)."""
    global _loaded  # noqa: PLW0603 - once per process
    if _loaded:
        return
    with _lock:
        for name in WRITER_MODULES:
            __import__(name)
        _loaded = True


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    # The child's copy is held (by this very fork): a new one, never acquired.
    global _lock  # noqa: PLW0603
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
