"""The kernel's socket table, read through NETLINK_SOCK_DIAG (what ``ss`` reads; Linux only).

Two dumps: every TCP socket that is not listening (its inode, peer address and, on request, the
byte counts of its ``tcp_info``), and every connected Unix stream socket with its bound name and
its peer's inode. The structures are the kernel's uapi ones (``linux/inet_diag.h``,
``linux/unix_diag.h``, ``linux/tcp.h``); they only ever grow at the end, so shorter answers from
older kernels are read as far as they go.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass

__all__ = ["TcpSocket", "UnixSocket", "tcp_sockets", "unix_sockets"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTRIBUTE = struct.Struct("=HH")  # rtattr: length, type

# inet_diag_req_v2: family, protocol, extensions, pad, states, then inet_diag_sockid (48 bytes).
_INET_REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg: family, state, timer, retransmits, sockid (sport, dport big-endian; src, dst
# 16 bytes each; interface; cookie), expires, rqueue, wqueue, uid, inode.
_INET_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_INODE = struct.Struct("=I")
_INODE_AT = _INET_MESSAGE.size - 4  # the message's last field
INET_DIAG_INFO = 2
TCP_LISTEN = 10
_TCP_INFO_BYTES = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received
_TCP_INFO_BYTES_AT = 120

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


def _dump(request: bytes) -> Iterator[bytes]:
    """The payload of each message the kernel answers ``request`` (a dump) with."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        header = _HEADER.pack(
            _HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        nl.sendall(header + request)
        while True:
            data = nl.recv(1 << 16)
            if not data:
                return
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    return
                body = data[offset + _HEADER.size : offset + length]
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", body)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield body
                offset += (length + 3) & ~3


def tcp_sockets(
    inodes: Collection[int] | None = None, *, byte_counts: bool = False
) -> list[TcpSocket]:
    """Every TCP socket of this network namespace that is not listening (IPv4 and IPv6), or
    only those whose inode is in ``inodes`` (the others are skipped before they are decoded:
    a host may have thousands)."""
    found: list[TcpSocket] = []
    states = 0xFFFFFFFF & ~(1 << TCP_LISTEN)
    extensions = 1 << (INET_DIAG_INFO - 1) if byte_counts else 0
    for family, size in ((socket.AF_INET, 4), (socket.AF_INET6, 16)):
        request = _INET_REQUEST.pack(family, socket.IPPROTO_TCP, extensions, states)
        for body in _dump(request):
            if len(body) < _INET_MESSAGE.size:
                continue
            if inodes is not None and _INODE.unpack_from(body, _INODE_AT)[0] not in inodes:
                continue
            fields = _INET_MESSAGE.unpack_from(body)
            state, local_port, remote_port, remote, inode = (
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
            found.append(
                TcpSocket(
                    inode=inode,
                    state=state,
                    remote_host=str(ipaddress.ip_address(remote[:size])),
                    remote_port=int.from_bytes(remote_port, "big"),
                    local_port=int.from_bytes(local_port, "big"),
                    bytes_acked=acked,
                    bytes_received=received,
                )
            )
    return found


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
