"""pipetrack's OpenTelemetry: spans per run and subtask, progress and memory metrics over OTLP,
and one trace across child processes. Off, and free, unless configured (see ``_config``).

Importing this package registers the telemetry observer with the tracker and the exit hook that
flushes telemetry; neither imports OpenTelemetry. The API is imported at run start only when
telemetry is on, the SDK and exporters only when pipetrack itself exports.
"""

from __future__ import annotations

import atexit
import os

from tracker._runtime import observers
from tracker._telemetry import _config, _context
from tracker._telemetry._context import child_env
from tracker._telemetry._observer import TelemetryObserver
from tracker._telemetry._run import RunTelemetry

__all__ = ["RunTelemetry", "TelemetryObserver", "child_env"]

OBSERVER = TelemetryObserver()
observers.add_observer(OBSERVER)
# Registered at import, i.e. before the tracker's own exit hooks (installed at the first run):
# atexit runs hooks last-in first-out, so the tracker ends its runs first and the spans and
# metrics of those endings are then flushed here.
atexit.register(_config.at_exit)


def _after_fork() -> None:
    OBSERVER.forget_all()
    _context.forget_all()
    _config.forget_runs()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
