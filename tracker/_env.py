"""Names of the environment variables pipetrack reads, in one place.

Read at call time, never at import time; arguments always win over these.
"""

from __future__ import annotations

PIPETRACK_DSN = "PIPETRACK_DSN"
"""libpq connection string or URI of the database holding the canonical record."""

PIPETRACK_DATA_DIR = "PIPETRACK_DATA_DIR"
"""Folder of pipetrack's own files: the embedded server's data directory and the spool.
Defaults to the user's data directory (``~/.local/share/pipetrack`` on Linux)."""

PIPETRACK_STRICT = "PIPETRACK_STRICT"
"""``1``/``true``: tracking problems raise instead of being logged as warnings."""

# The original design's names, accepted so existing .Renviron files keep working. Each is used
# only when its canonical counterpart (PIPETRACK_DSN, or libpq's PG* variable) is unset.
MONITOR_DB_CONN = "MONITOR_DB_CONN"
MONITOR_DB_ALIASES: dict[str, tuple[str, str]] = {
    # alias: (libpq parameter, libpq environment variable it stands in for)
    "MONITOR_DB_HOST": ("host", "PGHOST"),
    "MONITOR_DB_PORT": ("port", "PGPORT"),
    "MONITOR_DB_NAME": ("dbname", "PGDATABASE"),
    "MONITOR_DB_USER": ("user", "PGUSER"),
    "MONITOR_DB_PASSWORD": ("password", "PGPASSWORD"),
}

# libpq variables that name a server to talk to. PGPASSWORD and friends alone do not: with only
# those set, pipetrack still uses its embedded server.
LIBPQ_TARGET_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES = frozenset({"0", "false", "no", "off", ""})
