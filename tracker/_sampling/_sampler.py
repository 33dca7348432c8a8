"""The resources of a process and its descendants, sampled: one sampler for the tracked process
(on the writer thread) and for a wrapped command's tree (``pipetrack run``).

Cumulative figures (CPU seconds, disk bytes, TCP bytes) count from the sampler's creation and
never go down; rates are their growth since the previous sample. The kernel's counters are per
process and vanish with it, so the sampler keeps each process's last reading:

1. A process present at creation is a baseline: only what it does afterwards counts.
2. A process first seen later was forked inside the tree since (its counters start at zero at
   fork), so all of it counts. A reused pid is told apart by its start time.
3. A process that is gone has had its last reading counted. The kernel adds a reaped child's
   counters to its parent's at wait(), so the parent's next growth is reduced by the child's
   last reading: the child's work between that reading and its exit is counted once, through
   the parent, and nothing twice. A child reaped outside the tree (the tree's root, reaped by
   ``pipetrack run``) takes that last bit with it.
4. Every growth is clamped at zero, so no rate is ever negative.
5. TCP bytes are counted per socket the same way: a socket first seen counts whole, a closed one
   keeps what it was last seen with.

A descendant that leaves the tree while alive (a daemon re-parented to init) is still sampled
while it lives: the work was started by the run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from tracker._sampling._readers import Reading, TreeReader, make_reader
from tracker._sampling._socket_table import SocketTable
from tracker._sampling._sockets import DatabaseEndpoints, TreeSockets, tree_sockets

__all__ = ["ResourceSample", "ResourceSampler"]

logger = logging.getLogger("tracker")

MIB = 1024 * 1024


@dataclass(frozen=True)
class ResourceSample:
    """The tree's figures at one moment. None: this platform or these processes do not say.

    ``tcp_*`` are the payload bytes of the tree's TCP connections (each socket's ``tcp_info``),
    the one per-process network figure Linux has: a connection opened and closed between two
    samples is not seen, and one that closes loses what it carried after the last sample.
    """

    sampled_at: float  # wall-clock seconds (time.time())
    elapsed: float  # seconds since the previous sample (or the sampler's creation)
    processes: int
    rss_bytes: int  # resident set size of the tree now (shared pages counted per process)
    peak_rss_bytes: int  # the largest seen so far (this process's own kernel peak included)
    cpu_percent: float  # CPU seconds per wall second since the previous sample, x100
    cpu_seconds: float  # cumulative
    disk_read_bytes: int | None  # cumulative, from storage (psutil read_bytes)
    disk_write_bytes: int | None  # cumulative, to storage (psutil write_bytes)
    tcp_received_bytes: int | None  # cumulative
    tcp_sent_bytes: int | None  # cumulative (sent and acknowledged by the peer)
    disk_read_rate: float | None  # bytes per second since the previous sample
    disk_write_rate: float | None
    tcp_receive_rate: float | None
    tcp_send_rate: float | None
    db_connections: int | None  # see tracker._sampling._sockets
    other_connections: int | None  # other TCP connections, not listening
    open_fds: int | None

    @property
    def memory_mb(self) -> int:
        return self.rss_bytes // MIB

    @property
    def peak_memory_mb(self) -> int:
        return self.peak_rss_bytes // MIB


@dataclass
class _Last:
    """A process's previous reading, as far as it was readable."""

    ident: float
    ppid: int
    cpu: float
    disk: tuple[int, int] | None


_ZERO = _Last(0.0, 0, 0.0, (0, 0))


def _grown(now: tuple[int, int], before: tuple[int, int], reaped: tuple[int, int]) -> list[int]:
    return [max(now[i] - before[i] - reaped[i], 0) for i in range(2)]


class ResourceSampler:
    """Samples the tree rooted at ``pid`` (default: this process); see the module docstring.

    ``database`` names the configured database's endpoints (see ``DatabaseEndpoints``);
    ``skip_fds`` returns this process's descriptors whose sockets are not to be counted (the
    tracker's own database connection). ``reader`` forces "proc" or "psutil" (tests);
    ``socket_table`` is the memory of the tree's sockets this sampler keeps (one of its own: a
    test passes one to count its dumps).
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        database: DatabaseEndpoints | None = None,
        skip_fds: Callable[[], Collection[int]] | None = None,
        reader: str | None = None,
        socket_table: SocketTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.root = os.getpid() if pid is None else pid
        self._database = database or DatabaseEndpoints()
        self._skip_fds = skip_fds
        self._reader: TreeReader | None = None
        self._clock = clock
        self._wall = wall
        self._known: dict[int, _Last] = {}
        self._sockets: dict[tuple[int, int, int], tuple[int, int]] = {}
        self._socket_table = SocketTable() if socket_table is None else socket_table
        self._cpu = 0.0
        self._disk = [0, 0]
        self._tcp = [0, 0]
        self._disk_seen = False
        self._peak = 0
        self._broken = False
        self._last = clock()
        try:
            self._reader = make_reader(reader)
            self._take(baseline=True)
        except Exception:  # psutil missing, or a platform that refuses: never the caller's problem
            logger.debug("cannot sample the resources of process %d", self.root, exc_info=True)
            self._broken = True

    @property
    def database(self) -> DatabaseEndpoints:
        """The endpoints that make a connection a database connection; settable (the tracker
        learns its own database's address after its sampler has started)."""
        return self._database

    @database.setter
    def database(self, endpoints: DatabaseEndpoints) -> None:
        self._database = endpoints

    def sample(self) -> ResourceSample | None:
        """The tree's figures now; None once every process of it is gone (or on a failure,
        which is logged once: resources are best effort and never stop the caller)."""
        if self._broken:
            return None
        try:
            return self._take(baseline=False)
        except Exception:
            logger.debug("cannot sample the resources of process %d", self.root, exc_info=True)
            self._broken = True
            return None

    def _take(self, *, baseline: bool) -> ResourceSample | None:
        now = self._clock()
        elapsed = max(now - self._last, 1e-9)
        self._last = now
        if self._reader is None:
            return None
        skip = self._skip_fds() if self._skip_fds is not None and self.root == os.getpid() else ()
        also = [(pid, last.ident) for pid, last in self._known.items()]
        readings = self._reader.read(self.root, also, skip)
        held = [r.sockets for r in readings if r.sockets is not None]
        sockets = (
            tree_sockets(frozenset().union(*held), self._database, self._socket_table)
            if held
            else None
        )
        if baseline:
            self._known = {r.pid: _Last(r.ident, r.ppid, r.cpu, r.disk) for r in readings}
            self._sockets = dict(sockets.tcp_bytes) if sockets is not None else {}
            return None
        cpu, disk, disk_seen = self._account(readings)
        tcp = self._account_sockets(sockets)
        if not readings:
            return None
        rss = sum(r.rss for r in readings)
        self._peak = max(self._peak, rss, _own_peak() if self.root == os.getpid() else 0)
        fds = [r.fds for r in readings if r.fds is not None]
        totals = self._disk if disk_seen or self._disk_seen else None
        self._disk_seen = totals is not None
        return ResourceSample(
            sampled_at=self._wall(),
            elapsed=elapsed,
            processes=len(readings),
            rss_bytes=rss,
            peak_rss_bytes=self._peak,
            cpu_percent=round(100.0 * cpu / elapsed, 2),
            cpu_seconds=round(self._cpu, 3),
            disk_read_bytes=None if totals is None else totals[0],
            disk_write_bytes=None if totals is None else totals[1],
            tcp_received_bytes=None if sockets is None else self._tcp[0],
            tcp_sent_bytes=None if sockets is None else self._tcp[1],
            disk_read_rate=None if totals is None else disk[0] / elapsed,
            disk_write_rate=None if totals is None else disk[1] / elapsed,
            tcp_receive_rate=None if sockets is None else tcp[0] / elapsed,
            tcp_send_rate=None if sockets is None else tcp[1] / elapsed,
            db_connections=None if sockets is None else sockets.database,
            other_connections=None if sockets is None else sockets.other,
            open_fds=sum(fds) if fds else None,
        )

    def _reaped(self, present: dict[int, Reading]) -> dict[int, _Last]:
        """For each present process, the summed last readings of the processes that left and
        that it (as their nearest present ancestor) has reaped or will reap."""
        reaped: dict[int, _Last] = {}
        for pid, last in self._known.items():
            if pid in present and present[pid].ident == last.ident:
                continue
            parent, hops = last.ppid, 0
            while parent not in present and parent in self._known and hops < 64:
                parent, hops = self._known[parent].ppid, hops + 1
            if parent not in present:
                continue  # reaped outside the tree: its last reading stands
            total = reaped.setdefault(parent, _Last(0.0, 0, 0.0, (0, 0)))
            total.cpu += last.cpu
            if last.disk is not None and total.disk is not None:
                total.disk = (total.disk[0] + last.disk[0], total.disk[1] + last.disk[1])
        return reaped

    def _account(self, readings: list[Reading]) -> tuple[float, list[int], bool]:
        """Adds each process's growth since the last sample to the totals; returns the
        interval's (CPU seconds, [disk read, disk write], whether any disk counter was read)."""
        present = {r.pid: r for r in readings}
        reaped = self._reaped(present)
        cpu = 0.0
        disk = [0, 0]
        disk_seen = False
        known: dict[int, _Last] = {}
        for r in readings:
            last = self._known.get(r.pid)
            if last is None or last.ident != r.ident:
                last = _ZERO  # forked since the last sample: everything it did counts
            gone = reaped.get(r.pid, _ZERO)
            cpu += max(r.cpu - last.cpu - gone.cpu, 0.0)
            if r.disk is not None and last.disk is not None:
                grown = _grown(r.disk, last.disk, gone.disk or (0, 0))
                disk = [disk[0] + grown[0], disk[1] + grown[1]]
                disk_seen = True
            # An unreadable counter keeps its last value, so it is measured from there later.
            kept = r.disk if r.disk is not None else (last.disk if last is not _ZERO else None)
            known[r.pid] = _Last(r.ident, r.ppid, r.cpu, kept)
        self._known = known
        self._cpu += cpu
        self._disk = [self._disk[0] + disk[0], self._disk[1] + disk[1]]
        return cpu, disk, disk_seen

    def _account_sockets(self, sockets: TreeSockets | None) -> list[int]:
        """Adds each TCP socket's growth (a new one's whole count) to the totals."""
        grown = [0, 0]
        if sockets is None:
            return grown
        for key, carried in sockets.tcp_bytes.items():
            before = self._sockets.get(key, (0, 0))
            grown = [grown[i] + max(carried[i] - before[i], 0) for i in range(2)]
        # A closed socket's bytes stay in the totals; only its last counts are forgotten.
        self._sockets = dict(sockets.tcp_bytes)
        self._tcp = [self._tcp[0] + grown[0], self._tcp[1] + grown[1]]
        return grown


_LINUX = sys.platform.startswith("linux")  # (a name: each platform's branch stays checked)


def _own_peak() -> int:
    """This process's peak RSS as the kernel kept it: it catches spikes between samples.

    On Linux the peak of this program's image (VmHWM), not ``ru_maxrss``: the kernel carries
    ``ru_maxrss`` across exec from the process that forked it, so a script started by a big
    parent (a test runner, an orchestrator) would report the parent's peak as its own."""
    if _LINUX:
        return _image_peak()
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS


def _image_peak() -> int:
    """VmHWM of /proc/self/status in bytes; 0 when unreadable (the samples' RSS stands)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0
