"""``pipetrack enter | exit | progress | message | count``: report to the run named by
PIPETRACK_RUN_ID.

For tools that cannot print protocol lines to the wrapped command's stdout. Each sends one
protocol line to the ``pipetrack run`` that owns the run (see tracker/_wrap/_control.py). Like
the rest of tracking, a report that cannot be delivered warns and exits 0 — it never fails the
pipeline — unless strict mode (PIPETRACK_STRICT=1) asks for an error.
"""

from __future__ import annotations

import argparse
import os
import re

from tracker._env import PIPETRACK_STRICT, TRUE_VALUES
from tracker._model.counts import AMOUNT_MAX, clean_name, name_refusal
from tracker._wrap._control import send
from tracker._wrap.protocol import Command, Count, Enter, Exit, Message, Progress, format_line
from tracker.cli._common import EXIT_NOT_OK, EXIT_OK, EXIT_USAGE, complain

__all__ = ["COMMANDS", "PIPETRACK_CONTROL", "PIPETRACK_RUN_ID", "register"]

PIPETRACK_RUN_ID = "PIPETRACK_RUN_ID"
PIPETRACK_CONTROL = "PIPETRACK_CONTROL"
COMMANDS = (["enter"], ["exit"], ["progress"], ["message"])
"""The subcommands this module registers (as the first word of a command line)."""
_FRACTION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enter = commands.add_parser(
        "enter",
        help="enter a subtask of the current `pipetrack run`",
        description="Enter a (nested) subtask of the run named by $PIPETRACK_RUN_ID.",
    )
    enter.add_argument("name", metavar="NAME")
    enter.add_argument("--items", type=int, metavar="N", help="items this subtask will process")
    enter.set_defaults(handler=_enter)

    leave = commands.add_parser(
        "exit",
        help="leave the current subtask",
        description="Leave the innermost open subtask of the run named by $PIPETRACK_RUN_ID.",
    )
    leave.add_argument("message", nargs="?", metavar="MESSAGE")
    leave.add_argument("--failed", action="store_true", help="the subtask failed")
    leave.set_defaults(handler=_exit)

    progress = commands.add_parser(
        "progress",
        help="report items done in the current subtask",
        description="Report items done: `pipetrack progress 3 8` or `pipetrack progress 3/8`.",
    )
    progress.add_argument("done", metavar="DONE", help="items done, or DONE/TOTAL")
    progress.add_argument("total", nargs="?", type=int, metavar="TOTAL")
    progress.add_argument("--message", "-m", metavar="TEXT")
    progress.set_defaults(handler=_progress)

    message = commands.add_parser(
        "message",
        help="set the progress message",
        description="Set the current subtask's progress message (or the run's, with --overall).",
    )
    message.add_argument("text", metavar="TEXT")
    message.add_argument("--overall", action="store_true", help="the run's message")
    message.set_defaults(handler=_message)

    count = commands.add_parser(
        "count",
        help="add to a work count (rows, files …) of the current subtask and run",
        description=(
            "Add N (default 1) to the work count NAME of the innermost subtask of the run named "
            "by $PIPETRACK_RUN_ID, and so of the run: `pipetrack count rows_written 500`. A run "
            "keeps at most 32 names of up to 200 characters."
        ),
    )
    count.add_argument("name", metavar="NAME")
    count.add_argument("n", nargs="?", default="1", metavar="N", help="a whole number >= 0")
    count.set_defaults(handler=_count)


def _strict() -> bool:
    return os.environ.get(PIPETRACK_STRICT, "").strip().lower() in TRUE_VALUES


def _deliver(command: Command) -> int:
    run_id = os.environ.get(PIPETRACK_RUN_ID, "")
    control = os.environ.get(PIPETRACK_CONTROL, "")
    strict = _strict()
    if not control:
        if run_id:
            problem = (
                f"the run {run_id} is not one `pipetrack run` owns (no ${PIPETRACK_CONTROL}); "
                "nothing reported"
            )
        else:
            problem = "not inside `pipetrack run` ($PIPETRACK_RUN_ID is not set); nothing reported"
        complain(problem)
        return EXIT_NOT_OK if strict else EXIT_OK
    try:
        send(control, format_line(command))
    except OSError as exc:
        complain(f"cannot reach the `pipetrack run` of run {run_id or '?'}: {exc}")
        return EXIT_NOT_OK if strict else EXIT_OK
    return EXIT_OK


def _enter(args: argparse.Namespace) -> int:
    if not args.name:
        complain("a subtask needs a name")
        return EXIT_USAGE
    if args.items is not None and args.items < 0:
        complain("--items must be >= 0")
        return EXIT_USAGE
    return _deliver(Enter(name=args.name, items=args.items))


def _exit(args: argparse.Namespace) -> int:
    command = Exit(status="FAILED" if args.failed else "COMPLETED", message=args.message or None)
    return _deliver(command)


def _progress(args: argparse.Namespace) -> int:
    total: int | None = args.total
    match = _FRACTION.match(args.done)
    if match:
        done, total = int(match.group(1)), int(match.group(2))
    elif args.done.strip().isdigit():
        done = int(args.done)
    else:
        complain(f"DONE must be a whole number or DONE/TOTAL, not {args.done!r}")
        return EXIT_USAGE
    if total is not None and total < 0:
        complain("TOTAL must be >= 0")
        return EXIT_USAGE
    return _deliver(Progress(done=done, total=total, message=args.message or None))


def _message(args: argparse.Namespace) -> int:
    return _deliver(Message(text=args.text, scope="overall" if args.overall else "subtask"))


def _count(args: argparse.Namespace) -> int:
    """Refuses a bad name or N as the library does: a warning and nothing counted (exit 0),
    or, in strict mode, exit 2: a count that is wrong is worse than one that is missing."""
    text = args.n.strip()
    problem = None
    if not (text.isascii() and text.isdigit()):
        problem = f"N must be a whole number >= 0, not {args.n!r}"
    elif len(text.lstrip("0")) > len(str(AMOUNT_MAX)) or int(text) > AMOUNT_MAX:
        problem = f"N must be at most {AMOUNT_MAX}, not {text[:40]}"
    name, cleaned = clean_name(args.name)
    refusal = name_refusal(name)
    if refusal is not None:
        problem = f"the count name {args.name[:60]!r} {refusal}"
    if problem is not None:
        complain(f"{problem}; nothing counted")
        return EXIT_USAGE if _strict() else EXIT_OK
    if cleaned:
        if _strict():
            complain(f"the count name {args.name[:60]!r}: {'; '.join(cleaned)}; nothing counted")
            return EXIT_USAGE
        complain(f"the count name {args.name[:60]!r}: {'; '.join(cleaned)}; counted as {name!r}")
    return _deliver(Count(name=name, n=int(text)))
