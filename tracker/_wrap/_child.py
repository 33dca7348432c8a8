"""Running the wrapped command: spawn it, carry its output through, forward signals, wait.

1. ``block_signals()`` runs first, before any thread exists, so that SIGTERM/SIGINT/SIGHUP reach
   no Python handler in this process (the tracker's included) and every thread inherits the mask.
2. The child is spawned with the original mask and default SIGPIPE, its stdout and stderr on
   pipes. It stays in our process group, so job control and a terminal's Ctrl-C work as before.
3. A signal thread takes the blocked signals with ``sigwaitinfo`` and forwards each one to the
   child — except those the terminal sent (``si_code == SI_KERNEL``): the terminal signals the
   whole foreground group, so the child already has it.
4. The main thread multiplexes the two pipes, the control socket and a pidfd: stdout goes through
   the protocol scanner, both go out unchanged to our own stdout/stderr and the log; resources are
   sampled between reads, and once more when the child has exited but is not reaped yet: a
   zombie's counters are still readable, and hold its last writes. After the child exits,
   output still in the pipes is drained for a bounded time (a grandchild may hold them open).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from tracker._sampling import ResourceSample, ResourceSampler, SharedSampler
from tracker._wrap._control import ControlServer
from tracker._wrap._outcome import CANCEL_SIGNALS, StderrTail, oom_kill_count
from tracker._wrap._scanner import LineScanner, Scan
from tracker._wrap.protocol import Command

__all__ = ["ChildResult", "Listener", "block_signals", "run_child"]

logger = logging.getLogger("tracker")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SI_KERNEL = 0x80  # <asm-generic/siginfo.h>: sent by the kernel, e.g. the tty driver for ^C
READ_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024  # a larger pipe means fewer wake-ups for a chatty child
COALESCE_BYTES = 64 * 1024
COALESCE_SECONDS = 0.002


class Listener(Protocol):
    """What the wrapper does with what it sees; the run lives behind this."""

    def commands(self, commands: list[Command]) -> None: ...

    def rejected(self, line: bytes, reason: str) -> None: ...

    def sampled(self, sample: ResourceSample) -> None: ...


@dataclass
class ChildResult:
    returncode: int  # -N when signal N ended the child
    pid: int
    cancel_signal: int | None = None
    stderr_lines: list[str] = field(default_factory=list)
    oom_killed: bool = False
    last_sample: ResourceSample | None = None


def block_signals() -> set[int]:
    """Block the forwarded signals in this thread (and threads it starts); the old mask."""
    return {int(number) for number in signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)}


class _Forwarder(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(name="pipetrack-signals", daemon=True)
        self._pid = pid
        self._stopping = False
        self.first_cancel: int | None = None

    def run(self) -> None:
        while True:
            info = signal.sigwaitinfo(FORWARDED)
            if self._stopping:
                return
            number = info.si_signo
            if self.first_cancel is None and number in CANCEL_SIGNALS:
                self.first_cancel = number
            if info.si_code == SI_KERNEL:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, number)

    def stop(self) -> None:
        # Wake sigwaitinfo with a signal aimed at this thread alone, which it then ignores.
        self._stopping = True
        if self.ident is not None and self.is_alive():
            signal.pthread_kill(self.ident, signal.SIGHUP)
            self.join(timeout=5)


def spawn(argv: list[str], env: dict[str, str], mask: set[int]) -> tuple[int, int, int]:
    """Start ``argv``; its pid and the read ends of its stdout and stderr pipes."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for fd in (out_r, err_r):
        with contextlib.suppress(OSError):  # a smaller pipe still works
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        pid = os.posix_spawnp(
            argv[0],
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setsigmask=mask,
            # Python ignores these; the child should get the defaults, as subprocess gives.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            # Our stdout was left non-blocking by someone else: wait until it takes more.
            import select

            select.select([], [fd], [])
            continue
        view = view[written:]


class _Pump:
    """One of the child's output streams, copied to our own fd (and the log)."""

    def __init__(
        self,
        source: int,
        target: int,
        log_fd: int | None,
        scanner: LineScanner | None,
        tail: StderrTail | None,
    ) -> None:
        self.source = source
        self.target = target
        self.log_fd = log_fd
        self.scanner = scanner
        self.tail = tail
        self.open = True

    def emit(self, data: bytes) -> bool:
        """Pass ``data`` on; False when our own end is closed (a reader went away)."""
        if not data:
            return True
        if self.log_fd is not None:
            try:
                _write_all(self.log_fd, data)
            except OSError as exc:
                logger.warning("pipetrack: cannot write the log any more: %s", exc)
                self.log_fd = None
        try:
            _write_all(self.target, data)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return False
            raise
        return True


def run_child(
    pid: int,
    out_fd: int,
    err_fd: int,
    *,
    listener: Listener,
    control: ControlServer | None = None,
    log_fd: int | None = None,
    echo: bool = False,
    sample_interval: float = 1.0,
    drain_timeout: float = 2.0,
    resources: SharedSampler | None = None,
) -> ChildResult:
    """Carry the child's output and wait for it; the caller has blocked FORWARDED signals.

    ``resources``: the tree's sampler, made at the spawn and shared with the tracker's writer
    (default: one of its own)."""
    return _Supervisor(
        pid,
        out_fd,
        err_fd,
        listener=listener,
        control=control,
        log_fd=log_fd,
        echo=echo,
        sample_interval=sample_interval,
        drain_timeout=drain_timeout,
        resources=resources,
    ).run()


class _Supervisor:
    def __init__(
        self,
        pid: int,
        out_fd: int,
        err_fd: int,
        *,
        listener: Listener,
        control: ControlServer | None,
        log_fd: int | None,
        echo: bool,
        sample_interval: float,
        drain_timeout: float,
        resources: SharedSampler | None,
    ) -> None:
        self.pid = pid
        self.listener = listener
        self.control = control
        self.sample_interval = sample_interval
        self.drain_timeout = drain_timeout
        self.tail = StderrTail()
        self.pumps = [
            _Pump(out_fd, 1, log_fd, LineScanner(echo=echo), None),
            _Pump(err_fd, 2, log_fd, None, self.tail),
        ]
        self.sampler = resources or SharedSampler(ResourceSampler(pid))
        self.last_sample: ResourceSample | None = None
        self.selector = selectors.DefaultSelector()
        self.pidfd: int | None = None
        self.returncode: int | None = None
        self.exited_at = 0.0

    def run(self) -> ChildResult:
        oom_before = oom_kill_count()
        forwarder = _Forwarder(self.pid)
        forwarder.start()
        for pump in self.pumps:
            self.selector.register(pump.source, selectors.EVENT_READ, pump)
        if self.control is not None:
            self.selector.register(self.control.fileno(), selectors.EVENT_READ, self.control)
        with contextlib.suppress(OSError, AttributeError):  # before Linux 5.3: poll waitpid
            self.pidfd = os.pidfd_open(self.pid)
            self.selector.register(self.pidfd, selectors.EVENT_READ, "exit")
        try:
            returncode = self._loop()
            if self.control is not None:
                _control(self.control, self.listener)  # what a last `pipetrack …` sent
        finally:
            forwarder.stop()
            for pump in self.pumps:
                # Still open after the drain timeout: a grandchild holds the pipe; let it go.
                _finish(pump, self.selector, self.listener)
            if self.pidfd is not None:
                os.close(self.pidfd)
            self.selector.close()
        oom_after = oom_kill_count()
        return ChildResult(
            returncode=returncode,
            pid=self.pid,
            cancel_signal=forwarder.first_cancel,
            stderr_lines=self.tail.lines(),
            oom_killed=oom_before is not None and oom_after is not None and oom_after > oom_before,
            last_sample=self.last_sample,
        )

    def _loop(self) -> int:
        next_sample = time.monotonic() + min(self.sample_interval, 0.5)
        exit_seen = self.pidfd is None  # without a pidfd, waitpid is polled every round
        trickle = False
        while True:
            if trickle and self.returncode is None:
                # The last read found only a little: let output gather in the pipe (1 MiB) for
                # a moment rather than waking up for every write the child makes. This is what
                # keeps a chatty child's throughput near its bare speed.
                time.sleep(COALESCE_SECONDS)
            now = time.monotonic()
            if self.returncode is None and exit_seen:
                self._check_exit(now)
            if self.returncode is not None:
                left = self.drain_timeout - (now - self.exited_at)
                if left <= 0 or not any(p.open for p in self.pumps):
                    return self.returncode
                timeout = left
            else:
                if now >= next_sample:
                    self._sample()
                    next_sample = now + self.sample_interval
                timeout = max(next_sample - now, 0.0)
                if self.pidfd is None:
                    timeout = min(timeout, 0.05)
            trickle = False
            for key, _ in self.selector.select(timeout):
                if isinstance(key.data, _Pump):
                    got = _service(key.data, self.selector, self.listener)
                    trickle = trickle or 0 < got < COALESCE_BYTES
                elif isinstance(key.data, ControlServer):
                    _control(key.data, self.listener)
                else:
                    exit_seen = True

    def _check_exit(self, now: float) -> None:
        if _exited(self.pid):
            self._sample()  # its last figures, read from its zombie before it is reaped
        self.returncode = _reap(self.pid)
        if self.returncode is not None:
            self.exited_at = now
            if self.pidfd is not None:
                self.selector.unregister(self.pidfd)

    def _sample(self) -> None:
        sample = self.sampler.sample()
        if sample is not None:
            self.last_sample = sample
            self.listener.sampled(sample)


def _exited(pid: int) -> bool:
    """Has ``pid`` exited (and not been reaped)? It stays a zombie: nothing is collected."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, AttributeError, OSError):  # gone, or no waitid (macOS)
        return False
    return info is not None


def _reap(pid: int) -> int | None:
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def _deliver(scan: Scan, listener: Listener) -> None:
    for line, reason in scan.rejected:
        listener.rejected(line, reason)
    if scan.commands:
        listener.commands(scan.commands)


def _service(pump: _Pump, selector: selectors.BaseSelector, listener: Listener) -> int:
    """Move what the child wrote on; the number of bytes read (0 at end of stream)."""
    try:
        chunk = os.read(pump.source, READ_SIZE)
    except OSError:
        chunk = b""
    if not chunk:
        _finish(pump, selector, listener)
        return 0
    if pump.tail is not None:
        pump.tail.add(chunk)
    if pump.scanner is not None:
        scan = pump.scanner.feed(chunk)
        alive = pump.emit(scan.output)
        _deliver(scan, listener)
    else:
        alive = pump.emit(chunk)
    if not alive:
        # Whoever read our output is gone. Closing the child's pipe gives the child the EPIPE or
        # SIGPIPE it would have had without us in between.
        _finish(pump, selector, listener, flush=False)
    return len(chunk)


def _finish(
    pump: _Pump, selector: selectors.BaseSelector, listener: Listener, *, flush: bool = True
) -> None:
    if not pump.open:
        return
    pump.open = False
    selector.unregister(pump.source)
    os.close(pump.source)
    if pump.scanner is not None:
        scan = pump.scanner.close()
        if flush:
            pump.emit(scan.output)
        _deliver(scan, listener)


def _control(control: ControlServer, listener: Listener) -> None:
    for datagram in control.receive():
        scanner = LineScanner()
        # A datagram holds one line; anything that is not a command is refused, not printed.
        scan = scanner.feed(datagram if datagram.endswith(b"\n") else datagram + b"\n")
        scan.rejected.extend((line, "not a protocol line") for line in [scan.output] if line)
        _deliver(scan, listener)
