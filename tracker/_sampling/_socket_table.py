"""What a sampler has learned about its tree's sockets, kept between samples (Linux).

A dump of the kernel's TCP table costs about 3 ms on a machine with a large established hash,
however few sockets the tree holds (see ``_netlink``), so a ``SocketTable`` dumps only when it
must, and keeps what the dump said about each socket inode the tree holds:

1. a TCP connection: read again each sample by an exact request with its identity and cookie
   (its byte counts change); the kernel answers from its hash, about 10 µs a socket;
2. a connected Unix socket: its peer's bound name, which cannot change while it is held (a
   stream socket connects once; a datagram one can re-connect, but only to other datagram
   sockets, and database servers listen on stream ones);
3. neither (a listening, unconnected, UDP or netlink socket, or one that was reset).

A dump (TCP over IPv4 and IPv6, then the Unix table when some inode is still unexplained)
happens when the tree holds an inode the table has not seen, when an exact request does not
find its socket again (closed and its inode reused, or reset while held: a dump tells which),
and, while the tree holds inodes of the third kind, at most every ``recheck_after`` seconds:
a socket created and connected later keeps its inode, so only a dump can see that it became a
connection. 30 s by default: samples are taken every 1 to 10 s, so the dump's cost is spread
over 3 to 30 samples, and clients connect right after socket() (psycopg, http.client,
requests), so a sample rarely falls in between; when one does, the connection is counted up to
30 s late and its bytes are not lost (a socket first seen counts whole).

Inodes the tree no longer holds are forgotten at each read, so the table holds at most what
the tree holds. Each ResourceSampler has its own table: nothing is shared between samplers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from tracker._sampling._netlink import (
    TCP_LISTEN,
    TcpSocket,
    tcp_sockets,
    tcp_sockets_again,
    unix_sockets,
)

__all__ = ["RECHECK_AFTER", "Connections", "SocketTable"]

RECHECK_AFTER = 30.0  # seconds; see the module docstring


@dataclass(frozen=True)
class Connections:
    """The connections among a tree's sockets, now."""

    tcp: tuple[TcpSocket, ...]  # TCP sockets that are not listening, with their byte counts
    unix_peers: tuple[str | None, ...]  # each connected Unix socket's peer's bound name


class SocketTable:
    """The kernel's view of a tree's sockets, read through the cheapest request that is exact
    (see the module docstring). ``dumps`` counts the dumps made: how often the expensive path
    ran."""

    def __init__(
        self,
        *,
        recheck_after: float = RECHECK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recheck_after = recheck_after
        self._clock = clock
        self._tcp: dict[int, TcpSocket] = {}
        self._unix: dict[int, str | None] = {}  # inode -> its peer's bound name
        self._neither: set[int] = set()
        self._dumped_at = -float("inf")
        self.dumps = 0

    def __len__(self) -> int:
        """How many inodes the table remembers."""
        return len(self._tcp) + len(self._unix) + len(self._neither)

    def read(self, inodes: Collection[int]) -> Connections:
        """The connections among the socket inodes ``inodes`` (those the tree holds now)."""
        held = frozenset(inodes)
        self._forget(held)
        unknown = held - self._tcp.keys() - self._unix.keys() - self._neither
        stale = bool(self._neither) and self._clock() - self._dumped_at >= self._recheck_after
        if unknown or stale or not self._read_again():
            self._dump(held)
        return Connections(tuple(self._tcp.values()), tuple(self._unix.values()))

    def _forget(self, held: frozenset[int]) -> None:
        for inode in self._tcp.keys() - held:
            del self._tcp[inode]
        for inode in self._unix.keys() - held:
            del self._unix[inode]
        self._neither &= held

    def _read_again(self) -> bool:
        """Refreshes each known TCP connection by exact request; False when one is not found
        as the same open socket (a dump must tell what its inode is now)."""
        if not self._tcp:
            return True
        known = list(self._tcp.values())
        try:
            now = tcp_sockets_again(known, byte_counts=True)
        except OSError:  # an answer lost or refused: the dump still says everything
            return False
        for before, after in zip(known, now, strict=True):
            # A closed connection's identity may answer with its TIME_WAIT or orphan (inode 0);
            # one re-bound as a listener with the same cookie is no connection any more.
            if after is None or after.inode != before.inode or after.state == TCP_LISTEN:
                return False
            self._tcp[after.inode] = after
        return True

    def _dump(self, held: frozenset[int]) -> None:
        self.dumps += 1
        self._dumped_at = self._clock()
        self._tcp = {tcp.inode: tcp for tcp in tcp_sockets(held, byte_counts=True)}
        rest = held - self._tcp.keys()
        self._unix = {}
        if rest:
            unix = unix_sockets()
            names = {u.inode: u.name for u in unix if u.name}
            self._unix = {
                u.inode: names.get(u.peer) for u in unix if u.inode in rest and u.peer is not None
            }
        self._neither = set(rest - self._unix.keys())
