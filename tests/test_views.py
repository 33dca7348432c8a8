"""`pipetrack status | top | history | show`: seeded runs rendered as text and JSON."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tracker.cli import main

RUNNING = uuid.UUID("11111111-1111-4111-8111-111111111111")
FAILED = uuid.UUID("22222222-2222-4222-8222-222222222222")
OLD = uuid.UUID("33333333-3333-4333-8333-333333333333")
OTHER = uuid.UUID("44444444-4444-4444-8444-444444444444")

_INSERT = """
INSERT INTO pipeline_status (run_id, task_name, task_stage, task_type, hostname, process_id,
    execution_start, execution_end, execution_status, total_subtasks, current_subtask,
    subtask_name, subtask_status, overall_percent_complete, subtask_percent_complete,
    subtask_items_total, subtask_items_complete, exit_code, error_message, error_detail,
    overall_progress_message, memory_mb, log_path)
VALUES (%s, %s, %s, 'R', %s, 4242, {start}, {end}, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
    %s, %s, %s, %s)
"""


@pytest.fixture
def seeded(db):
    def insert(start, end, *values):
        db.execute(_INSERT.format(start=start, end=end), values)

    # The task's older run: finished in exactly 1h02m03s.
    insert(
        "'2026-01-05 02:00:00+00'",
        "'2026-01-05 03:02:03+00'",
        OLD,
        "DAILY_01_BDC_Locations",
        "DAILY",
        "etl-01",
        "FINISHED",
        112,
        112,
        "writing data to database",
        "COMPLETED",
        100,
        100,
        56,
        56,
        0,
        None,
        None,
        "Successfully processed 56 states",
        812,
        "/var/log/d1.log",
    )
    # Its newest run, 25 % done after 10 minutes.
    insert(
        "now() - interval '10 minutes'",
        "NULL",
        RUNNING,
        "DAILY_01_BDC_Locations",
        "DAILY",
        "etl-01",
        "RUNNING",
        112,
        28,
        "Loading Delaware file",
        "RUNNING",
        25,
        37.5,
        8,
        3,
        None,
        None,
        None,
        None,
        640,
        None,
    )
    # Another task, failed after 45 s.
    insert(
        "'2026-01-06 04:00:00+00'",
        "'2026-01-06 04:00:45+00'",
        FAILED,
        "ANNUAL_DEC_07_Roads",
        "ANNUAL_DEC",
        "etl-02",
        "FAILED",
        4,
        2,
        "joining roads_hex",
        "FAILED",
        37.5,
        None,
        None,
        None,
        1,
        "exited with code 1: Error in join: out of memory",
        "line 1\nline 2",
        None,
        None,
        None,
    )
    db.execute(
        "INSERT INTO pipeline_subtask (run_id, subtask_index, parent_index, subtask_name, "
        "subtask_status, started_at, ended_at, items_total, items_complete) VALUES "
        "(%s, 1, NULL, 'reading roads', 'COMPLETED', '2026-01-06 04:00:00+00', "
        "'2026-01-06 04:00:30+00', 3, 3), "
        "(%s, 2, 1, 'joining roads_hex', 'FAILED', '2026-01-06 04:00:30+00', "
        "'2026-01-06 04:00:45+00', NULL, 0)",
        (FAILED, FAILED),
    )
    return db


def cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr().out
    return code, out


def test_status_shows_the_latest_run_of_each_task_in_80_columns(seeded, db_dsn, capsys):
    code, out = cli(capsys, "status", "--dsn", db_dsn)
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "\033[" not in out  # no colour when not a terminal
    assert lines[0].split() == ["TASK", "STATUS", "OVERALL", "ELAPSED", "ETA", "HOST"]
    assert lines[1].split() == ["ANNUAL_DEC_07_Roads", "FAILED", "37.5%", "45s", "-", "etl-02"]
    assert lines[2] == "  ! exited with code 1: Error in join: out of memory"
    task, status, overall, elapsed, eta, host = lines[3].split()
    assert (task, status, overall, host) == ("DAILY_01_BDC_Locations", "RUNNING", "25.0%", "etl-01")
    assert re.fullmatch(r"10m0\ds", elapsed)
    # Its own rate says 30 min are left (25 % in 10 min); the history (one FINISHED run of
    # 3723 s) weighs 75 %: 0.25 * 2400 + 0.75 * 3723 = 3392 s in all, 2792 s left.
    assert re.fullmatch(r"46m[23]\ds", eta)
    assert lines[4] == "  └ 28/112 Loading Delaware file (3/8, 37.5%)"
    assert len(lines) == 5


def test_status_json_gives_scripts_every_column_and_the_eta(seeded, db_dsn, capsys):
    code, out = cli(capsys, "status", "--json", "--dsn", db_dsn)
    assert code == 0
    rows = json.loads(out)
    assert [r["task_name"] for r in rows] == ["ANNUAL_DEC_07_Roads", "DAILY_01_BDC_Locations"]
    running = rows[1]
    assert running["run_id"] == str(RUNNING)
    assert running["overall_percent_complete"] == 25.0
    assert 2780 <= running["eta_seconds"] <= 2800
    assert running["condition"] is None
    assert running["recent_durations"] == [3723.0]
    assert rows[0]["eta_seconds"] is None


def test_top_renders_progress_bars_and_stops_after_count(seeded, db_dsn, capsys):
    code, out = cli(capsys, "top", "--count", "1", "--dsn", db_dsn)
    assert code == 0
    assert "[##########" + "." * 30 + "]" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_history_lists_a_tasks_runs_newest_first_with_durations(seeded, db_dsn, capsys):
    code, out = cli(capsys, "history", "DAILY_01_BDC_Locations", "--dsn", db_dsn)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STARTED", "STATUS", "DURATION", "EXIT", "RESULT"]
    assert lines[1].split()[2] == "RUNNING"
    assert lines[2].split()[2:] == [
        "FINISHED",
        "1h02m",
        "0",
        "Successfully",
        "processed",
        "56",
        "states",
    ]
    assert len(lines) == 3
    code, out = cli(
        capsys, "history", "DAILY_01_BDC_Locations", "--json", "--limit", "1", "--dsn", db_dsn
    )
    assert [r["run_id"] for r in json.loads(out)] == [str(RUNNING)]


def test_history_of_an_unknown_task_says_so(seeded, db_dsn, capsys):
    assert cli(capsys, "history", "NOPE", "--dsn", db_dsn) == (0, "no runs of this task\n")


def test_show_prints_the_whole_record_and_its_subtasks(seeded, db_dsn, capsys):
    code, out = cli(capsys, "show", str(FAILED), "--dsn", db_dsn)
    assert code == 0
    lines = out.splitlines()
    assert f"run_id:                   {FAILED}" in lines
    assert "execution_status:         FAILED" in lines
    assert "exit_code:                1" in lines
    assert lines[lines.index("error_detail:") + 1 : lines.index("error_detail:") + 3] == [
        "  line 1",
        "  line 2",
    ]
    assert "duration:                 45s" in lines
    assert lines[-3].split() == ["#", "STATUS", "TIME", "ITEMS", "SUBTASK"]
    assert lines[-2].split() == ["1", "COMPLETED", "30s", "3/3", "reading", "roads"]
    # a nested subtask is indented under its parent
    assert lines[-1] == "   2 FAILED        15s                joining roads_hex"
    code, out = cli(capsys, "show", str(FAILED), "--json", "--dsn", db_dsn)
    data = json.loads(out)
    assert data["run"]["error_detail"] == "line 1\nline 2"
    assert [s["subtask_name"] for s in data["subtasks"]] == ["reading roads", "joining roads_hex"]


def test_show_of_a_missing_or_malformed_run_id_fails(seeded, db_dsn, capsys):
    assert main(["show", str(OTHER), "--dsn", db_dsn]) == 1
    assert main(["show", "not-a-uuid", "--dsn", db_dsn]) == 1
    assert "not a run id" in capsys.readouterr().err


def test_status_of_an_empty_database_says_so(db_dsn, capsys):
    assert cli(capsys, "status", "--dsn", db_dsn) == (0, "no runs recorded yet\n")


def test_status_marks_lost_and_stalled_runs_and_says_why(db, db_dsn, capsys):
    db.execute(
        "INSERT INTO pipeline_status (run_id, task_name, task_stage, hostname, process_id,"
        " execution_start, last_update, last_progress, execution_status,"
        " overall_percent_complete) VALUES"
        " (gen_random_uuid(), 'DAILY_01_lost', 'DAILY', 'etl-01', 1, now() - interval '1 hour',"
        "  now() - interval '5 minutes', now() - interval '5 minutes', 'RUNNING', 40),"
        " (gen_random_uuid(), 'DAILY_02_stalled', 'DAILY', 'etl-01', 2,"
        "  now() - interval '2 hours', now(), now() - interval '45 minutes', 'RUNNING', 40),"
        " (gen_random_uuid(), 'DAILY_03_fine', 'DAILY', 'etl-01', 3, now() - interval '1 hour',"
        "  now(), now(), 'RUNNING', 40)"
    )
    code, out = cli(capsys, "status", "--dsn", db_dsn)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["DAILY_01_lost", "LOST"]
    assert re.fullmatch(r"  ! lost: no heartbeat for 5m0\ds", lines[2])
    assert lines[3].split()[:2] == ["DAILY_02_stalled", "STALLED"]
    assert re.fullmatch(r"  ! stalled: no progress for 45m0\ds", lines[4])
    assert lines[5].split()[:2] == ["DAILY_03_fine", "RUNNING"]
    assert len(lines) == 6
    code, out = cli(capsys, "status", "--json", "--dsn", db_dsn)
    assert [r["condition"] for r in json.loads(out)] == ["LOST", "STALLED", None]


def test_the_eta_follows_the_tasks_subtask_curve(db, db_dsn, capsys):
    # Two past runs of 1000 s whose first of two subtasks took 900 s: a run half done (one
    # subtask of two) after 450 s is 90 % of the way in time, not 50 %.
    for days in (1, 2):
        run = uuid.uuid4()
        db.execute(
            "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id,"
            " execution_start, execution_end, execution_status, total_subtasks) VALUES"
            " (%s, 'DAILY_05_shape', 'h', 1, now() - %s * interval '1 day',"
            "  now() - %s * interval '1 day' + interval '1000 seconds', 'FINISHED', 2)",
            (run, days, days),
        )
        db.execute(
            "INSERT INTO pipeline_subtask (run_id, subtask_index, subtask_name, subtask_status,"
            " started_at, ended_at) SELECT %s, i, 'step ' || i, 'COMPLETED',"
            " execution_start + (i - 1) * interval '900 seconds',"
            " execution_start + CASE WHEN i = 1 THEN interval '900 seconds'"
            "                   ELSE interval '1000 seconds' END"
            " FROM pipeline_status, generate_series(1, 2) AS i WHERE run_id = %s",
            (run, run),
        )
    db.execute(
        "INSERT INTO pipeline_status (run_id, task_name, hostname, process_id, execution_start,"
        " execution_status, total_subtasks, current_subtask, overall_percent_complete,"
        " last_progress) VALUES (gen_random_uuid(), 'DAILY_05_shape', 'h', 1,"
        " now() - interval '450 seconds', 'RUNNING', 2, 2, 50, now())"
    )
    code, out = cli(capsys, "status", "--json", "--dsn", db_dsn)
    assert code == 0
    running = json.loads(out)[0]
    # Own estimate 450 / 0.9 = 500 s; history 1000 s; blended 0.5 * 500 + 0.5 * 1000 = 750 s.
    assert 295 <= running["eta_seconds"] <= 302
