"""The database a command or a writer is to use, ready: for the embedded default, started and
at this version's schema."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tracker._db import embedded, migrate
from tracker._db.connect import SCHEMA, connect
from tracker._db.dsn import DatabaseTarget, resolve_target

if TYPE_CHECKING:
    import psycopg

# Embedded servers this process found at this version's schema (checked once per process).
_CURRENT: set[str] = set()


def ready_target(dsn: str | None = None, *, start_embedded: bool = True) -> DatabaseTarget:
    """The configured target; for the embedded default, started, with its URI filled in and its
    schema brought up to this version's. The embedded database is pipetrack's own: a newcomer's
    first command may be ``pipetrack status``, before any script has written."""
    target = resolve_target(dsn)
    if target.embedded and start_embedded:
        target = dataclasses.replace(target, conninfo=embedded.ensure_running())
        if target.conninfo not in _CURRENT:
            upgrade_if_behind(target)
            _CURRENT.add(target.conninfo)
    return target


def upgrade_if_behind(
    target: DatabaseTarget, conn: psycopg.Connection[tuple[object, ...]] | None = None
) -> None:
    """Bring ``target``'s schema up to this version's if it is behind (checked on ``conn``, or
    on a connection of its own). For the embedded database only: a configured one is upgraded
    by its owner (``pipetrack db upgrade``)."""
    if conn is None:
        with connect(target) as own:
            behind = _behind(own)
    else:
        behind = _behind(conn)
    if behind:
        with connect(target) as admin:  # migrations run with pipetrack's search_path
            migrate.upgrade(admin)


def _behind(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    present = conn.execute(
        f"SELECT to_regclass('{SCHEMA}.schema_migrations') IS NOT NULL", prepare=False
    ).fetchone()
    applied = 0
    if present and present[0]:
        found = conn.execute(
            f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations", prepare=False
        ).fetchone()
        applied = int(str(found[0])) if found else 0
    return applied < max(m.version for m in migrate.shipped_migrations())
