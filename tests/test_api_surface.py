"""The public face of ``tracker``: ``__all__`` is sorted and complete, errors look public, and
importing it stays cheap."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import tracker
import tracker.errors


def public_names(module):
    return {
        name
        for name in dir(module)  # the names it loads on first use too
        if not name.startswith("_")
        and not isinstance(value := getattr(module, name), types.ModuleType)
        and getattr(value, "__module__", module.__name__) != "typing"
        and name not in {"annotations", "T"}
    }


def test_all_is_sorted():
    assert tracker.__all__ == sorted(tracker.__all__)


def test_all_lists_every_public_name_and_nothing_else():
    listed = set(tracker.__all__) - {"__version__"}
    assert listed == public_names(tracker) - {"Any", "Iterable", "Iterator", "TypeVar"}
    assert all(hasattr(tracker, name) for name in tracker.__all__)


def test_every_error_is_exported_and_claims_the_public_module():
    errors = {
        name
        for name, value in vars(tracker.errors).items()
        if inspect.isclass(value) and issubclass(value, Exception)
    }
    assert errors <= set(tracker.__all__)
    assert set(tracker.errors.__all__) == errors
    for name in errors:
        cls = getattr(tracker, name)
        assert cls.__module__ == "tracker"
        assert issubclass(cls, tracker.TrackerError)
        assert cls.__doc__


def test_errors_subclass_the_builtin_their_meaning_matches():
    assert issubclass(tracker.InvalidValue, ValueError)
    assert issubclass(tracker.InvalidStatus, tracker.InvalidValue)
    assert issubclass(tracker.RunClosed, RuntimeError)
    assert issubclass(tracker.SubtaskOrderError, RuntimeError)
    assert issubclass(tracker.NoActiveRun, RuntimeError)
    error = tracker.RunClosed("x", run_id="r1", status="FINISHED")
    assert (error.run_id, error.status) == ("r1", "FINISHED")


def test_import_tracker_loads_no_heavy_module():
    code = (
        "import sys, tracker; "
        "heavy = [m for m in ('psycopg', 'psutil', 'prometheus_client', 'opentelemetry.sdk', "
        "'json', 'socket', 'subprocess') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
