"""Text from a script or the database made safe to print on a terminal.

Any tracked script controls task names, messages and error text, and a terminal obeys what it
prints: ESC and C1 sequences clear the screen, recolour it or (OSC 52) write the operator's
clipboard, and bidi overrides reorder what the eye reads. ``printable`` replaces every such
character with a visible stand-in, so a reader sees that it was there and nothing runs.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 controls, DEL, C1 controls; the bidi embeddings, overrides, isolates and marks; the line and
# paragraph separators (a terminal may break the line on them).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _stand_in(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ESC -> ␛, BEL -> ␇
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control and bidi characters replaced by visible stand-ins.

    With ``keep_newlines``, ``\\n`` stays (a traceback keeps its lines); everything else goes.
    """
    if text.isascii() and text.isprintable():
        return text
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_stand_in, line) for line in text.split("\n"))
    return _UNSAFE.sub(_stand_in, text)
