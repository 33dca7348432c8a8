"""The scrape path's lines (exporter/_lines.py) say byte for byte what prometheus_client says
for the same snapshot, in both formats: awkward labels, every rule's series, numbers of every
shape, and again on later scrapes, whose task labels and numbers come from the cache."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector
from psycopg.types.json import Jsonb

from exporter._exposition import WrittenFamily, choose
from exporter._lines import LineCache, render_lines
from exporter._queries import LastEnded, LatestRun, RunningRun, ScrapeSnapshot
from exporter._render import render
from tests.test_exporter_badinput import NAMES
from tests.test_exporter_support import insert_run, registered
from tracker._ops import registry as declared_tasks
from tracker._ops.registry import DeclaredTask

TEXT_ACCEPT = "text/plain"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"

AWKWARD = [
    *NAMES,
    "ends with a backslash\\",
    'ends with a quote"',
    "\\n is not a newline",
    "line\u2028separator and nbsp\u00a0",
    "esc\x1b[2J bel\x07 csi\x9b31m rlo\u202e del\x7f",
    "",
]


class Fixed(Collector):
    """The families of one collect, offered again: both encoders see one snapshot."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return self.families


def both_formats(families: list) -> list[tuple[str, str, object]]:
    """(ours, prometheus_client's, parser) for the text format and for OpenMetrics."""
    text, _ = choose(TEXT_ACCEPT)
    openmetrics, _ = choose(OPENMETRICS_ACCEPT)
    return [
        (text(Fixed(families)).decode(), generate_latest(Fixed(families)).decode(), parse_text),
        (
            openmetrics(Fixed(families)).decode(),
            generate_openmetrics(Fixed(families)).decode(),
            parse_openmetrics,
        ),
    ]


def parsed(text: str, parser) -> list:
    # repr: NaN equals NaN, and -0.0 differs from 0.0.
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, repr(s.value)) for s in f.samples])
        for f in parser(text)
    ]


def assert_same_exposition(families: list) -> str:
    """Our exposition of ``families`` is prometheus_client's, byte for byte; returns ours."""
    assert any(isinstance(family, WrittenFamily) for family in families)
    for ours, theirs, parser in both_formats(families):
        assert ours == theirs
        assert parsed(ours, parser) == parsed(theirs, parser)
    return both_formats(families)[0][0]


def task_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("pipetrack_task_")]


def now_of(db):
    return db.execute("SELECT now()").fetchone()[0]


@pytest.fixture
def seeded(db):
    """Every rule's series for tasks with awkward names, stages, NULLs and odd numbers."""
    now = now_of(db)
    for i, name in enumerate(AWKWARD):
        stage = None if i % 3 == 0 else f'stage "{i}"\\\n'
        for k, status in enumerate(("FINISHED", "FAILED", "FINISHED", "CANCELLED", "FINISHED")):
            start = now - timedelta(hours=10 - k, seconds=i)
            ended = insert_run(
                db,
                task_name=name,
                task_stage=stage,
                execution_status=status,
                execution_start=start,
                execution_end=start + timedelta(seconds=60 * (k + 1) + i / 7),
            )
        # The latest ended run's totals, and work counts named as awkwardly as the tasks.
        db.execute(
            "UPDATE pipeline_status SET cpu_seconds = %s, disk_read_bytes = %s,"
            " disk_write_bytes = %s, tcp_received_bytes = %s, tcp_sent_bytes = %s,"
            " peak_memory_mb = %s, counts = %s WHERE run_id = %s",
            (
                i / 3,
                None if i == 2 else 2**40 + i,
                i,
                10**i,
                0,
                64 * i,
                Jsonb({n[:200]: j * 10**i for j, n in enumerate(AWKWARD) if n} if i else {}),
                ended,
            ),
        )
        running = insert_run(
            db,
            task_name=name,
            task_stage=stage,
            execution_start=now - timedelta(minutes=5 + i),
            last_update=now - timedelta(seconds=i),
            last_progress=None if i % 2 else now - timedelta(seconds=3 * i),
            overall_percent_complete=None if i == 1 else (i * 12.5) % 100,
            subtask_percent_complete=None if i % 2 else 33.3,
            subtask_items_total=7 if i % 2 else None,
            subtask_items_complete=9 if i % 4 == 1 else 3,
            current_subtask=None if i == 2 else i % 4,
            total_subtasks=None if i == 2 else 4,
            subtask_status="COMPLETED" if i % 3 else "RUNNING",
            memory_mb=None if i == 3 else 100 * i,
            cpu_percent=0 if i == 4 else 12.5 * i,
        )
        if i != 5:  # one running run has no sample yet
            for seconds, scale in ((-30, 1), (-20, 2), (-10, 2 + i)):
                db.execute(
                    "INSERT INTO pipeline_run_sample (run_id, sampled_at, disk_read_bytes,"
                    " disk_write_bytes, tcp_received_bytes, tcp_sent_bytes, db_connections,"
                    " open_fds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        running,
                        now + timedelta(seconds=seconds, microseconds=i),
                        scale * 3 * 2**20,
                        None if i == 1 else scale * 7,
                        scale * 10**i // 3,
                        scale,
                        i % 4,
                        10 + i,
                    ),
                )
    # A second running run (sums), a run that starts in the future, a STARTED one.
    insert_run(
        db, task_name=AWKWARD[0], task_stage=None, memory_mb=7, cpu_percent=50, execution_start=now
    )
    insert_run(db, task_name="future", execution_start=now + timedelta(days=2))
    insert_run(db, task_name="just started", execution_status="STARTED", execution_start=now)
    declared_tasks.sync(
        db,
        [
            DeclaredTask(
                name=AWKWARD[4],
                stage="DAILY",
                schedule="*/10 * * * *",
                start_grace=timedelta(minutes=3),
                max_duration=timedelta(hours=2),
                depends_on=(AWKWARD[0], "never ran"),
                stall_after=timedelta(minutes=20),
            ),
            DeclaredTask(name="never ran", stage="STATIC", schedule="0 2 * * *"),
            DeclaredTask(name=AWKWARD[0], stage="PREREQ"),
        ],
    )
    return db


def test_a_scrape_writes_what_prometheus_client_writes_for_the_same_snapshot(seeded, db_target):
    with registered(db_target) as (_, collector):
        text = assert_same_exposition(list(collector.collect()))
    # Every rule had something to say about these rows.
    for family in parse_text(text):
        if family.name.startswith("pipetrack_task_"):
            assert family.samples, family.name


def test_later_scrapes_write_changed_rows_not_what_the_cache_kept(seeded, db_target):
    with registered(db_target) as (_, collector):
        first = assert_same_exposition(list(collector.collect()))
        now = now_of(seeded)
        # A task moves to another stage, a run finishes, another reports new progress.
        seeded.execute(
            "UPDATE pipeline_status SET task_stage = 'MOVED' WHERE task_name = %s", (AWKWARD[1],)
        )
        seeded.execute(
            "UPDATE pipeline_status SET execution_status = 'FINISHED', execution_end = %s"
            " WHERE task_name = %s AND execution_status = 'RUNNING'",
            (now, AWKWARD[2]),
        )
        seeded.execute(
            "UPDATE pipeline_status SET overall_percent_complete = 99.5"
            " WHERE task_name = %s AND execution_status = 'RUNNING'",
            (AWKWARD[5],),
        )
        second = assert_same_exposition(list(collector.collect()))
        third = assert_same_exposition(list(collector.collect()))
    assert second != first
    assert 'task_stage="MOVED"' in second
    assert 'task_stage="stage \\"1\\"\\\\\\n"' in first
    assert 'task_stage="stage \\"1\\"\\\\\\n"' not in second
    assert " 0.995\n" in second
    # Nothing changed between the last two reads but the time the read took.
    assert task_lines(third) == task_lines(second)


def test_the_families_still_carry_their_samples_for_prometheus_client(seeded, db_target):
    with registered(db_target) as (registry, _):
        labels = {"task": AWKWARD[0], "task_stage": "UNKNOWN"}
        assert registry.get_sample_value("pipetrack_task_running_runs", labels) == 2
        assert registry.get_sample_value("pipetrack_task_memory_bytes", labels) == (
            (0 + 7) * 1024 * 1024
        )
        assert (
            registry.get_sample_value("pipetrack_task_runs_total", {**labels, "status": "FINISHED"})
            == 3
        )
        assert registry.get_sample_value(
            "pipetrack_task_recent_duration_seconds", {**labels, "quantile": "0.5"}
        ) == pytest.approx(180.0)


# -- snapshots built by hand: numbers of every shape ------------------------------------------
ODD_NUMBERS = [
    -0.0,
    0.0,
    0,
    1,
    -5.0,
    1e-7,
    0.1 + 0.2,
    123456.5,
    1234567.5,
    1777777777.123456,
    1.5e16,
    math.inf,
    -math.inf,
    math.nan,
    -1e300,
]


def odd_snapshot(shift: float = 0.0) -> ScrapeSnapshot:
    latest = tuple(
        LatestRun(f"task {i}", None if i % 2 else "S", "FAILED", value + shift)
        for i, value in enumerate(ODD_NUMBERS)
    )
    running = tuple(
        RunningRun(
            f"task {i}",
            value,
            value,
            None,
            None,
            value,
            None,
            None,
            None,
            None,
            None,
            None,
            value,
        )
        for i, value in enumerate(ODD_NUMBERS)
    )
    ended = tuple(
        LastEnded(f"task {i}", "FINISHED", 0.0, value, (value, -0.0, 2.0))
        for i, value in enumerate(ODD_NUMBERS)
    )
    outcomes = tuple((f"task {i}", "FAILED", i) for i in range(len(ODD_NUMBERS)))
    return ScrapeSnapshot(1e9, latest, running, outcomes, ended)


def test_numbers_of_every_shape_are_written_as_prometheus_client_writes_them():
    cache = LineCache()
    for snapshot in (odd_snapshot(), odd_snapshot(), odd_snapshot(shift=0.5)):
        # The second round reads numbers (and -0.0 after 0.0) from the cache.
        assert_same_exposition(render_lines(snapshot, cache))
    # And the lines are the reference families' (render) lines, whatever the cache held.
    text, _ = choose(TEXT_ACCEPT)
    assert text(Fixed(render_lines(odd_snapshot(), cache))) == text(Fixed(render(odd_snapshot())))


def test_the_cache_keeps_the_last_scrapes_tasks_and_a_bounded_set_of_numbers():
    cache = LineCache()
    render_lines(odd_snapshot(), cache)
    assert {task for task, _ in cache.keys} == {f"task {i}" for i in range(len(ODD_NUMBERS))}
    gone = ScrapeSnapshot(1e9, (LatestRun("only one", "S", "RUNNING", 5.0),), (), (), ())
    render_lines(gone, cache)
    assert set(cache.keys) == {("only one", "S")}
    for shift in range(400):
        render_lines(odd_snapshot(shift=shift * 1000.0), cache)
        assert len(cache.numbers) <= cache.limit + 100


def test_a_scrape_writes_the_lines_without_building_samples(seeded, db_target):
    with registered(db_target) as (registry, _):
        for accept in (TEXT_ACCEPT, OPENMETRICS_ACCEPT):
            families = list(registry.collect())
            encode, _ = choose(accept)
            encode(Fixed(families))
            written = [f for f in families if isinstance(f, WrittenFamily)]
            assert written
            # The reference path runs only when something reads the samples.
            assert all(f._built is None for f in written)
