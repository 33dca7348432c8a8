"""Splits a child's stdout into what passes through and the protocol commands among it.

Works on raw bytes as they arrive, in chunks of any size: output that holds no protocol line
passes through unchanged (the same bytes, binary or not, with or without a final newline), and
the only bytes ever held back are the start of a line that is, or may become, a protocol line —
at most ``MAX_LINE_BYTES`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracker._wrap.protocol import MARKER, MAX_LINE_BYTES, Command, ProtocolError, parse_line

__all__ = ["LineScanner", "Scan"]

_NL_MARKER = b"\n" + MARKER


@dataclass
class Scan:
    """What one chunk of input produced, in the order it appeared."""

    output: bytes = b""
    commands: list[Command] = field(default_factory=list)
    #: lines that start with the marker but are not valid commands, with the reason
    rejected: list[tuple[bytes, str]] = field(default_factory=list)


class LineScanner:
    """Stateful filter: feed it chunks, write ``Scan.output`` on, act on ``Scan.commands``.

    With ``echo=True`` recognised lines are passed through as well as acted on.
    """

    def __init__(self, *, echo: bool = False) -> None:
        self._echo = echo
        self._held = b""
        # True when the next byte starts a line: only there can a protocol line begin.
        self._at_line_start = True

    def feed(self, chunk: bytes) -> Scan:
        data = self._held + chunk if self._held else chunk
        self._held = b""
        scan = Scan()
        parts: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._at_line_start:
                taken = self._take_line(data, pos, parts, scan)
                if taken < 0:  # an unfinished protocol line is held back
                    break
                if taken > pos:
                    pos = taken
                    continue
            pos = self._pass_text(data, pos, parts)
        scan.output = parts[0] if len(parts) == 1 else b"".join(parts)
        return scan

    def close(self) -> Scan:
        """End of stream: a held line is a command if it parses (a last line may lack its
        newline), ordinary output otherwise."""
        held, self._held = self._held, b""
        self._at_line_start = True
        scan = Scan()
        if held.startswith(MARKER):
            self._handle(held, [], scan)
            if scan.rejected or self._echo:
                scan.output = held
        else:
            scan.output = held
        return scan

    def _take_line(self, data: bytes, pos: int, parts: list[bytes], scan: Scan) -> int:
        """At a line start: consume a protocol line and return where the next line starts, -1 if
        the line is unfinished and held back, or ``pos`` if the line is ordinary output."""
        rest = len(data) - pos
        if rest < len(MARKER):
            if MARKER.startswith(data[pos:]):
                self._held = data[pos:]
                return -1
            return pos
        if not data.startswith(MARKER, pos):
            return pos
        newline = data.find(b"\n", pos)
        if newline < 0:
            if rest > MAX_LINE_BYTES:
                # Too long to be a command: ordinary output, up to its end of line.
                parts.append(data[pos:])
                self._at_line_start = False
                return len(data)
            self._held = data[pos:]
            return -1
        line = data[pos : newline + 1]
        self._handle(line, parts, scan)
        return newline + 1

    def _handle(self, line: bytes, parts: list[bytes], scan: Scan) -> None:
        try:
            command = parse_line(line)
        except ProtocolError as exc:
            scan.rejected.append((line, str(exc)))
            parts.append(line)
            return
        scan.commands.append(command)
        if self._echo:
            parts.append(line)

    def _pass_text(self, data: bytes, pos: int, parts: list[bytes]) -> int:
        """Pass ordinary output through up to the next line that starts with the marker (or
        may, once more bytes arrive); return where scanning resumes."""
        hit = data.find(_NL_MARKER, pos)
        if hit >= 0:
            parts.append(data[pos : hit + 1])
            self._at_line_start = True
            return hit + 1
        last_newline = data.rfind(b"\n", pos)
        tail_start = last_newline + 1
        if last_newline >= 0 and tail_start < len(data) and MARKER.startswith(data[tail_start:]):
            # The last line so far could be the start of the marker: hold it back.
            parts.append(data[pos:tail_start])
            self._held = data[tail_start:]
            self._at_line_start = True
            return len(data)
        parts.append(data[pos:])
        self._at_line_start = data.endswith(b"\n")
        return len(data)
