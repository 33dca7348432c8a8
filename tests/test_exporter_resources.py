"""The resource families: running runs' current rates from their last two samples, and the
latest ended run's totals and work counts, from rows seeded by SQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from psycopg.types.json import Jsonb

from exporter import _metrics as m
from exporter._queries import EndedTotals, ScrapeSnapshot
from exporter._render import render
from tests.test_exporter_support import T0, finish_run, insert_run, parse, registered
from tracker._ops.archive import archive

A = "DAILY_01_download"
B = "DAILY_02_quiet"
MIB = 1024 * 1024


def sample(db, run_id, at, **figures):
    row = {"run_id": run_id, "sampled_at": at, **figures}
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO pipeline_run_sample ({names}) VALUES ({marks})", list(row.values()))


def values(db_target):
    with registered(db_target) as (registry, _):
        return parse(registry)


def series(scraped, name, task=A, stage="DAILY", **extra):
    labels = tuple(sorted({"task": task, "task_stage": stage, **extra}.items()))
    return scraped.get((name, labels))


def test_current_rates_come_from_the_last_two_samples_summed_over_running_runs(db, db_target):
    first = insert_run(db, task_name=A, execution_start=T0)
    second = insert_run(db, task_name=A, execution_start=T0 + timedelta(minutes=1))
    # An old sample the rates must not look at, then the two newest, 10 s apart.
    sample(db, first, T0, disk_read_bytes=0, disk_write_bytes=0, tcp_received_bytes=0)
    sample(
        db, first, T0 + timedelta(seconds=50),
        disk_read_bytes=100 * MIB, disk_write_bytes=10 * MIB, tcp_received_bytes=0,
        tcp_sent_bytes=0, db_connections=3, open_fds=20,
    )  # fmt: skip
    sample(
        db, first, T0 + timedelta(seconds=60),
        disk_read_bytes=120 * MIB, disk_write_bytes=30 * MIB, tcp_received_bytes=50 * MIB,
        tcp_sent_bytes=1000, db_connections=2, open_fds=25,
    )  # fmt: skip
    # The second run: 60 s apart, and a figure it cannot measure.
    sample(db, second, T0 + timedelta(minutes=1), disk_write_bytes=0, tcp_received_bytes=0)
    sample(
        db, second, T0 + timedelta(minutes=2), disk_write_bytes=60 * MIB,
        tcp_received_bytes=6 * MIB, db_connections=1, open_fds=5,
    )  # fmt: skip

    scraped = values(db_target)

    assert series(scraped, "pipetrack_task_disk_read_bytes_per_second") == 2 * MIB
    assert series(scraped, "pipetrack_task_disk_write_bytes_per_second") == 2 * MIB + 1 * MIB
    assert series(scraped, "pipetrack_task_tcp_receive_bytes_per_second") == 5 * MIB + MIB / 10
    assert series(scraped, "pipetrack_task_tcp_send_bytes_per_second") == 100
    assert series(scraped, "pipetrack_task_db_connections") == 3
    assert series(scraped, "pipetrack_task_open_file_descriptors") == 30


def test_no_rate_without_two_samples_and_none_for_ended_runs(db, db_target):
    one = insert_run(db, task_name=A, execution_start=T0)
    sample(db, one, T0, disk_read_bytes=5, db_connections=1, open_fds=4)
    ended = insert_run(db, task_name=B, execution_start=T0)
    sample(db, ended, T0, disk_read_bytes=0)
    sample(db, ended, T0 + timedelta(seconds=10), disk_read_bytes=10)
    finish_run(db, ended, "FINISHED", T0 + timedelta(seconds=11))

    scraped = values(db_target)

    assert series(scraped, "pipetrack_task_disk_read_bytes_per_second") is None
    assert series(scraped, "pipetrack_task_db_connections") == 1  # the newest sample alone
    assert series(scraped, "pipetrack_task_open_file_descriptors") == 4
    names = {name for name, labels in scraped if ("task", B) in labels}
    assert not names & {
        "pipetrack_task_disk_read_bytes_per_second",
        "pipetrack_task_db_connections",
    }


def test_a_counter_that_went_down_gives_a_rate_of_zero_not_a_negative_one(db, db_target):
    run_id = insert_run(db, task_name=A, execution_start=T0)
    sample(db, run_id, T0, disk_read_bytes=500)
    sample(db, run_id, T0 + timedelta(seconds=10), disk_read_bytes=100)
    assert series(values(db_target), "pipetrack_task_disk_read_bytes_per_second") == 0


def test_totals_and_counts_are_the_latest_ended_runs_even_while_another_runs(db, db_target):
    older = insert_run(
        db, task_name=A, execution_start=T0 - timedelta(days=2), cpu_seconds=1.0,
        counts=Jsonb({"rows_written": 1}),
    )  # fmt: skip
    finish_run(db, older, "FINISHED", T0 - timedelta(days=2) + timedelta(hours=1))
    latest = insert_run(
        db, task_name=A, execution_start=T0 - timedelta(days=1), cpu_seconds=42.5,
        peak_memory_mb=14 * 1024, disk_read_bytes=7, disk_write_bytes=64 * MIB,
        tcp_received_bytes=20 * MIB, tcp_sent_bytes=0,
        counts=Jsonb({"rows_written": 1_000_000, "files": 3, 'odd "name"\n': 9_007_199_254_740_993}),
    )  # fmt: skip
    finish_run(db, latest, "FAILED", T0 - timedelta(days=1) + timedelta(hours=1))
    insert_run(db, task_name=A, execution_start=T0, cpu_seconds=999.0)  # running: not "ended"

    scraped = values(db_target)

    assert series(scraped, "pipetrack_task_last_ended_run_cpu_seconds") == 42.5
    assert series(scraped, "pipetrack_task_last_ended_run_peak_memory_bytes") == 14 * 1024 * MIB
    assert series(scraped, "pipetrack_task_last_ended_run_disk_read_bytes") == 7
    assert series(scraped, "pipetrack_task_last_ended_run_disk_write_bytes") == 64 * MIB
    assert series(scraped, "pipetrack_task_last_ended_run_tcp_received_bytes") == 20 * MIB
    assert series(scraped, "pipetrack_task_last_ended_run_tcp_sent_bytes") == 0
    work = {
        dict(labels)["count"]: value
        for (name, labels), value in scraped.items()
        if name == "pipetrack_task_last_ended_run_work_counted"
    }
    assert work == {"rows_written": 1e6, "files": 3.0, 'odd "name"\n': 9_007_199_254_740_993.0}


def test_totals_of_an_archived_latest_ended_run_are_still_served(db, db_target):
    start = T0 - timedelta(days=60)
    run_id = insert_run(
        db, task_name=B, execution_start=start, disk_write_bytes=123, counts=Jsonb({"rows": 5})
    )
    finish_run(db, run_id, "FINISHED", start + timedelta(minutes=5))
    db.execute("UPDATE pipeline_status SET execution_end = now() - interval '40 days'")
    assert archive(db, timedelta(days=30)).runs == 1

    scraped = values(db_target)

    assert series(scraped, "pipetrack_task_last_ended_run_disk_write_bytes", task=B) == 123
    assert series(scraped, "pipetrack_task_last_ended_run_work_counted", task=B, count="rows") == 5


def test_a_run_without_totals_has_no_total_series(db, db_target):
    run_id = insert_run(db, task_name=A, execution_start=T0)
    finish_run(db, run_id, "FINISHED", T0 + timedelta(minutes=1))
    scraped = values(db_target)
    assert series(scraped, "pipetrack_task_last_duration_seconds") == 60
    assert not [name for name, _ in scraped if name.startswith("pipetrack_task_last_ended_run_")]


def test_the_count_label_is_bounded_and_only_numbers_are_served():
    # The schema refuses more than 32 names; a row written around it is still bounded here.
    counts = {f"name_{i:02d}": i for i in range(40)} | {"text": "12", "flag": True, "nan": 1e400}
    snapshot = ScrapeSnapshot(
        at=0.0,
        latest=(),
        running=(),
        outcomes=((A, "FINISHED", 1),),
        last_ended=(),
        totals=(EndedTotals(A, None, None, None, None, None, None, counts),),
    )
    family = next(f for f in render(snapshot) if f.name == m.ENDED_WORK.name)
    names = [s.labels["count"] for s in family.samples]
    assert names == [f"name_{i:02d}" for i in range(32)]


@pytest.mark.parametrize("counts", [None, [], "rows", 7])
def test_counts_that_are_not_an_object_give_no_series(counts):
    snapshot = ScrapeSnapshot(
        at=0.0,
        latest=(),
        running=(),
        outcomes=((A, "FINISHED", 1),),
        last_ended=(),
        totals=(EndedTotals(A, 1.0, None, None, None, None, None, counts),),  # type: ignore[arg-type]
    )
    families = {f.name: f for f in render(snapshot)}
    assert families[m.ENDED_WORK.name].samples == []
    assert [s.value for s in families[m.ENDED_CPU.name].samples] == [1.0]
