"""The views' ``--json`` output: what the query layer returns, as JSON a script can read."""

from __future__ import annotations

import json

from monitor.queries._common import jsonable
from tracker.cli._common import say


def dump(data: object) -> None:
    """Print ``data`` as indented JSON with sorted keys (times ISO 8601, ids as text)."""
    say(json.dumps(data, default=jsonable, indent=2, sort_keys=True))
