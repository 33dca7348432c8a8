"""The tracker's settings: explicit arguments first, then ``PIPETRACK_*`` variables, then defaults.

Read when a Tracker is created, never at import time. A bad environment value is logged and
ignored (the library must not break a pipeline over a typo); a bad argument raises.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tracker import _env
from tracker.errors import ConfigurationError

logger = logging.getLogger("tracker")

DEFAULT_FLUSH_INTERVAL = 0.5
DEFAULT_HEARTBEAT_INTERVAL = 15.0
DEFAULT_EXIT_TIMEOUT = 5.0
# A writer with nothing but heartbeats to write for this long lets its connection go: a script
# silent for hours holds no server connection (heartbeats then connect, write and close).
DEFAULT_IDLE_CLOSE = 120.0
DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024
# Pending rows the writer holds before it drops non-final subtask rows (counted and warned).
DEFAULT_MAX_PENDING = 10_000

# The original design recorded these; the others a pipeline user needs to reproduce a run.
DEFAULT_ENV_ALLOWLIST: tuple[str, ...] = (
    "BDC_DOWNLOAD_PATH",
    "CONDA_DEFAULT_ENV",
    "LANG",
    "PATH",
    "PYTHONPATH",
    "R_LIBS",
    "R_LIBS_USER",
    "TZ",
    "VIRTUAL_ENV",
)


class TrackerSettings:
    """Resolved settings of one Tracker (immutable after construction)."""

    __slots__ = (
        "console",
        "dsn",
        "env_allowlist",
        "exit_timeout",
        "flush_interval",
        "heartbeat_interval",
        "idle_close",
        "log_path",
        "max_pending",
        "prepare",
        "spool_dir",
        "spool_max_bytes",
        "strict",
    )

    def __init__(
        self,
        *,
        dsn: str | None = None,
        strict: bool | None = None,
        flush_interval: float | None = None,
        heartbeat_interval: float | None = None,
        exit_timeout: float | None = None,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int | None = None,
        env_allowlist: Sequence[str] | None = None,
        log_path: str | None = None,
        console: bool | None = None,
        max_pending: int | None = None,
        prepare: bool | None = None,
        idle_close: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.dsn = dsn
        self.strict = _flag(strict, env, _env.PIPETRACK_STRICT, default=False)
        self.console = _flag(console, env, _env.PIPETRACK_CONSOLE, default=True)
        self.prepare = _flag(prepare, env, _env.PIPETRACK_PREPARE, default=True)
        self.flush_interval = _number(
            flush_interval, env, _env.PIPETRACK_FLUSH_INTERVAL, DEFAULT_FLUSH_INTERVAL
        )
        self.heartbeat_interval = _number(
            heartbeat_interval, env, _env.PIPETRACK_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL
        )
        # 0: keep the connection open as long as the process runs.
        self.idle_close = _number(
            idle_close, env, _env.PIPETRACK_IDLE_CLOSE, DEFAULT_IDLE_CLOSE, allow_zero=True
        )
        self.exit_timeout = _number(
            exit_timeout, env, _env.PIPETRACK_EXIT_TIMEOUT, DEFAULT_EXIT_TIMEOUT, allow_zero=True
        )
        self.spool_max_bytes = int(
            _number(
                spool_max_bytes,
                env,
                _env.PIPETRACK_SPOOL_MAX_BYTES,
                DEFAULT_SPOOL_MAX_BYTES,
                allow_zero=True,
            )
        )
        self.max_pending = int(max_pending) if max_pending is not None else DEFAULT_MAX_PENDING
        if self.max_pending < 1:
            raise ConfigurationError(f"max_pending must be at least 1, got {max_pending!r}")
        self.spool_dir: Path | None = Path(spool_dir) if spool_dir is not None else None
        if env_allowlist is not None:
            self.env_allowlist = tuple(str(name) for name in env_allowlist)
        elif env.get(_env.PIPETRACK_ENV_ALLOWLIST) is not None:
            raw = env[_env.PIPETRACK_ENV_ALLOWLIST]
            self.env_allowlist = tuple(n.strip() for n in raw.split(",") if n.strip())
        else:
            self.env_allowlist = DEFAULT_ENV_ALLOWLIST
        self.log_path = log_path if log_path is not None else env.get(_env.PIPETRACK_LOG_PATH)

    def resolved_spool_dir(self) -> Path:
        """The spool folder: as configured, else ``<data dir>/spool`` (resolved when needed)."""
        if self.spool_dir is not None:
            return self.spool_dir
        from tracker._db.embedded import data_dir

        return data_dir() / "spool"


def _flag(value: bool | None, env: Mapping[str, str], name: str, *, default: bool) -> bool:
    if value is not None:
        return bool(value)
    raw = env.get(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in _env.TRUE_VALUES:
        return True
    if text in _env.FALSE_VALUES:
        return False
    logger.warning("ignoring %s=%r: expected 1/0, true/false, yes/no or on/off", name, raw)
    return default


def _number(
    value: float | None,
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    allow_zero: bool = False,
) -> float:
    def acceptable(number: float) -> bool:
        return math.isfinite(number) and (number > 0 or (allow_zero and number == 0))

    if value is not None:
        number = float(value)
        if not acceptable(number):
            raise ConfigurationError(f"{name.lower()} must be a positive number, got {value!r}")
        return number
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not acceptable(number):
        logger.warning("ignoring %s=%r: expected a positive number; using %s", name, raw, default)
        return default
    return number
