"""Opening connections to the target database, with errors that never show a password."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from tracker._db.dsn import DatabaseTarget, connect_params
from tracker.errors import ConfigurationError, DatabaseUnavailable

if TYPE_CHECKING:
    import psycopg

SCHEMA = "pipetrack"
# A socket directory that cannot exist: libpq checks every setting, then fails to connect here.
_PROBE_SOCKET_DIR = "/nonexistent/pipetrack-settings-probe"


def session_options(
    theirs: str | None, extra: str | None = None, *, search_path: bool = True
) -> str:
    """The ``options`` connection parameter: pipetrack's schema first on the search path.

    Passing ``options`` replaces the DSN's or PGOPTIONS' own (libpq's rule), so theirs
    (``theirs``, else PGOPTIONS) stay in front.
    """
    theirs = theirs or os.environ.get("PGOPTIONS", "")
    path = f"-c search_path={SCHEMA},public" if search_path else ""
    return " ".join(part for part in (theirs, path, extra) if part)


def connect(
    target: DatabaseTarget,
    *,
    autocommit: bool = True,
    options: str | None = None,
    search_path: bool = True,
    tcp_user_timeout: float | None = None,
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to ``target``; with ``search_path``, pipetrack's tables come first on it.

    ``tcp_user_timeout`` (seconds) bounds how long data sent may stay unacknowledged, and turns
    on TCP keepalives that notice a silent peer within about as long, so a half-open connection
    fails instead of blocking (TCP only; a setting in the DSN wins). Raises DatabaseUnavailable,
    with the DSN redacted, when the server cannot be reached within the connect timeout or
    refuses the credentials.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    conninfo = connect_params(target)
    given = conninfo_to_dict(conninfo)
    settings: dict[str, Any] = {}
    if search_path or options:
        theirs = given.get("options")
        settings["options"] = session_options(
            str(theirs) if theirs else None, options, search_path=search_path
        )
    if tcp_user_timeout:
        seconds = max(int(tcp_user_timeout), 1)
        defaults = {
            "tcp_user_timeout": str(seconds * 1000),
            "keepalives_idle": str(max(seconds // 3, 1)),
            "keepalives_interval": str(max(seconds // 6, 1)),
            "keepalives_count": "3",
        }
        settings.update({k: v for k, v in defaults.items() if k not in given})
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, **settings)
    except psycopg.OperationalError as exc:
        reason = target.redact(" ".join(str(exc).split()))
        require_valid_settings(target, conninfo)
        raise DatabaseUnavailable(
            f"cannot connect to {target.redacted}: {reason}", target=target.redacted
        ) from None
    except psycopg.ProgrammingError as exc:  # psycopg's own reading of connect_timeout
        raise ConfigurationError(
            f"bad connection settings in {target.redacted}: {target.redact(str(exc))}"
        ) from None


def require_valid_settings(target: DatabaseTarget, conninfo: str | None = None) -> None:
    """Raise ConfigurationError, password masked, if libpq refuses ``target``'s settings
    (``conninfo``: the full conninfo it is connected with, if already built)."""
    problem = settings_problem(conninfo if conninfo is not None else connect_params(target))
    if problem is not None:
        raise ConfigurationError(
            f"bad connection settings in {target.redacted}: {target.redact(problem)}"
        ) from None


def settings_problem(conninfo: str) -> str | None:
    """What libpq finds wrong with ``conninfo``'s settings (a port that is no number, an unknown
    ``sslmode``, a missing service, ...), or None when the settings are fine.

    A failed connection may be the settings' fault (a bad configuration: exit 2) or the
    server's (unreachable: exit 3). libpq alone knows its rules, so it is asked: the same
    settings, environment included, aimed at a socket directory that does not exist. Settings
    libpq accepts fail there with that path in the message, and no packet leaves the machine.
    """
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    hosts = max(
        len(params.get("host", "").split(",")), len(params.get("hostaddr", "").split(",")), 1
    )
    probe = {**params, "host": ",".join([_PROBE_SOCKET_DIR] * hosts), "hostaddr": ""}
    probe_conn = pq.PGconn.connect_start(make_conninfo("", **probe).encode())
    try:
        if probe_conn.status != pq.ConnStatus.BAD:
            return None
        message = probe_conn.error_message.decode("utf-8", "replace")
    finally:
        probe_conn.finish()
    if _PROBE_SOCKET_DIR in message:
        return None
    return " ".join(message.split()) or "libpq refused the settings"
