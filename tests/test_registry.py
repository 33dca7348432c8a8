"""Declared tasks: the TOML file, its validation, the sync, and cron evaluation."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tracker._model.stage import stage_of
from tracker._ops.durations import format_duration, parse_duration
from tracker._ops.registry import DeclaredTask, declared, load, sync
from tracker.errors import ConfigurationError

TASKS = """
[defaults]
start_grace = "20m"

[tasks.PREREQ_01_download]
schedule = "30 1 * * *"

[tasks.DAILY_01_BDC_Locations]
schedule = "0 2 * * *"
max_duration = "3h"
depends_on = ["PREREQ_01_download"]
description = "Locations from the BDC"

[tasks.ANNUAL_DEC_01_rollover]
schedule = "0 6 1 12 *"
timezone = "America/New_York"
start_grace = "2h"

[tasks.adhoc_cleanup]
"""


@pytest.fixture
def tasks_file(tmp_path):
    path = tmp_path / "tasks.toml"
    path.write_text(TASKS)
    return path


def test_a_task_file_loads_with_defaults_and_derived_stages(tasks_file):
    tasks = {t.name: t for t in load(tasks_file)}
    assert tasks["DAILY_01_BDC_Locations"] == DeclaredTask(
        name="DAILY_01_BDC_Locations",
        stage="DAILY",
        schedule="0 2 * * *",
        start_grace=timedelta(minutes=20),
        max_duration=timedelta(hours=3),
        depends_on=("PREREQ_01_download",),
        description="Locations from the BDC",
    )
    assert tasks["ANNUAL_DEC_01_rollover"].start_grace == timedelta(hours=2)
    assert tasks["adhoc_cleanup"].stage == "UNKNOWN"
    assert tasks["adhoc_cleanup"].schedule is None


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ('[tasks.X]\nschedule = "every day"', "is not cron"),
        ('[tasks.X]\nschedule = "0 2 * * *"\ntimezone = "Mars/Olympus"', "unknown time zone"),
        ('[tasks.X]\nmax_duration = "3 hours"', "is not a duration"),
        ('[tasks.X]\nmax_duration = "0s"', "must be positive"),
        ('[tasks.X]\ndepends_on = ["Y"]', "undeclared task"),
        ('[tasks.X]\ndepends_on = ["X"]', "cannot depend on itself"),
        ('[tasks.X]\ndepends_on = "Y"', "must be a list"),
        ("[tasks.X]\nschedule = 5", "must be a string"),
        ('[tasks.X]\ncron = "0 2 * * *"', "unknown key"),
        ('[task.X]\nschedule = "0 2 * * *"', "unknown section"),
        ('[defaults]\nschedule = "0 2 * * *"', "[defaults] takes only"),
        ("[tasks.X\n", "not valid TOML"),
        (f'[tasks."{"T" * 256}"]', "1 to 255 characters"),
        ('[tasks."A\\u0000B"]', "1 to 255 characters"),
    ],
)
def test_a_wrong_task_file_is_refused_saying_where(tmp_path, body, complaint):
    path = tmp_path / "tasks.toml"
    path.write_text(body)
    with pytest.raises(ConfigurationError) as caught:
        load(path)
    assert complaint in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_sync_replaces_the_table_and_reports_what_changed(db, tasks_file, tmp_path):
    first = sync(db, load(tasks_file))
    assert sorted(first.added) == sorted(t.name for t in load(tasks_file))
    assert (first.updated, first.removed) == ((), ())
    assert declared(db) == sorted(load(tasks_file), key=lambda t: t.name)

    smaller = tmp_path / "smaller.toml"
    smaller.write_text(
        '[defaults]\nstart_grace = "20m"\n'
        '[tasks.PREREQ_01_download]\nschedule = "45 1 * * *"\n[tasks.adhoc_cleanup]\n'
    )
    second = sync(db, load(smaller))
    assert second.added == ()
    assert second.updated == ("PREREQ_01_download",)
    assert sorted(second.removed) == ["ANNUAL_DEC_01_rollover", "DAILY_01_BDC_Locations"]
    assert sync(db, load(smaller)) == type(second)((), (), ())


def test_cron_schedules_give_previous_and_next_starts_in_their_time_zone():
    daily = DeclaredTask(name="DAILY_x", stage="DAILY", schedule="0 2 * * *")
    at = datetime(2026, 3, 14, 2, 0, tzinfo=timezone.utc)
    assert daily.previous_start(at) == at
    assert daily.next_start(at) == at + timedelta(days=1)
    assert daily.previous_start(at - timedelta(seconds=1)) == at - timedelta(days=1)
    yearly = DeclaredTask(
        name="ANNUAL_DEC_x", stage="ANNUAL_DEC", schedule="0 6 1 12 *", timezone="America/New_York"
    )
    assert yearly.next_start(at) == datetime(2026, 12, 1, 11, 0, tzinfo=timezone.utc)
    assert DeclaredTask(name="x", stage="UNKNOWN").next_start(at) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("3h", 10800), ("30d", 2592000), ("2w", 1209600), ("1h30m", 5400)],
)
def test_durations_parse_and_format_back(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "-5m", "1.5h", "3 hours", "1y"])
def test_a_malformed_duration_is_refused(text):
    with pytest.raises(ConfigurationError, match="not a duration"):
        parse_duration(text, what="--older-than")


@pytest.mark.parametrize(
    ("name", "stage"),
    [
        ("DAILY_01_BDC_Locations", "DAILY"),
        ("daily_02_x", "DAILY"),
        ("ANNUAL_DEC_01_x", "ANNUAL_DEC"),
        ("ANNUAL_SEPT_01", "ANNUAL_SEPT"),
        ("ANNUAL_JUNE_3", "ANNUAL_JUNE"),
        ("PERIODIC_weekly", "PERIODIC"),
        ("PREREQ_01", "PREREQ"),
        ("STATIC_lookup", "STATIC"),
        ("DAILYREPORT", "UNKNOWN"),
        ("ANNUAL_MAY_01", "UNKNOWN"),
        ("", "UNKNOWN"),
    ],
)
def test_the_stage_comes_from_the_name_prefix(name, stage):
    assert stage_of(name) == stage


def pipetrack(*args):
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args], capture_output=True, text=True, check=False
    )


def test_tasks_sync_and_list_commands(db_dsn, tasks_file):
    synced = pipetrack("tasks", "sync", str(tasks_file), "--dsn", db_dsn)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.strip() == "4 tasks declared: 4 added, 0 updated, 0 removed"
    listed = pipetrack("tasks", "list", "--dsn", db_dsn)
    assert listed.returncode == 0, listed.stderr
    assert "DAILY_01_BDC_Locations" in listed.stdout
    assert "0 2 * * *" in listed.stdout


def test_archive_and_reap_commands_report_what_they_did(db_dsn):
    archived = pipetrack(
        "archive", "--older-than", "30d", "--drop-partitions-older-than", "400d", "--dsn", db_dsn
    )
    assert archived.returncode == 0, archived.stderr
    assert archived.stdout.splitlines() == [
        "archived 0 runs, 0 subtasks, 0 samples, in 0 batches",
        "dropped 0 partitions",
    ]
    reaped = pipetrack("reap", "--dsn", db_dsn)
    assert (reaped.returncode, reaped.stdout.strip()) == (0, "reaped 0 lost runs")


def test_a_bad_age_is_a_usage_error(db_dsn):
    result = pipetrack("archive", "--older-than", "a month", "--dsn", db_dsn)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("pipetrack: error: --older-than:")
