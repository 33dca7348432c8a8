"""The git commit a run's script was checked out at, resolved on the writer thread.

Reads ``.git`` directly (HEAD, loose refs, packed-refs, worktree ``gitdir:`` files), which costs
a few file reads; only for layouts it does not know does it run ``git`` with a short timeout.
Never on the caller's thread: a slow disk or a hung ``git`` must not slow the pipeline.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

GIT_TIMEOUT_SECONDS = 2.0
_HEX_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


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
