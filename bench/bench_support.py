"""What the bench scripts share: a migrated database to measure against."""

from __future__ import annotations

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
