"""Suite-wide set-up: the database plugin, a clean environment, strict mode, and a check that
no log line the suite produces contains a test password."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.secrets import all_test_passwords

pytest_plugins = ["tests.fix_db", "tests.fix_pg15", "tests.fix_replica", "tests.fix_pgbouncer"]

# Anything that would point pipetrack at a real database or the user's own files.
_FOREIGN_PREFIXES = ("PIPETRACK_", "MONITOR_DB_", "PG", "OTEL_", "TRACEPARENT", "TRACESTATE")
# ...except the suite's own switches (the test server, and CI's "absence is a failure" flags).
_KEEP_PREFIXES = ("PIPETRACK_TEST_", "PIPETRACK_REQUIRE_")


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(_FOREIGN_PREFIXES) and not name.startswith(_KEEP_PREFIXES):
                mp.delenv(name)
        # Outside pytest's basetemp, which a concurrent pytest session may prune.
        data_dir = Path(tempfile.mkdtemp(prefix="pipetrack-test-data-"))
        mp.setenv("PIPETRACK_DATA_DIR", str(data_dir))
        mp.setenv("PIPETRACK_STRICT", "1")
        try:
            yield
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data directory for a test's own embedded server, stopped and removed afterwards.

    Not under pytest's basetemp: when the tests run as root the server runs as another user,
    and every pytest session that starts makes /tmp/pytest-of-<user> private again, locking that
    user out of a server another session is running.
    """
    from tracker._db import embedded

    folder = Path(tempfile.mkdtemp(prefix="pipetrack-test-embedded-"))
    try:
        yield folder
    finally:
        embedded.stop(embedded.pgdata_dir(folder))
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _signals_not_ignored() -> Iterator[None]:
    """Children start with the signals the tests send at their default disposition.

    A shell without job control starts a background job with SIGINT ignored (``nohup``:
    SIGHUP), and an ignored signal stays ignored across exec, so every child would ignore it and
    the tests of what a signal does would hang. The tests expect a process that can be
    signalled, as a pipeline run from cron or a terminal is: put back what a fresh process has.
    """
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGHUP: signal.SIG_DFL}
    defaults[signal.SIGTERM] = signal.SIG_DFL
    restored = {
        s: signal.signal(s, d) for s, d in defaults.items() if signal.getsignal(s) is signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, previous in restored.items():
            signal.signal(signum, previous)


class _EveryLine(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True, scope="session")
def _no_password_in_any_log_line() -> Iterator[None]:
    """pipetrack's own loggers at DEBUG (every other logger at WARNING) for the whole session;
    at the end, no captured line may contain a test password."""
    handler = _EveryLine()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in ("tracker", "exporter")]
    saved = [(logger, logger.level) for logger in (root, *ours)]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    sentinel = "log capture for the password check is live"
    logging.getLogger("tracker").debug(sentinel)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)
    leaks = [line for line in handler.lines for secret in all_test_passwords() if secret in line]
    assert not leaks, f"test passwords in {len(leaks)} log lines, e.g. {leaks[0]!r}"
    assert any(sentinel in line for line in handler.lines), "the log capture is not working"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Note every child process the test body starts, for ``pytest_runtest_teardown``."""
    started: list[subprocess.Popen[Any]] = []
    original = subprocess.Popen.__init__

    def noting(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        started.append(self)

    subprocess.Popen.__init__ = noting  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]
        item.stash[_CHILDREN] = started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Reap what the test body started and its fixtures did not, even when the test failed: a
    child left running would be collected by the next test (``ResourceWarning``) and hold the
    database, a port or the CPU."""
    yield
    for child in item.stash.get(_CHILDREN, []):
        if child.poll() is None:
            child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=60)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_CHILDREN = pytest.StashKey[list["subprocess.Popen[Any]"]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where the browser tests left their screenshots (tests/monitor_support.py)."""
    from tests.monitor_support import artifacts_dir

    if any(
        report.nodeid.startswith("tests/test_monitor_browser.py")
        for reports in terminalreporter.stats.values()
        for report in reports
        if hasattr(report, "nodeid")
    ):
        terminalreporter.write_line(f"monitor screenshots: {artifacts_dir()}")
