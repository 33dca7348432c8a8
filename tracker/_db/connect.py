"""Opening connections to the target database, with errors that never show a password."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from tracker._db import embedded
from tracker._db.conninfo import parse_conninfo
from tracker._db.dsn import DatabaseTarget, connect_params, resolve_target
from tracker.errors import DatabaseUnavailable

if TYPE_CHECKING:
    import psycopg

SCHEMA = "pipetrack"


def ready_target(dsn: str | None = None, *, start_embedded: bool = True) -> DatabaseTarget:
    """The configured target; for the embedded default, started and with its URI filled in."""
    target = resolve_target(dsn)
    if target.embedded and start_embedded:
        target = dataclasses.replace(target, conninfo=embedded.ensure_running())
    return target


def session_options(theirs: str | None, extra: str | None = None) -> str:
    """The ``options`` connection parameter: pipetrack's schema first on the search path.

    Passing ``options`` replaces the DSN's or PGOPTIONS' own (libpq's rule), so theirs
    (``theirs``, else PGOPTIONS) stay in front.
    """
    theirs = theirs or os.environ.get("PGOPTIONS", "")
    return " ".join(part for part in (theirs, f"-c search_path={SCHEMA},public", extra) if part)


def connect(
    target: DatabaseTarget, *, autocommit: bool = True, options: str | None = None
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection whose search_path finds pipetrack's tables first.

    Raises DatabaseUnavailable, with the DSN redacted, when the server cannot be reached within
    the connect timeout or refuses the credentials.
    """
    import psycopg

    merged = session_options(parse_conninfo(target.conninfo).get("options"), options)
    try:
        return psycopg.connect(connect_params(target), autocommit=autocommit, options=merged)
    except psycopg.OperationalError as exc:
        reason = target.redact(" ".join(str(exc).split()))
        raise DatabaseUnavailable(
            f"cannot connect to {target.redacted}: {reason}", target=target.redacted
        ) from None
