"""Consecutive progress lines are coalesced before they reach the run; nothing else is."""

from __future__ import annotations

from tracker._wrap._driver import _coalesced
from tracker._wrap.protocol import Enter, Exit, Progress


def test_consecutive_progress_keeps_the_last_state_and_the_last_message():
    commands = [
        Enter("a", 10),
        Progress(1, 10, "first"),
        Progress(2),
        Progress(3, None, "third"),
        Progress(4),
        Exit(),
        Progress(5, 6),
    ]
    assert _coalesced(commands) == [
        Enter("a", 10),
        Progress(4, 10, "third"),
        Exit(),
        Progress(5, 6),
    ]
