"""``pipetrack run -- CMD``: track any program as a run, and ``pipetrack r-helper|sh-helper``.

The command runs as a child with ``PIPETRACK_RUN_ID``, ``PIPETRACK_CONTROL``, the database
settings and ``TRACEPARENT`` in its environment; its output passes through unchanged (protocol
lines aside), and ``pipetrack run`` exits as the command did (128+N for signal N), so cron and
schedulers see what they saw before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from tracker.cli._common import EXIT_USAGE, add_dsn_option, complain, say
from tracker.errors import TrackerError

__all__ = ["register"]

EXIT_CANNOT_EXECUTE = 126  # as shells report a command found but not executable
EXIT_NOT_FOUND = 127  # as shells report a command not found
_TYPES = {
    "rscript": "R",
    "r": "R",
    "bash": "sh",
    "sh": "sh",
    "dash": "sh",
    "zsh": "sh",
    "ksh": "sh",
}
_SUFFIX_TYPES = {".r": "R", ".sh": "sh", ".bash": "sh", ".py": "python", ".pl": "perl"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="run a command (any language) as a tracked run",
        description=(
            "Run CMD as a tracked run: its output passes through unchanged, ::pipetrack:: lines "
            "on its stdout report progress (docs/protocol.md), and pipetrack exits with its "
            "exit code (128+N when signal N ended it)."
        ),
    )
    run.add_argument("--task", metavar="NAME", help="task name (default: the script's file name)")
    run.add_argument("--stage", metavar="S", help="stage (default: from the task name's prefix)")
    run.add_argument("--subtasks", type=int, metavar="N", help="total number of subtasks")
    run.add_argument("--log", metavar="FILE", help="also append all output to FILE (recorded)")
    run.add_argument(
        "--echo-protocol",
        action="store_true",
        help="pass ::pipetrack:: lines through to stdout as well as acting on them",
    )
    add_dsn_option(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    run.set_defaults(handler=_run)

    for language, file_name in (("r", "pipetrack.R"), ("sh", "pipetrack.sh")):
        helper = commands.add_parser(
            f"{language}-helper",
            help=f"print the path of {file_name}, to source from scripts",
            description=f"Print the path of the {file_name} helper shipped with pipetrack.",
        )
        helper.set_defaults(handler=_helper, helper_file=file_name)


def helper_path(file_name: str) -> Path:
    return Path(str(resources.files("tracker") / "helpers" / file_name))


def _helper(args: argparse.Namespace) -> int:
    say(str(helper_path(args.helper_file)))
    return 0


def script_of(argv: list[str]) -> str | None:
    """The script a command runs: ``Rscript x.R`` → x.R, ``bash -e y.sh`` → y.sh, ``./z`` → z."""
    program = Path(argv[0]).name.lower()
    if program in _TYPES or program.startswith("python"):
        for arg in argv[1:]:
            if arg.startswith("-"):
                if arg in ("-c", "-e", "-m"):
                    return None  # code on the command line, no script file
                continue
            return arg
        return None
    return argv[0]


def task_type_of(argv: list[str], script: str | None) -> str:
    program = Path(argv[0]).name.lower()
    if script:
        by_suffix = _SUFFIX_TYPES.get(Path(script).suffix.lower())
        if by_suffix:
            return by_suffix
    if program.startswith("python"):
        return "python"
    return _TYPES.get(program, "exec")


def default_task_name(argv: list[str]) -> str:
    script = script_of(argv)
    name = Path(script or argv[0]).stem
    return name or Path(argv[0]).name


def _resolve_path(path: str | None) -> str | None:
    if not path:
        return None
    candidate = Path(path)
    if not candidate.exists() and os.sep not in path:
        found = shutil.which(path)
        if found:
            candidate = Path(found)
    with contextlib.suppress(OSError):
        return str(candidate.resolve())
    return str(candidate.absolute())


class _ScriptContext:
    """Observer: gives the run the wrapped script's path and type before its first write."""

    def __init__(self, script_path: str | None, task_type: str) -> None:
        self.script_path = script_path
        self.task_type = task_type

    def on_run_start(self, run: Any) -> None:
        with run._lock:
            run.set_identity(
                script_path=self.script_path,
                script_file=Path(self.script_path).name if self.script_path else None,
                task_type=self.task_type,
            )


def _run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        complain("nothing to run: use `pipetrack run [OPTIONS] -- CMD [ARGS...]`")
        return EXIT_USAGE
    if args.subtasks is not None and args.subtasks < 0:
        complain("--subtasks must be >= 0")
        return EXIT_USAGE
    # First, before any thread exists: every thread must inherit the blocked mask.
    from tracker._wrap._child import block_signals

    original_mask = block_signals()
    return _wrap(args, argv, original_mask)


def _wrap(  # noqa: PLR0915 - the wrapper's whole life, start to end, reads best in one place
    args: argparse.Namespace, argv: list[str], original_mask: set[int]
) -> int:
    from tracker._db.ready import ready_target
    from tracker._runtime import observers
    from tracker._runtime.trackers import Tracker
    from tracker._sampling import DatabaseEndpoints, ResourceSampler, SharedSampler
    from tracker._telemetry import child_env
    from tracker._wrap._child import run_child, spawn
    from tracker._wrap._control import ControlServer
    from tracker._wrap._driver import RunDriver
    from tracker._wrap._outcome import Outcome, decide
    from tracker.cli._report import PIPETRACK_CONTROL, PIPETRACK_RUN_ID

    dsn: str | None = args.dsn
    try:
        dsn = ready_target(args.dsn).conninfo
    except TrackerError as exc:
        # The command runs whatever happens to tracking: its states go to the spool and reach
        # the database later (`pipetrack spool replay`, or the next pipetrack process).
        complain(f"{exc}; running the command anyway, its run is spooled")
    script = script_of(argv)
    log_path = str(Path(args.log).expanduser().absolute()) if args.log else None
    log_fd = None
    if log_path:
        try:
            # The command's output may hold what its user only may read: private, as pipetrack's
            # own files.
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            complain(f"cannot open the log {log_path}: {exc.strerror}")
            return EXIT_USAGE
    tracker = Tracker(dsn=dsn, lifecycle=False, console=False)
    # The run's resources are the command's tree's, not this wrapper's: sampled from the spawn
    # on, by the writer (its cadence, subtask boundaries) and the supervisor (every second).
    tree = SharedSampler()
    tracker.writer.sample_from(tree)
    context = _ScriptContext(_resolve_path(script), task_type_of(argv, script))
    observers.add_observer(context)
    try:
        run = tracker.run(
            args.task or default_task_name(argv),
            total_subtasks=args.subtasks,
            stage=args.stage,
            log_path=log_path,
        )
    finally:
        observers.remove_observer(context)
    driver = RunDriver(run)
    control = ControlServer()
    env = child_env()
    env[PIPETRACK_RUN_ID] = run.run_id
    env[PIPETRACK_CONTROL] = control.path
    if dsn:
        env["PIPETRACK_DSN"] = dsn
    try:
        try:
            pid, out_fd, err_fd = spawn(argv, env, original_mask)
        except OSError as exc:
            code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXECUTE
            reason = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
            complain(reason)
            driver.end(Outcome("FAILED", code, reason))
            return code
        tree.attach(ResourceSampler(pid, database=DatabaseEndpoints.from_conninfo(dsn)))
        result = run_child(
            pid,
            out_fd,
            err_fd,
            listener=driver,
            control=control,
            log_fd=log_fd,
            echo=args.echo_protocol,
            resources=tree,
        )
        outcome = decide(
            result.returncode,
            cancel_signal=result.cancel_signal,
            stderr_lines=result.stderr_lines,
            reported_error=driver.reported_error,
            oom_killed=result.oom_killed,
        )
        driver.end(outcome)
        return outcome.exit_code
    finally:
        control.close()
        if log_fd is not None:
            os.close(log_fd)
        if not tracker.shutdown(finish=False):
            print("pipetrack: the run's final state was spooled, not written", file=sys.stderr)
