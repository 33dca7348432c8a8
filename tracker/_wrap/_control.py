"""The side channel of a wrapped run: ``pipetrack enter|exit|progress|message`` reach the wrapper.

A tool that cannot print to the wrapped command's stdout (its output is redirected, or it is a
grandchild writing elsewhere) runs ``pipetrack progress …``; that process sends the same protocol
line as one datagram to a Unix socket the wrapper owns, named by ``PIPETRACK_CONTROL``. One
process keeps writing the run, so there is no second writer racing the first over the row.
The socket lives in a private (0700) temporary folder: only the same user can reach it.
"""

from __future__ import annotations

import os
import socket

__all__ = ["MAX_DATAGRAM", "ControlServer", "send"]

MAX_DATAGRAM = 64 * 1024 + 64
"""Large enough for a protocol line of MAX_LINE_BYTES; a longer datagram is cut and refused."""


class ControlServer:
    """The wrapper's end: a non-blocking datagram socket to poll alongside the child's pipes."""

    def __init__(self) -> None:
        import tempfile  # the wrapper's side only: `pipetrack progress` starts without it

        self._folder = tempfile.mkdtemp(prefix="pipetrack-")
        self.path = os.path.join(self._folder, "control.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(self.path)
        except OSError:
            self.sock.close()
            self._remove_folder()
            raise
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[bytes]:
        """Every datagram waiting now (possibly none)."""
        received: list[bytes] = []
        while True:
            try:
                received.append(self.sock.recv(MAX_DATAGRAM))
            except (BlockingIOError, InterruptedError):
                return received

    def close(self) -> None:
        self.sock.close()
        self._remove_folder()

    def _remove_folder(self) -> None:
        import shutil

        shutil.rmtree(self._folder, ignore_errors=True)


def send(path: str, line: bytes, *, timeout: float = 5.0) -> None:
    """Send one protocol line to the wrapper listening at ``path``; raises OSError if it is gone."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # A full queue blocks the sender (the wrapper is busy); bound the wait.
        sock.settimeout(timeout)
        sock.sendto(line, os.fsencode(path))
