"""The stdout line protocol: how any program, in any language, reports progress to pipetrack.

A program run under ``pipetrack run`` prints lines such as ``::pipetrack::enter items=56::Writing
states`` to its standard output; the wrapper consumes them and updates the run. This module is the
grammar: it parses one line into a typed command (or refuses it) and formats commands back into
lines. It does no I/O. The grammar, also in docs/protocol.md::

    line     = "::pipetrack::" command [ " " props ] [ "::" text ] [ "\\r" ] "\\n"
    command  = "init" | "total" | "enter" | "exit" | "progress" | "percent"
             | "message" | "count" | "error" | "finish"
    props    = prop *( "," prop )
    prop     = key "=" value            ; key = 1*( "a"-"z" / "_" ), value may be empty
    text     = everything after the first "::" that follows the command and its props

Escapes, as in GitHub Actions' workflow commands: in ``text``, ``%25`` ``%0D`` ``%0A`` stand for
``%``, CR and LF; a ``value`` also needs ``%3A`` for ``:`` and ``%2C`` for ``,``. Any other ``%``
is literal. Bytes that are not UTF-8 become U+FFFD. Keys this version does not know are ignored,
so newer programs keep working with older wrappers.

Commands (``N`` an integer >= 0, ``P`` a finite number; percentages are clamped to 0-100 later):

=========================================================  =====================================
``init [task=NAME][,subtasks=N][,stage=S][::NAME]``        track_init: configure the run
``total subtasks=N``                                       set the number of subtasks
``enter [items=N]::NAME``                                  enter a (nested) subtask
``exit [status=COMPLETED|FAILED][::MESSAGE]``              leave the innermost subtask
``progress done=N[,total=N][::MESSAGE]``                   items done in the current subtask
``percent value=P[,scope=overall|subtask][::MESSAGE]``     set a percentage by hand
``message [scope=subtask|overall]::TEXT``                  a progress message
``count [n=N]::NAME``                                      add N (default 1) to a work count
``error [detail=TEXT]::MESSAGE``                           the run failed, with this error
``finish[::MESSAGE]``                                      the run succeeded, with this message
=========================================================  =====================================

A line that starts with the marker but does not parse is not a command: the wrapper passes it
through unchanged and warns. Lines longer than ``MAX_LINE_BYTES`` are never commands.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Literal, NamedTuple, TypeAlias

__all__ = [
    "MARKER",
    "MAX_LINE_BYTES",
    "Command",
    "Count",
    "Enter",
    "Error",
    "Exit",
    "Finish",
    "Init",
    "Message",
    "Percent",
    "Progress",
    "ProtocolError",
    "Total",
    "escape_text",
    "escape_value",
    "format_line",
    "parse_line",
]

MARKER = b"::pipetrack::"
"""Every protocol line starts with these bytes, at the very start of the line."""

COUNT_MAX = 2**63 - 1
"""The largest ``n`` a count line may add (what the record stores)."""
_DIGITS_MAX = len(str(COUNT_MAX)) + 1

MAX_LINE_BYTES = 64 * 1024
"""A longer line is ordinary output: it bounds what the wrapper holds back while it waits for
the end of a line that starts with the marker."""

Scope = Literal["overall", "subtask"]
SubtaskOutcome = Literal["COMPLETED", "FAILED"]


# The commands are NamedTuples, not dataclasses: building nine dataclasses costs the
# side-channel commands (`pipetrack progress` in a shell loop) about 10 ms at every start.


class ProtocolError(ValueError):
    """A line that starts with the protocol marker but is not a valid command."""


class Init(NamedTuple):
    """track_init inside ``pipetrack run``: configures the wrapper's run."""

    task: str | None = None
    subtasks: int | None = None
    stage: str | None = None


class Total(NamedTuple):
    subtasks: int


class Enter(NamedTuple):
    name: str
    items: int | None = None


class Exit(NamedTuple):
    status: SubtaskOutcome = "COMPLETED"
    message: str | None = None


class Progress(NamedTuple):
    done: int
    total: int | None = None
    message: str | None = None


class Percent(NamedTuple):
    value: float
    scope: Scope = "overall"
    message: str | None = None


class Message(NamedTuple):
    text: str
    scope: Scope = "subtask"


class Count(NamedTuple):
    """Add ``n`` to the work count ``name`` of the innermost subtask (and so of the run)."""

    name: str
    n: int = 1


class Error(NamedTuple):
    message: str
    detail: str | None = None


class Finish(NamedTuple):
    message: str | None = None


Command: TypeAlias = (
    Init | Total | Enter | Exit | Progress | Percent | Message | Count | Error | Finish
)

_KEY = re.compile(rb"[a-z_]+\Z")
_PLAIN_PROGRESS = re.compile(
    rb"::pipetrack::progress done=(\d{1,18})(?:,total=(\d{1,18}))?\r?\n?\Z"
)
_COMMAND = re.compile(rb"([a-z]+)(?: ([^:]*))?\Z")
_UNESCAPE = re.compile(rb"%(25|0[dD]|0[aA]|3[aA]|2[cC])")
_UNESCAPED = {b"25": b"%", b"0d": b"\r", b"0a": b"\n", b"3a": b":", b"2c": b","}


def _unescape(raw: bytes) -> str:
    decoded = _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(1).lower()], raw)
    return decoded.decode("utf-8", errors="replace")


def escape_text(text: str) -> str:
    """``text`` made safe to follow ``::`` on a protocol line."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_value(value: str) -> str:
    """``value`` made safe as a property value."""
    return escape_text(value).replace(":", "%3A").replace(",", "%2C")


def _count(props: dict[str, str], key: str, *, required: bool = False) -> int | None:
    raw = props.get(key)
    if raw is None or (raw == "" and not required):
        if required:
            raise ProtocolError(f"{key}= is required")
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        raise ProtocolError(f"{key}= must be a whole number >= 0, not {raw!r}")
    if len(text.lstrip("0")) > _DIGITS_MAX:
        # Past any count the record keeps (and, beyond 4,300 digits, past what int() reads).
        raise ProtocolError(f"{key}= has {len(text)} digits: too large")
    return int(text)


def _required_count(props: dict[str, str], key: str) -> int:
    value = _count(props, key, required=True)
    if value is None:  # _count raises first; this keeps the type exact
        raise ProtocolError(f"{key}= is required")
    return value


def _number(props: dict[str, str], key: str) -> float:
    raw = props.get(key)
    if raw is None:
        raise ProtocolError(f"{key}= is required")
    try:
        value = float(raw.strip())
    except ValueError:
        raise ProtocolError(f"{key}= must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise ProtocolError(f"{key}= must be finite, not {raw!r}")
    return value


def _scope(props: dict[str, str], default: Scope) -> Scope:
    raw = props.get("scope", default).strip().lower()
    if raw == "overall":
        return "overall"
    if raw == "subtask":
        return "subtask"
    raise ProtocolError(f"scope= must be overall or subtask, not {raw!r}")


def _optional(text: str | None) -> str | None:
    return text if text else None


def parse_line(line: bytes) -> Command:
    """The command on ``line`` (with or without its line ending).

    Raises ProtocolError if the line does not start with MARKER or is not a valid command.
    """
    fast = _PLAIN_PROGRESS.match(line)
    if fast is not None:  # the line a loop prints: worth skipping the general parser for
        total = fast.group(2)
        return Progress(done=int(fast.group(1)), total=None if total is None else int(total))
    if not line.startswith(MARKER):
        raise ProtocolError("not a protocol line")
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"longer than {MAX_LINE_BYTES} bytes")
    body = line[len(MARKER) :]
    if body.endswith(b"\n"):
        body = body[:-1]
    if body.endswith(b"\r"):
        body = body[:-1]
    head, sep, raw_text = body.partition(b"::")
    text = _unescape(raw_text) if sep else None
    match = _COMMAND.match(head)
    if match is None:
        raise ProtocolError(f"no command in {head[:40]!r}")
    name = match.group(1).decode("ascii")
    props: dict[str, str] = {}
    if match.group(2):
        for item in match.group(2).split(b","):
            # Spaces around a key are forgiven ("done=3, total=8"); a value is kept as written.
            key, eq, value = item.partition(b"=")
            key = key.strip()
            if not eq or not _KEY.match(key):
                raise ProtocolError(f"bad property {item[:40]!r}")
            props[key.decode("ascii")] = _unescape(value)
    return _build(name, props, text)


def _init(props: dict[str, str], text: str | None) -> Command:
    task = _optional(props.get("task")) or _optional(text)
    stage = _optional(props.get("stage", "").strip())
    return Init(task=task, subtasks=_count(props, "subtasks"), stage=stage)


def _total(props: dict[str, str], text: str | None) -> Command:
    return Total(subtasks=_required_count(props, "subtasks"))


def _enter(props: dict[str, str], text: str | None) -> Command:
    if not text:
        raise ProtocolError("enter needs a subtask name after ::")
    return Enter(name=text, items=_count(props, "items"))


def _exit(props: dict[str, str], text: str | None) -> Command:
    status = props.get("status", "COMPLETED").strip().upper()
    if status == "COMPLETED":
        return Exit(status="COMPLETED", message=_optional(text))
    if status == "FAILED":
        return Exit(status="FAILED", message=_optional(text))
    raise ProtocolError(f"status= must be COMPLETED or FAILED, not {status!r}")


def _progress(props: dict[str, str], text: str | None) -> Command:
    done = _required_count(props, "done")
    return Progress(done=done, total=_count(props, "total"), message=_optional(text))


def _percent(props: dict[str, str], text: str | None) -> Command:
    value = _number(props, "value")
    return Percent(value=value, scope=_scope(props, "overall"), message=_optional(text))


def _message(props: dict[str, str], text: str | None) -> Command:
    if text is None:
        raise ProtocolError("message needs its text after ::")
    return Message(text=text, scope=_scope(props, "subtask"))


def _count_line(props: dict[str, str], text: str | None) -> Command:
    if not text:
        raise ProtocolError("count needs a name after ::")
    n = _count(props, "n")
    if n is not None and n > COUNT_MAX:
        raise ProtocolError(f"n= must be at most {COUNT_MAX}, not {n:.3g}")
    return Count(name=text, n=1 if n is None else n)


def _error(props: dict[str, str], text: str | None) -> Command:
    if not text:
        raise ProtocolError("error needs a message after ::")
    return Error(message=text, detail=_optional(props.get("detail")))


def _finish(props: dict[str, str], text: str | None) -> Command:
    return Finish(message=_optional(text))


_BUILDERS: dict[str, Callable[[dict[str, str], str | None], Command]] = {
    "init": _init,
    "total": _total,
    "enter": _enter,
    "exit": _exit,
    "progress": _progress,
    "percent": _percent,
    "message": _message,
    "count": _count_line,
    "error": _error,
    "finish": _finish,
}


def _build(name: str, props: dict[str, str], text: str | None) -> Command:
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ProtocolError(f"unknown command {name!r}")
    return builder(props, text)


def _props(pairs: list[tuple[str, object]]) -> str:
    shown = [f"{key}={escape_value(str(value))}" for key, value in pairs if value is not None]
    return " " + ",".join(shown) if shown else ""


def _tail(text: str | None) -> str:
    return "" if text is None else "::" + escape_text(text)


def format_line(command: Command) -> bytes:  # noqa: PLR0911
    """The protocol line (ending in a newline) that ``parse_line`` reads back as ``command``."""
    if isinstance(command, Init):
        head = "init" + _props(
            [("task", command.task), ("subtasks", command.subtasks), ("stage", command.stage)]
        )
        return _encode(head)
    if isinstance(command, Total):
        return _encode("total" + _props([("subtasks", command.subtasks)]))
    if isinstance(command, Enter):
        return _encode("enter" + _props([("items", command.items)]) + _tail(command.name))
    if isinstance(command, Exit):
        return _encode("exit" + _props([("status", command.status)]) + _tail(command.message))
    if isinstance(command, Progress):
        pairs: list[tuple[str, object]] = [("done", command.done), ("total", command.total)]
        return _encode("progress" + _props(pairs) + _tail(command.message))
    if isinstance(command, Percent):
        pairs = [("value", repr(command.value)), ("scope", command.scope)]
        return _encode("percent" + _props(pairs) + _tail(command.message))
    if isinstance(command, Message):
        return _encode("message" + _props([("scope", command.scope)]) + _tail(command.text))
    if isinstance(command, Count):
        return _encode("count" + _props([("n", command.n)]) + _tail(command.name))
    if isinstance(command, Error):
        return _encode("error" + _props([("detail", command.detail)]) + _tail(command.message))
    return _encode("finish" + _tail(command.message))


def _encode(body: str) -> bytes:
    # A lone surrogate (possible in a Python str) cannot be encoded; it is sent as "?" rather
    # than failing the caller.
    return MARKER + body.encode("utf-8", errors="replace") + b"\n"
