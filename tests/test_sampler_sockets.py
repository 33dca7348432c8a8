"""The sampler's socket table against real sockets: what it reports through its memory (exact
requests for the connections it knows, a dump only for what it has not seen) equals what a
fresh dump of the kernel's tables reports, sample after sample, while connections open and
close; and a tree whose sockets do not change costs no dump after the first."""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import struct
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.test_sampler import Child, child, http_server  # noqa: F401  (fixtures)
from tests.tracker_support import proxy_for
from tracker._sampling import DATABASE_PORTS, DatabaseEndpoints, ResourceSampler
from tracker._sampling._netlink import tcp_sockets, tcp_sockets_again
from tracker._sampling._socket_table import RECHECK_AFTER, SocketTable
from tracker._sampling._sockets import TreeSockets, tree_sockets

NOCOOKIE = b"\xff" * 8
TCP_CLOSE_WAIT = 8


def inode_of(sock: socket.socket | int) -> int:
    return os.fstat(sock if isinstance(sock, int) else sock.fileno()).st_ino


class Sockets:
    """Real sockets of this process that a test opens and closes, as a tree would hold them;
    the bytes each TCP one has sent and received (what its tcp_info must say once settled)."""

    def __init__(self) -> None:
        self.held: dict[int, socket.socket] = {}
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.peers: dict[int, int] = {}  # the other end of each connection held whole
        self.handshake: dict[int, int] = {}
        self.listeners: list[socket.socket] = []

    def hold(self, sock: socket.socket) -> int:
        inode = inode_of(sock)
        self.held[inode] = sock
        return inode

    def listener(self, family: int, host: str, *, dual_stack: bool = False) -> socket.socket:
        server = socket.socket(family)
        if dual_stack:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind((host, 0))
        server.listen(64)
        self.listeners.append(server)
        return server

    def connect(
        self, server: socket.socket, host: str, family: int = socket.AF_INET
    ) -> tuple[int, int]:
        """A connection to ``server`` at ``host``: (client inode, accepted inode)."""
        client = socket.socket(family)
        if family == socket.AF_INET6:
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        client.connect((host, server.getsockname()[1]))
        accepted, _ = server.accept()
        ends = self.hold(client), self.hold(accepted)
        self.peers.update({ends[0]: ends[1], ends[1]: ends[0]})
        for tcp in tcp_sockets(frozenset(ends), byte_counts=True):
            # The handshake left its own count: the client's SYN is one acknowledged byte.
            self.sent[tcp.inode] = self.received[tcp.inode] = 0
            self.handshake[tcp.inode] = tcp.bytes_acked or 0
        assert set(ends) <= self.handshake.keys()
        return ends

    def carried(self, inode: int) -> tuple[int, int]:
        """(received, sent and acknowledged) as tcp_info counts them, once settled."""
        return self.received[inode], self.handshake[inode] + self.sent[inode]

    def transfer(self, sender: int, receiver: int, size: int) -> None:
        """``size`` bytes from one end of a connection to the other, all read."""
        self.held[sender].sendall(os.urandom(size))
        got = 0
        while got < size:
            chunk = self.held[receiver].recv(size - got)
            assert chunk, "the connection closed under the test"
            got += len(chunk)
        self.sent[sender] += size
        self.received[receiver] += size

    def close(self, inode: int) -> None:
        self.held.pop(inode).close()
        self.sent.pop(inode, None)
        self.received.pop(inode, None)
        self.peers.pop(inode, None)
        self.handshake.pop(inode, None)

    def close_all(self) -> None:
        for sock in [*self.held.values(), *self.listeners]:
            sock.close()
        self.held.clear()

    def inodes(self) -> frozenset[int]:
        return frozenset(self.held)

    def settled(self, deadline: float = 30.0) -> None:
        """Waits until the kernel has nothing left in flight for the held connections: what
        each sent is acknowledged (an ACK may be delayed) and each whose other end closed has
        had its FIN, so that two reads of the kernel agree."""
        end = time.monotonic() + deadline
        while True:
            now = {t.inode: t for t in tcp_sockets(self.inodes(), byte_counts=True)}
            pending = [
                inode
                for inode, sent in self.sent.items()
                if inode in now
                and (
                    now[inode].bytes_acked != self.carried(inode)[1]
                    or (inode not in self.peers and now[inode].state != TCP_CLOSE_WAIT)
                )
            ]
            if not pending:
                return
            assert time.monotonic() < end, f"tcp_info never settled for {pending}"
            time.sleep(0.01)


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    made = Sockets()
    try:
        yield made
    finally:
        made.close_all()


def same_as_a_fresh_dump(
    table: SocketTable, inodes: frozenset[int], endpoints: DatabaseEndpoints
) -> TreeSockets:
    """What the table reports for ``inodes``, checked against a fresh dump (no memory)."""
    remembered = tree_sockets(inodes, endpoints, table)
    fresh = tree_sockets(inodes, endpoints)
    assert remembered == fresh
    assert len(table) <= len(inodes)  # it remembers nothing the tree does not hold
    return remembered


def test_a_tree_whose_sockets_do_not_change_is_dumped_once(sockets):
    server = sockets.listener(socket.AF_INET, "127.0.0.1")
    client, accepted = sockets.connect(server, "127.0.0.1")
    sockets.hold(socket.socket())  # unconnected, as the benchmark's children hold one
    pair = socket.socketpair()
    for end in pair:
        sockets.hold(end)
    table = SocketTable()
    first = same_as_a_fresh_dump(table, sockets.inodes(), DatabaseEndpoints())
    assert (first.database, first.other) == (0, 2)
    assert table.dumps == 1
    for size in (1, 1000, 100_000):
        sockets.transfer(client, accepted, size)
        sockets.transfer(accepted, client, size // 2)
        sockets.settled()
        again = same_as_a_fresh_dump(table, sockets.inodes(), DatabaseEndpoints())
        assert table.dumps == 1  # every later read was exact requests and memory
        carried = {key[0]: value for key, value in again.tcp_bytes.items()}
        assert carried[accepted] == sockets.carried(accepted)
        assert carried[client] == sockets.carried(client)
        assert carried[accepted][0] >= size  # the bytes moved are in the counts


def test_opened_and_closed_sockets_read_as_a_fresh_dump_says_sample_after_sample(sockets):
    """A seeded random walk: connections over IPv4, IPv6 and IPv4-mapped IPv6, to a port
    configured as the database's, Unix pairs and unconnected sockets open, carry bytes and
    close between samples; every sample equals a fresh dump's."""
    v4 = sockets.listener(socket.AF_INET, "127.0.0.1")
    v6 = sockets.listener(socket.AF_INET6, "::1")
    dual = sockets.listener(socket.AF_INET6, "::", dual_stack=True)
    database = sockets.listener(socket.AF_INET, "127.0.0.1")
    endpoints = DatabaseEndpoints(tcp=frozenset({("127.0.0.1", database.getsockname()[1])}))
    ways = [
        lambda: sockets.connect(v4, "127.0.0.1"),
        lambda: sockets.connect(v6, "::1", socket.AF_INET6),
        lambda: sockets.connect(dual, "::ffff:127.0.0.1", socket.AF_INET6),
        lambda: sockets.connect(dual, "127.0.0.1"),
        lambda: sockets.connect(database, "::ffff:127.0.0.1", socket.AF_INET6),
        lambda: sockets.connect(database, "127.0.0.1"),
        lambda: tuple(sockets.hold(end) for end in socket.socketpair()),
        lambda: (sockets.hold(socket.socket()),),
    ]
    chance = random.Random(17)  # noqa: S311  (a reproducible walk, not a secret)
    table = SocketTable(clock=lambda: 0.0)  # no rechecks: every dump is for a new inode
    connections: list[tuple[int, ...]] = []
    counted = set()
    new_inodes = 0
    for _ in range(40):
        opened = chance.randint(0, 3)
        new_inodes += opened > 0
        for _ in range(opened):
            made = chance.choice(ways)()
            connections.append(made)
        for _ in range(chance.randint(0, 2) if connections else 0):
            for inode in connections.pop(chance.randrange(len(connections))):
                if chance.random() < 0.8 or len(connections) == 0:  # sometimes one end stays
                    sockets.close(inode)
        for made in connections:
            if len(made) == 2 and made[0] in sockets.sent and made[1] in sockets.sent:
                sockets.transfer(made[0], made[1], chance.randint(0, 50_000))
        sockets.settled()
        seen = same_as_a_fresh_dump(table, sockets.inodes(), endpoints)
        counted.add((seen.database > 0, seen.other > 0))
    assert (True, True) in counted, "the walk never held database and other connections"
    assert table.dumps == new_inodes  # samples without a new inode: exact requests only
    assert 0 < new_inodes < 40


def test_a_reused_connection_identity_is_a_new_socket_not_the_remembered_one(sockets):
    """The same ports and addresses on a new socket (its predecessor reset, so no TIME_WAIT
    holds them): the exact request finds the remembered socket only by its cookie."""
    server = sockets.listener(socket.AF_INET, "127.0.0.1")
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    first.connect(server.getsockname())
    old_inode = sockets.hold(first)
    sockets.hold(server.accept()[0])
    table = SocketTable()
    same_as_a_fresh_dump(table, frozenset({old_inode}), DatabaseEndpoints())
    (remembered,) = tcp_sockets(frozenset({old_inode}))
    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sockets.close(old_inode)  # a reset: the identity is free at once
    second = socket.socket()
    second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    second.bind(("127.0.0.1", port))
    second.connect(server.getsockname())
    new_inode = sockets.hold(second)
    sockets.hold(server.accept()[0])
    # Without the cookie the identity now names the new socket; with it, nothing.
    (by_identity,) = tcp_sockets_again(
        [dataclasses.replace(remembered, sockid=remembered.sockid[:40] + NOCOOKIE)]
    )
    assert by_identity is not None
    assert by_identity.inode == new_inode
    assert tcp_sockets_again([remembered]) == [None]
    # The tree still "holding" the old inode number (as it would if the new socket had been
    # given it): the table does not take the new socket for the old one; a dump decides.
    dumps = table.dumps
    seen = same_as_a_fresh_dump(table, frozenset({old_inode}), DatabaseEndpoints())
    assert (seen.database, seen.other, seen.tcp_bytes) == (0, 0, {})
    assert table.dumps == dumps + 1
    both = same_as_a_fresh_dump(table, frozenset({old_inode, new_inode}), DatabaseEndpoints())
    assert both.other == 1


def test_a_closed_connection_answering_from_its_orphan_is_not_taken_for_its_inode(sockets):
    """A connection closed first on this side lingers in the kernel (FIN_WAIT, then TIME_WAIT)
    with its identity and cookie but no inode: if its inode number is held again (reused by a
    new socket), that answer is not the held socket's."""
    server = sockets.listener(socket.AF_INET, "127.0.0.1")
    client, _ = sockets.connect(server, "127.0.0.1")
    table = SocketTable()
    assert same_as_a_fresh_dump(table, frozenset({client}), DatabaseEndpoints()).other == 1
    (remembered,) = tcp_sockets(frozenset({client}))
    sockets.close(client)
    (lingering,) = tcp_sockets_again([remembered])
    assert lingering is not None
    assert (lingering.inode, lingering.remote_port) == (0, remembered.remote_port)
    dumps = table.dumps
    seen = same_as_a_fresh_dump(table, frozenset({client}), DatabaseEndpoints())
    assert (seen.other, seen.tcp_bytes) == (0, {})
    assert table.dumps == dumps + 1


def test_a_connection_reset_while_held_is_dropped_after_one_dump(sockets):
    server = sockets.listener(socket.AF_INET, "127.0.0.1")
    client, accepted = sockets.connect(server, "127.0.0.1")
    table = SocketTable()
    assert same_as_a_fresh_dump(table, frozenset({client}), DatabaseEndpoints()).other == 1
    sockets.held[accepted].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sockets.close(accepted)  # the client's socket is reset and left out of the kernel's hash
    deadline = time.monotonic() + 30
    while tcp_sockets(frozenset({client})):
        assert time.monotonic() < deadline, "the reset never reached the client's socket"
        time.sleep(0.01)
    assert same_as_a_fresh_dump(table, frozenset({client}), DatabaseEndpoints()).other == 0
    assert table.dumps == 2
    assert same_as_a_fresh_dump(table, frozenset({client}), DatabaseEndpoints()).other == 0
    assert table.dumps == 2  # remembered as no connection


def test_a_socket_connected_after_it_was_seen_is_found_by_the_next_recheck(sockets):
    server = sockets.listener(socket.AF_INET, "127.0.0.1")
    late = socket.socket()
    inode = sockets.hold(late)
    now = [0.0]
    table = SocketTable(clock=lambda: now[0])
    assert same_as_a_fresh_dump(table, frozenset({inode}), DatabaseEndpoints()).other == 0
    late.connect(server.getsockname())
    sockets.hold(server.accept()[0])
    now[0] = RECHECK_AFTER - 1
    # The documented lag: the inode is remembered as no connection until the recheck.
    assert tree_sockets(frozenset({inode}), DatabaseEndpoints(), table).other == 0
    assert tree_sockets(frozenset({inode}), DatabaseEndpoints()).other == 1
    assert table.dumps == 1
    now[0] = RECHECK_AFTER
    assert same_as_a_fresh_dump(table, frozenset({inode}), DatabaseEndpoints()).other == 1
    assert table.dumps == 2
    now[0] = 10 * RECHECK_AFTER  # nothing is remembered as no connection: no more rechecks
    assert same_as_a_fresh_dump(table, frozenset({inode}), DatabaseEndpoints()).other == 1
    assert table.dumps == 2


def test_the_table_forgets_what_the_tree_no_longer_holds(sockets):
    server = sockets.listener(socket.AF_INET, "127.0.0.1")
    table = SocketTable()
    for _ in range(5):
        made = [i for _ in range(20) for i in sockets.connect(server, "127.0.0.1")]
        made += [sockets.hold(end) for end in socket.socketpair()]
        made.append(sockets.hold(socket.socket()))
        same_as_a_fresh_dump(table, sockets.inodes(), DatabaseEndpoints())
        assert len(table) == len(sockets.inodes())
        for inode in made:
            sockets.close(inode)
    assert same_as_a_fresh_dump(table, sockets.inodes(), DatabaseEndpoints()).other == 0
    assert len(table) == 0


def test_database_connections_over_unix_and_tcp_are_remembered_and_counted(db_dsn, tmp_path):
    with (
        proxy_for(db_dsn) as proxy,
        psycopg.connect(db_dsn) as over_unix,
        psycopg.connect(proxy.dsn) as over_tcp,
        psycopg.connect(db_dsn) as closing,
    ):
        endpoints = DatabaseEndpoints.from_conninfo(proxy.dsn)
        held = frozenset(inode_of(c.pgconn.socket) for c in (over_unix, over_tcp, closing))
        table = SocketTable()
        seen = same_as_a_fresh_dump(table, held, endpoints)
        assert (seen.database, seen.other) == (3, 0)
        over_tcp.execute("SELECT repeat('x', 100000)").fetchone()
        same_as_a_fresh_dump(table, held, endpoints)
        unconfigured = same_as_a_fresh_dump(table, held, DatabaseEndpoints())
        assert unconfigured.other == (0 if proxy.port in DATABASE_PORTS else 1)
        assert table.dumps == 1
        gone = inode_of(closing.pgconn.socket)
        closing.close()
        after = same_as_a_fresh_dump(table, held - {gone}, endpoints)
        assert (after.database, after.other) == (2, 0)
        assert table.dumps == 1


def test_a_sampler_of_an_unchanged_tree_dumps_once_and_counts_what_it_holds(
    child,  # noqa: F811
    http_server,  # noqa: F811
    db_dsn,
):
    child.do(f"connect 2 {db_dsn}")
    child.do(f"fetch {http_server}")
    table = SocketTable()
    sampler = ResourceSampler(child.pid, socket_table=table)
    samples = [sampler.sample() for _ in range(5)]
    assert table.dumps == 1  # the baseline's; the five samples were exact requests
    for sample in samples:
        assert sample is not None
        assert (sample.db_connections, sample.other_connections) == (2, 1), sample
    child.do("release")
    after = sampler.sample()
    assert after is not None
    assert (after.db_connections, after.other_connections) == (0, 0)
    assert after.tcp_received_bytes == samples[-1].tcp_received_bytes  # closed: nothing lost
    assert table.dumps == 1  # closing sockets needs no dump
    assert len(table) == 0  # the child holds no socket any more
