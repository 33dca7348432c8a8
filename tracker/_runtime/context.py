"""What a run records about where it runs: host, pid, user, script, log, environment.

All of it is cheap and read when the run starts; the git commit, which may not be, is resolved
later on the writer thread (``tracker._record.git``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger("tracker")

REDACTED = "****"

# A variable whose name contains one of these words is recorded as REDACTED. Matched on words
# (split at "_" and digits' edges), so "KEYBOARD_LAYOUT" is not a key but "API_KEY" is; the
# compound forms (APIKEY, PASSWD …) are listed because people write them.
_SECRET_WORDS = frozenset(
    {
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PWD_HASH",
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "KEY",
        "KEYS",
        "APIKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "CREDS",
        "AUTH",
        "PRIVATE",
        "SESSION",
        "COOKIE",
        "SIGNATURE",
        "DSN",
        "CONN",
        "CONNECTION",
    }
)
_SECRET_SUBSTRINGS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "APIKEY", "PRIVATE")


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name suggests it holds a secret."""
    upper = name.upper()
    if any(part in upper for part in _SECRET_SUBSTRINGS):
        return True
    words = {w for w in re.split(r"[^A-Z0-9]+", upper) if w}
    return bool(words & _SECRET_WORDS) or "DATABASE_URL" in upper


def environment(
    allowlist: Iterable[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowed variables that are set, secret-looking ones redacted, URL passwords masked."""
    from tracker._db.dsn import redact_dsn

    env = os.environ if environ is None else environ
    patterns = [p for p in allowlist if p]
    chosen: dict[str, str] = {}
    for name in sorted(env):
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            continue
        chosen[name] = REDACTED if looks_secret(name) else redact_dsn(env[name])
    return chosen


def script_location() -> tuple[str | None, str | None]:
    """The running script's absolute path and file name, or (None, None) (``python -c``, REPL)."""
    main = sys.modules.get("__main__")
    candidate = getattr(main, "__file__", None)
    if not candidate and sys.argv and sys.argv[0] not in ("", "-c", "-m"):
        candidate = sys.argv[0]
    if not candidate:
        return None, None
    path = Path(candidate)
    try:
        path = path.resolve()
    except OSError:
        path = path.absolute()
    return str(path), path.name


def default_task_name() -> str:
    """A run's name when the caller gives none: the script's file name without its suffix."""
    _, file_name = script_location()
    if not file_name:
        return "python"
    stem = Path(file_name).stem
    return stem or file_name


def user_name() -> str | None:
    for name in ("USER", "LOGNAME", "USERNAME"):
        value = os.environ.get(name)
        if value:
            return value
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        return None


def capture(
    *, log_path: str | None, allowlist: Iterable[str], task_type: str | None
) -> dict[str, Any]:
    """The cheap part of the context, read on the caller's thread when a run starts."""
    import socket

    script_path, script_file = script_location()
    log = str(Path(log_path).expanduser().absolute()) if log_path else None
    return {
        "hostname": socket.gethostname(),
        "process_id": os.getpid(),
        "user_name": user_name(),
        "script_path": script_path,
        "script_file": script_file,
        "log_path": log,
        "log_file": Path(log).name if log else None,
        "task_type": task_type or "python",
        "environment": environment(allowlist),
        "git_commit": None,
    }
