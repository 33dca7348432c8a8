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

# The tracker library (see tracker._settings for defaults and parsing).
PIPETRACK_FLUSH_INTERVAL = "PIPETRACK_FLUSH_INTERVAL"
"""Seconds between writes of ordinary progress (transitions are written at once). Default 0.5."""

PIPETRACK_HEARTBEAT_INTERVAL = "PIPETRACK_HEARTBEAT_INTERVAL"
"""Seconds between heartbeats (last_update, memory, CPU) of a running run. Default 15."""

PIPETRACK_EXIT_TIMEOUT = "PIPETRACK_EXIT_TIMEOUT"
"""Seconds the process waits at exit for its final states to be written or spooled. Default 5."""

PIPETRACK_SPOOL_MAX_BYTES = "PIPETRACK_SPOOL_MAX_BYTES"
"""Size cap of the spool folder in bytes; beyond it, non-final snapshots are dropped (counted
and warned). Default 64 MiB."""

PIPETRACK_ENV_ALLOWLIST = "PIPETRACK_ENV_ALLOWLIST"
"""Comma-separated names (shell-style patterns allowed, e.g. ``BDC_*``) of the environment
variables recorded in a run's ``environment`` column. Secret-looking names are redacted."""

PIPETRACK_LOG_PATH = "PIPETRACK_LOG_PATH"
"""Path of the script's log file, recorded as the run's ``log_path``/``log_file``."""

PIPETRACK_CONSOLE = "PIPETRACK_CONSOLE"
"""``0``/``false`` silences the console lines genter()/gexit()/gmessage() print to stderr."""

PIPETRACK_PREPARE = "PIPETRACK_PREPARE"
"""``0``/``off`` stops the writer from using prepared statements, for a proxy that cannot carry
them (PgBouncer before 1.21 in transaction mode). Default on."""

PIPETRACK_IDLE_CLOSE = "PIPETRACK_IDLE_CLOSE"
"""Seconds a writer with nothing but heartbeats to write keeps its database connection before
closing it (it reconnects on the next write). Default 120; 0 keeps it open."""

PIPETRACK_RUN_ID = "PIPETRACK_RUN_ID"
"""The run id of the enclosing run, for child processes: a run started in a process that has it
records it as ``parent_run_id``."""
