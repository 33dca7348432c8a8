"""The rows of ``pipeline_run_sample`` as the writer makes them: thinned over a long run (an
injected clock lives through six hours), carried through the spool (old spool files still
replay), skipped for a run that is archived, and the declared columns against the catalog."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from tests.tracker_support import bare_run, fetch_run, snapshot
from tracker._model.columns import SAMPLE_COLUMNS, STATUS_COLUMNS, SUBTASK_COLUMNS, Kind
from tracker._model.snapshot import Snapshot, utc
from tracker._model.state import RunCore
from tracker._ops.archive import archive
from tracker._record.spool import Spool
from tracker._record.store import Store
from tracker._record.writer import Writer
from tracker._sampling import SampleCadence
from tracker._settings import TrackerSettings


class Clock:
    """Monotonic and wall time that move only when told (the writer and its sampler read it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mono = time.monotonic()
        self._wall = time.time()

    def mono(self) -> float:
        with self._lock:
            return self._mono

    def wall(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall += seconds


def six_hour_run(clock: Clock) -> RunCore:
    core = bare_run("DAILY_six_hours")
    core.start_wall = clock.wall()
    with core._lock:
        core.begin_work()
    return core


def sample_times(db, run_id) -> list[float]:
    rows = db.execute(
        "SELECT extract(epoch FROM sampled_at)::float8 FROM pipeline_run_sample"
        " WHERE run_id = %s ORDER BY sampled_at",
        (run_id,),
    ).fetchall()
    return [t for (t,) in rows]


def test_a_six_hour_run_keeps_its_rows_under_the_bound_and_its_first_and_last(db_dsn, db, tmp_path):
    clock = Clock()
    settings = TrackerSettings(dsn=db_dsn, spool_dir=tmp_path / "spool", flush_interval=3600)
    writer = Writer(settings, clock=clock.mono, wall=clock.wall)
    run = six_hour_run(clock)
    started = clock.wall()
    step = 9.0  # the writer cycles when told; between cycles, 9 s pass
    try:
        writer.register(run)
        assert writer.force_flush(30)
        while clock.wall() - started < 6 * 3600:
            clock.advance(step)
            assert writer.force_flush(30)
        with run._lock:
            run.end("FINISHED")
        writer.wake()
        assert writer.force_flush(30)
        ended = clock.wall()
    finally:
        assert writer.shutdown(10)
    times = sample_times(db, run.run_id)
    bound = SampleCadence().max_rows(ended - started)
    assert len(times) <= bound, (len(times), bound)
    # Not thinned to nothing either: one row per 18 s (two steps) in the first hour, then one
    # per 63 s (seven steps).
    assert len(times) >= 3600 / 18 + 5 * 3600 / 63 - 5
    assert times[0] == pytest.approx(started, abs=0.01)  # the first sample, kept
    assert times[-1] == pytest.approx(ended, abs=0.01)  # and the last, after the run ended
    # Each kept row (the last aside: kept whenever the run ends) is a cadence apart from the
    # one before: 10 s in the first hour, 60 s after. (A row at 3,600 s itself may be either:
    # the clocks' sums of 9.0 s steps differ in the last bits.)
    gaps = [(b - started, b - a) for a, b in pairwise(times[:-1])]
    assert min(gap for age, gap in gaps if age <= 3600.5) >= 10
    assert min(gap for age, gap in gaps if age > 3600.5) >= 60
    assert fetch_run(db, run.run_id)["execution_status"] == "FINISHED"


def old_line(data: dict) -> dict:
    """``data`` (a spool line) as a version before work counts and samples wrote it."""
    new = {"cpu_seconds", "disk_read_bytes", "disk_write_bytes", "tcp_received_bytes"}
    new |= {"tcp_sent_bytes", "counts", "peak_rss_bytes"}
    return {
        "run": {k: v for k, v in data["run"].items() if k not in new},
        "subtasks": [{k: v for k, v in s.items() if k not in new} for s in data["subtasks"]],
    }


def write_spool(directory: Path, key: str, lines: list[dict]) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{time.time_ns():020d}-1-00000000.jsonl"
    header = {"pipetrack_spool": 1, "target": key, "host": "h", "pid": 1}
    body = [json.dumps(header)] + [json.dumps(line, default=str) for line in lines]
    path.write_text("\n".join(body) + "\n")
    path.chmod(0o600)


def test_a_spool_file_from_before_samples_and_counts_still_replays(db_dsn, db, tmp_path):
    run_id = str(uuid.uuid4())
    data = snapshot(run_id, 3, "FINISHED", 100.0).to_json()
    assert "samples" not in data  # a snapshot without samples says nothing of them
    store = Store(db_dsn)
    try:
        write_spool(tmp_path / "spool", store.resolve(), [old_line(data)])
        result = Spool(tmp_path / "spool", max_bytes=10**6).replay(store.resolve(), store.write)
    finally:
        store.close()
    assert (result.replayed, result.corrupt, result.rejected) == (1, 0, 0)
    row = fetch_run(db, run_id)
    assert (row["execution_status"], row["counts"], row["cpu_seconds"]) == ("FINISHED", None, None)


def with_samples(base: Snapshot, *offsets: float) -> Snapshot:
    names = [c.name for c in SAMPLE_COLUMNS]
    rows = []
    for offset in offsets:
        values = dict.fromkeys(names, 0)
        values.update(
            run_id=base.run_id,
            sampled_at=utc(1_700_000_000.0 + offset),
            subtask_index=None,
            cpu_percent=12.5,
            cpu_seconds=offset / 10,
        )
        rows.append(tuple(values[n] for n in names))
    return Snapshot(
        base.run_id,
        base.seq,
        base.identity,
        base.state,
        subtasks=base.subtasks,
        final=base.final,
        samples=rows,
    )


def test_samples_in_the_spool_come_back_by_name_and_land_once(db_dsn, db, tmp_path):
    run_id = str(uuid.uuid4())
    first = with_samples(snapshot(run_id, 1), 0, 10)
    last = with_samples(snapshot(run_id, 2, "FINISHED"), 20)
    store = Store(db_dsn)
    try:
        key = store.resolve()
        lines = [first.to_json(), last.to_json()]
        assert [len(line["samples"]) for line in lines] == [2, 1]
        write_spool(tmp_path / "spool", key, [*lines, *lines])  # each line twice
        spool = Spool(tmp_path / "spool", max_bytes=10**6)
        assert spool.replay(key, store.write).replayed == 4
    finally:
        store.close()
    assert db.execute(
        "SELECT count(*), sum(cpu_seconds) FROM pipeline_run_sample WHERE run_id = %s", (run_id,)
    ).fetchone() == (3, 3.0)


def test_late_samples_of_an_archived_run_are_skipped_and_the_rest_of_the_batch_written(db_dsn, db):
    archived, other = str(uuid.uuid4()), str(uuid.uuid4())
    store = Store(db_dsn)
    try:
        # snapshot() makes runs of November 2023: long over, and archived at once.
        store.write(with_samples(snapshot(archived, 1, "FINISHED"), 0))
        assert archive(db, timedelta(days=30)).runs == 1
        # A late snapshot of it (a spool replayed after the archive), in one batch with another
        # run's: its samples would break the foreign key; they are skipped instead.
        store.write_many(
            [
                with_samples(snapshot(archived, 2, "FINISHED"), 30),
                with_samples(snapshot(other, 1), 0, 10),
            ]
        )
    finally:
        store.close()
    counts = dict(
        db.execute(
            "SELECT run_id::text, count(*) FROM pipeline_run_sample GROUP BY run_id"
        ).fetchall()
    )
    assert counts == {other: 2}
    assert db.execute("SELECT count(*) FROM pipeline_run_sample_history").fetchone() == (1,)


_CATALOG_TYPES = {
    Kind.UUID: "uuid",
    Kind.TEXT: ("text", "character varying"),
    Kind.INTEGER: "integer",
    Kind.BIGINT: "bigint",
    Kind.NUMERIC: "numeric",
    Kind.DOUBLE: "double precision",
    Kind.TIMESTAMP: "timestamp with time zone",
    Kind.JSON: "jsonb",
}


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("pipeline_status", STATUS_COLUMNS),
        ("pipeline_subtask", SUBTASK_COLUMNS),
        ("pipeline_run_sample", SAMPLE_COLUMNS),
    ],
)
def test_the_declared_columns_are_the_tables_columns_with_their_types_and_widths(
    db, table, columns
):
    catalog = {
        name: (kind, width, required)
        for name, kind, width, required in db.execute(
            "SELECT attname, format_type(atttypid, NULL),"
            " CASE WHEN atttypmod > 4 AND atttypid = 'varchar'::regtype THEN atttypmod - 4 END,"
            " attnotnull AND NOT atthasdef AND attidentity = ''"
            " FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped",
            (table,),
        ).fetchall()
    }
    for column in columns:
        assert column.name in catalog, column.name
        kind, width, _ = catalog[column.name]
        expected = _CATALOG_TYPES[column.kind]
        assert kind in (expected if isinstance(expected, tuple) else (expected,)), column
        # A text column keeps as many characters as its VARCHAR holds, no more (TEXT: any).
        assert column.width == width, column
    # Every column a row cannot do without is one the writer writes.
    required = {name for name, (_, _, needed) in catalog.items() if needed}
    assert required <= {c.name for c in columns}
    if table == "pipeline_run_sample":  # the writer fills every column of a sample
        assert set(catalog) == {c.name for c in columns}
