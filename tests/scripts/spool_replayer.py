"""Replays a spool folder over and over until told to stop: ``spool_replayer.py DIR STOP``.

Prints the run id of every snapshot it replayed, one a line, once the file STOP exists and a
last replay is done (the spool race test runs a few of these against new files)."""

from __future__ import annotations

import sys
from pathlib import Path

from tracker._model.state import Snapshot
from tracker._record.spool import Spool

directory, stop = Path(sys.argv[1]), Path(sys.argv[2])
replayed: list[str] = []


def write(snapshot: Snapshot) -> None:
    replayed.append(snapshot.run_id)


spool = Spool(directory, max_bytes=10**9)
while not stop.exists():
    spool.replay(None, write, own_first=False)
spool.replay(None, write, own_first=False)
print("\n".join(replayed), flush=True)
