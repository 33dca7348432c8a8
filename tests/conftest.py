"""Suite-wide set-up: the database plugin, a clean environment, and strict mode."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.fix_db"]

# Anything that would point pipetrack at a real database or the user's own files.
_FOREIGN_PREFIXES = ("PIPETRACK_", "MONITOR_DB_", "PG", "OTEL_", "TRACEPARENT", "TRACESTATE")
_KEEP = {"PIPETRACK_TEST_DSN"}


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(_FOREIGN_PREFIXES) and name not in _KEEP:
                mp.delenv(name)
        mp.setenv("PIPETRACK_DATA_DIR", str(tmp_path_factory.mktemp("pipetrack-data")))
        mp.setenv("PIPETRACK_STRICT", "1")
        yield
