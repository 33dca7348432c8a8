"""What the bench scripts share: a migrated database to measure against, and child processes
that run the package as an install leaves it."""

from __future__ import annotations

import compileall
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def bench_database(dsn: str | None) -> Iterator[str]:
    """A migrated database: the given DSN, or a temporary embedded server (stopped after)."""
    if dsn:
        yield dsn
        return
    from tracker._db import embedded, migrate
    from tracker._db.connect import connect
    from tracker._db.dsn import DatabaseTarget

    with tempfile.TemporaryDirectory(prefix="pipetrack-bench-") as folder:
        pgdata = Path(folder) / "postgres"
        uri = embedded.ensure_running(pgdata)
        try:
            with connect(DatabaseTarget(conninfo=uri, source="bench")) as conn:
                migrate.upgrade(conn)
            yield uri
        finally:
            embedded.stop(pgdata)


def compiled_like_an_install() -> None:
    """Have the processes this one starts run tracker and exporter from bytecode, as after
    ``pip install`` (which compiles at install time). A checkout run with
    ``PYTHONDONTWRITEBYTECODE`` set would have every child compile every module it imports: a
    third of a tracked process's start on this machine, which no user pays."""
    import exporter
    import tracker

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for package in (tracker, exporter):
        compileall.compile_dir(str(Path(package.__file__ or "").parent), quiet=1)
