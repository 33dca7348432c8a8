"""The sockets of a process tree (Linux): which connections go to a database, which elsewhere,
and how many bytes each TCP connection has carried.

A connection belongs to the tree when one of the tree's file descriptors is its socket (the
``socket:[inode]`` links in ``/proc/PID/fd``); the kernel's socket table (``_netlink``) then says
where it goes, read through the sampler's ``SocketTable``, which dumps that table only for
sockets it has not seen and reads known connections again by exact request (``_socket_table``:
a socket connected after it was first seen is found at the first sample 30 s or more after the
last dump). A connection counts as a database connection when:

- it is TCP and its remote port is a well-known database port (``DATABASE_PORTS``), or its
  remote host and port are those of the configured DSN; or
- it is a Unix stream socket whose peer is a PostgreSQL (``.s.PGSQL.PORT``) or MySQL socket.

Every other TCP connection that is not listening counts as "other"; other Unix sockets (a
logger, D-Bus) are not connections in this sense and are not counted. Sockets are counted once
however many processes of the tree share them. The socket table is the sampler's network
namespace's: a process of the tree in another namespace (a container) has its sockets missed.

Bytes: each TCP socket's ``tcp_info`` says how many payload bytes it has received and had
acknowledged since it was opened. This is the one per-process network figure Linux gives
without eBPF (``/proc/PID/io``'s rchar/wchar skip recv()/send(), which most clients use; the
interface counters are the host's). It sees only the sockets open when a sample is taken.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tracker._sampling._socket_table import SocketTable

__all__ = ["DATABASE_PORTS", "DatabaseEndpoints", "TreeSockets", "socket_inodes", "tree_sockets"]

# Ports that mean "a database" and little else. Generic ones (9000, 8123, 9200) are left out:
# too many other services use them to call everything there a database.
DATABASE_PORTS: Mapping[int, str] = {
    5432: "PostgreSQL",
    5433: "PostgreSQL (second cluster)",
    6432: "PgBouncer",
    3306: "MySQL/MariaDB",
    33060: "MySQL X protocol",
    1433: "SQL Server",
    1521: "Oracle",
    27017: "MongoDB",
    6379: "Redis",
    9042: "Cassandra",
    26257: "CockroachDB",
    50000: "Db2",
}
_DATABASE_SOCKET = re.compile(r"(?:/\.s\.PGSQL\.\d+|mysqld?\.sock)$")


@dataclass(frozen=True)
class TreeSockets:
    database: int  # database connections, TCP or Unix
    other: int  # other TCP connections
    # (inode, local port, remote port) -> (bytes received, bytes sent and acknowledged), from
    # each TCP socket's tcp_info: what it carried since it was opened.
    tcp_bytes: dict[tuple[int, int, int], tuple[int, int]]


@dataclass(frozen=True)
class DatabaseEndpoints:
    """The configured database's TCP endpoints (IP, port) and Unix socket paths."""

    tcp: frozenset[tuple[str, int]] = frozenset()
    unix: frozenset[str] = frozenset()

    @classmethod
    def from_conninfo(
        cls, conninfo: str | None, environ: Mapping[str, str] | None = None
    ) -> DatabaseEndpoints:
        """The endpoints a libpq connection string names (PGHOST/PGPORT where it names none).

        Host names are resolved once, here; a name that does not resolve is left out (the
        well-known ports still find its connections). A string that does not parse gives none.
        """
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        environ = os.environ if environ is None else environ
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(conninfo or "").items() if v}
        except psycopg.ProgrammingError:
            return cls()
        hosts = _split(params.get("hostaddr") or params.get("host") or environ.get("PGHOST", ""))
        ports = [_port(p) for p in _split(params.get("port") or environ.get("PGPORT", ""))]
        tcp: set[tuple[str, int]] = set()
        unix: set[str] = set()
        for i, host in enumerate(hosts):
            port = ports[i] if i < len(ports) else (ports[0] if len(ports) == 1 else None)
            port = port or 5432
            if host.startswith("/") or host.startswith("@"):
                unix.add(f"{host.rstrip('/')}/.s.PGSQL.{port}")
            else:
                tcp.update((address, port) for address in _addresses(host))
        return cls(frozenset(tcp), frozenset(unix))


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def _addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {_normal(str(info[4][0])) for info in infos}


def _normal(address: str) -> str:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (how a dual-stack socket shows)."""
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def socket_inodes(pid: int, skip_fds: Collection[int] = ()) -> tuple[int, set[int]]:
    """(open file descriptors, inodes of the sockets among them) of process ``pid``.

    Raises OSError when the process is gone or its descriptors are not ours to see.
    """
    folder = f"/proc/{pid}/fd"
    names = os.listdir(folder)
    inodes: set[int] = set()
    for name in names:
        if skip_fds and int(name) in skip_fds:
            continue
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return len(names), inodes


def tree_sockets(
    inodes: Iterable[int], endpoints: DatabaseEndpoints, table: SocketTable | None = None
) -> TreeSockets:
    """What the sockets ``inodes`` are: database and other connections, and the bytes each
    TCP one has carried so far. ``table`` is the sampler's memory of them (see
    ``SocketTable``); without one, the kernel's tables are dumped afresh."""
    seen = (table if table is not None else SocketTable()).read(frozenset(inodes))
    database = other = 0
    carried: dict[tuple[int, int, int], tuple[int, int]] = {}
    for tcp in seen.tcp:
        remote = (_normal(tcp.remote_host), tcp.remote_port)
        if tcp.remote_port in DATABASE_PORTS or remote in endpoints.tcp:
            database += 1
        else:
            other += 1
        if tcp.bytes_received is not None and tcp.bytes_acked is not None:
            key = (tcp.inode, tcp.local_port, tcp.remote_port)
            carried[key] = (tcp.bytes_received, tcp.bytes_acked)
    for peer_name in seen.unix_peers:
        if peer_name and (peer_name in endpoints.unix or _DATABASE_SOCKET.search(peer_name)):
            database += 1
    return TreeSockets(database, other, carried)
