"""The kernel's socket table, read through NETLINK_SOCK_DIAG (what ``ss`` reads; Linux only).

Two dumps: every TCP socket that is not listening (its inode, peer address and, on request, the
byte counts of its ``tcp_info``), and every connected Unix stream socket with its bound name and
its peer's inode. A TCP dump walks every bucket of the kernel's established hash, which is sized
by the machine's memory, not by how many sockets there are (about 1.4 ms per address family on a
24 GiB machine with an empty table); so a TCP socket already found by a dump is read again with
an exact request (``tcp_sockets_again``): the socket's identity as the dump gave it (ports,
addresses, interface, cookie) and no ``NLM_F_DUMP``, which the kernel answers from its hash
(``inet_diag_find_one_icsk``). The cookie makes the answer that socket's or none.

The structures are the kernel's uapi ones (``linux/inet_diag.h``, ``linux/unix_diag.h``,
``linux/tcp.h``); they only ever grow at the end, so shorter answers from older kernels are read
as far as they go.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["TcpSocket", "UnixSocket", "tcp_sockets", "tcp_sockets_again", "unix_sockets"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTRIBUTE = struct.Struct("=HH")  # rtattr: length, type
_ERROR_CODE = struct.Struct("=i")  # nlmsgerr starts with the negated errno

# inet_diag_req_v2: family, protocol, extensions, pad, states, then inet_diag_sockid (48 bytes:
# sport, dport big-endian; src, dst 16 bytes each; interface; cookie), as the kernel gave it.
_INET_REQUEST = struct.Struct("=BBBxI48s")
_NO_SOCKID = bytes(48)
# inet_diag_msg: family, state, timer, retransmits, sockid (sport, dport, src, dst, interface,
# cookie), expires, rqueue, wqueue, uid, inode.
_INET_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_SOCKID_AT, _SOCKID_END = 4, 52
_INODE = struct.Struct("=I")
_INODE_AT = _INET_MESSAGE.size - 4  # the message's last field
INET_DIAG_INFO = 2
TCP_LISTEN = 10
_NOT_LISTENING = 0xFFFFFFFF & ~(1 << TCP_LISTEN)
_TCP_INFO_BYTES = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received
_TCP_INFO_BYTES_AT = 120
# Exact requests sent in one sendmsg: the kernel answers each into our receive buffer before
# sendmsg returns, and drops answers that overflow it (208 KiB by default; more takes privileges).
# An answer with its tcp_info takes 1 to 1.5 KiB of it (150 fitted, 200 did not), so a tree's
# connections go 64 to a sendmsg; a lost answer (ENOBUFS) makes the caller dump instead.
_EXACT_BATCH = 64

# unix_diag_req: family, protocol, pad, states, inode, show, cookie.
_UNIX_REQUEST = struct.Struct("=BBxxIII8s")
_UNIX_MESSAGE = struct.Struct("=BBBxI8x")  # family, type, state, pad, inode, cookie
UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_PEER = 0x04
UNIX_DIAG_NAME = 0
UNIX_DIAG_PEER = 2
UNIX_ESTABLISHED = 1
_NO_COOKIE = b"\xff" * 8


@dataclass(frozen=True)
class TcpSocket:
    inode: int
    state: int  # the kernel's TCP state number (1 established ... 11 closing)
    remote_host: str
    remote_port: int
    local_port: int
    bytes_acked: int | None = None  # sent and acknowledged by the peer (tcp_info)
    bytes_received: int | None = None
    family: int = socket.AF_INET  # of the socket (AF_INET6 for a dual-stack one on IPv4)
    sockid: bytes = _NO_SOCKID  # inet_diag_sockid as the kernel gave it: what finds it again


@dataclass(frozen=True)
class UnixSocket:
    inode: int
    name: str | None  # the bound path; a server's accepted socket carries its listener's
    peer: int | None  # the inode at the other end


def _attributes(payload: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    while offset + _ATTRIBUTE.size <= len(payload):
        length, kind = _ATTRIBUTE.unpack_from(payload, offset)
        if length < _ATTRIBUTE.size:
            return
        yield kind, payload[offset + _ATTRIBUTE.size : offset + length]
        offset += (length + 3) & ~3


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, sequence, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        yield kind, sequence, data[offset + _HEADER.size : offset + length]
        offset += (length + 3) & ~3


def _netlink() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)


def _dump(request: bytes) -> Iterator[bytes]:
    """The payload of each message the kernel answers ``request`` (a dump) with."""
    with _netlink() as nl:
        header = _HEADER.pack(
            _HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        nl.sendall(header + request)
        while True:
            data = nl.recv(1 << 16)
            if not data:
                return
            for kind, _, body in _messages(data):
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = _ERROR_CODE.unpack_from(body)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield body


def _tcp_socket(body: bytes) -> TcpSocket | None:
    """The socket an inet_diag_msg describes (None: too short to be one)."""
    if len(body) < _INET_MESSAGE.size:
        return None
    fields = _INET_MESSAGE.unpack_from(body)
    family, state, local_port, remote_port, remote, inode = (
        fields[0],
        fields[1],
        fields[4],
        fields[5],
        fields[7],
        fields[14],
    )
    acked = received = None
    for kind, value in _attributes(body, _INET_MESSAGE.size):
        if kind == INET_DIAG_INFO and len(value) >= _TCP_INFO_BYTES_AT + 16:
            acked, received = _TCP_INFO_BYTES.unpack_from(value, _TCP_INFO_BYTES_AT)
    return TcpSocket(
        inode=inode,
        state=state,
        remote_host=str(ipaddress.ip_address(remote[: 4 if family == socket.AF_INET else 16])),
        remote_port=int.from_bytes(remote_port, "big"),
        local_port=int.from_bytes(local_port, "big"),
        bytes_acked=acked,
        bytes_received=received,
        family=family,
        sockid=body[_SOCKID_AT:_SOCKID_END],
    )


def _extensions(byte_counts: bool) -> int:
    return 1 << (INET_DIAG_INFO - 1) if byte_counts else 0


def tcp_sockets(
    inodes: Collection[int] | None = None, *, byte_counts: bool = False
) -> list[TcpSocket]:
    """Every TCP socket of this network namespace that is not listening (IPv4 and IPv6), or
    only those whose inode is in ``inodes`` (the others are skipped before they are decoded:
    a host may have thousands)."""
    found: list[TcpSocket] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        request = _INET_REQUEST.pack(
            family, socket.IPPROTO_TCP, _extensions(byte_counts), _NOT_LISTENING, _NO_SOCKID
        )
        for body in _dump(request):
            if len(body) < _INET_MESSAGE.size:
                continue
            if inodes is not None and _INODE.unpack_from(body, _INODE_AT)[0] not in inodes:
                continue
            tcp = _tcp_socket(body)
            if tcp is not None:
                found.append(tcp)
    return found


def tcp_sockets_again(
    known: Sequence[TcpSocket], *, byte_counts: bool = False
) -> list[TcpSocket | None]:
    """Each of ``known`` (sockets a dump found) as the kernel has it now, by exact request;
    None where the kernel has no socket with that identity and cookie any more (ENOENT).

    The answer is the kernel's for that identity: a caller that needs the same open socket
    checks its inode and state (a connection that closed leaves a TIME_WAIT entry with the
    cookie and inode 0). Raises OSError when any answer is missing or another error comes,
    so that the caller falls back to a dump.
    """
    found: list[TcpSocket | None] = []
    with _netlink() as nl:
        for start in range(0, len(known), _EXACT_BATCH):
            batch = known[start : start + _EXACT_BATCH]
            found.extend(_exact(nl, batch, _extensions(byte_counts)))
    return found


def _exact(
    nl: socket.socket, batch: Sequence[TcpSocket], extensions: int
) -> list[TcpSocket | None]:
    size = _HEADER.size + _INET_REQUEST.size
    request = b"".join(
        _HEADER.pack(size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, sequence, 0)
        + _INET_REQUEST.pack(tcp.family, socket.IPPROTO_TCP, extensions, _NOT_LISTENING, tcp.sockid)
        for sequence, tcp in enumerate(batch, 1)
    )
    nl.sendall(request)  # one message per socket, all in one datagram: one system call
    answers: dict[int, TcpSocket | None] = {}
    while len(answers) < len(batch):
        # The kernel handled every request inside sendmsg, so whatever is not queued now was
        # dropped (an overflowing receive buffer): never wait for it.
        data = nl.recv(1 << 16, socket.MSG_DONTWAIT)
        for kind, sequence, body in _messages(data):
            if not 0 < sequence <= len(batch):
                continue
            if kind == NLMSG_ERROR:
                (code,) = _ERROR_CODE.unpack_from(body)
                if -code != errno.ENOENT:
                    raise OSError(-code, os.strerror(-code) if code else "acknowledged")
                answers[sequence] = None
            elif kind == SOCK_DIAG_BY_FAMILY:
                answer = _tcp_socket(body)
                if answer is None:
                    raise OSError(errno.EPROTO, "a short inet_diag answer")
                answers[sequence] = answer
    return [answers[sequence] for sequence in range(1, len(batch) + 1)]


def unix_sockets() -> list[UnixSocket]:
    """Every connected Unix socket of this network namespace, with its name and peer."""
    request = _UNIX_REQUEST.pack(
        socket.AF_UNIX, 0, 1 << UNIX_ESTABLISHED, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_PEER, _NO_COOKIE
    )
    found: list[UnixSocket] = []
    for body in _dump(request):
        if len(body) < _UNIX_MESSAGE.size:
            continue
        inode = _UNIX_MESSAGE.unpack_from(body)[3]
        name: str | None = None
        peer: int | None = None
        for kind, value in _attributes(body, _UNIX_MESSAGE.size):
            if kind == UNIX_DIAG_NAME:
                # A path ends at its NUL; an abstract name starts with one (shown as "@").
                if value.startswith(b"\0"):
                    name = "@" + value[1:].decode("utf-8", "replace")
                else:
                    name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == UNIX_DIAG_PEER and len(value) >= 4:
                (peer,) = struct.unpack_from("=I", value)
        found.append(UnixSocket(inode=inode, name=name, peer=peer))
    return found
