"""What a run records about where it runs: host, pid, user, script, log, git commit, environment.

The cheap parts are read when the run starts; the git commit is resolved on the writer thread
(it reads files, and may run ``git`` with a short timeout), never on the caller's thread.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger("tracker")

GIT_TIMEOUT_SECONDS = 2.0
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
_HEX_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


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


# -- git ------------------------------------------------------------------------------------
def git_commit(script_path: str | None) -> str | None:
    """The commit checked out in the repository holding the script (not the working directory).

    Reads ``.git`` directly (HEAD, loose refs, packed-refs, worktree ``gitdir:`` files); falls
    back to ``git rev-parse`` with a short timeout for layouts it does not know.
    """
    if not script_path:
        return None
    start = Path(script_path).parent
    git_dir = _find_git_dir(start)
    if git_dir is None:
        return None
    try:
        commit = _read_head(git_dir)
    except OSError:
        commit = None
    if commit:
        return commit
    return _run_git(start)


def _find_git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():
            try:
                text = dot_git.read_text("utf-8").strip()
            except OSError:
                return None
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:") :].strip())
                return target if target.is_absolute() else (folder / target).resolve()
            return None
    return None


def _read_head(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text("utf-8").strip()
    if _HEX_SHA.match(head):
        return head
    if not head.startswith("ref:"):
        return None
    ref = head[len("ref:") :].strip()
    # A linked worktree keeps its HEAD but shares refs with the main repository ("commondir").
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text("utf-8").strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text("utf-8").strip()
            if _HEX_SHA.match(value):
                return value
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text("utf-8").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1].strip() == ref and _HEX_SHA.match(parts[0]):
                return parts[0]
    return None


def _run_git(folder: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and _HEX_SHA.match(value) else None
