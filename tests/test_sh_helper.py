"""The shell helper (tracker/helpers/pipetrack.sh) for real, in bash and dash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.design_example import STATES

SCRIPTS = Path(__file__).parent / "scripts"
PIPETRACK = [sys.executable, "-m", "tracker"]


def helper():
    done = subprocess.run([*PIPETRACK, "sh-helper"], capture_output=True, check=True)
    return done.stdout.decode().strip()


def shell(name):
    found = shutil.which(name)
    if found is None:
        if os.environ.get("PIPETRACK_REQUIRE_SHELLS") == "1":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return found


def test_sh_helper_command_prints_the_shipped_file():
    path = Path(helper())
    assert path.name == "pipetrack.sh"
    assert "track_task_progress()" in path.read_text()


@pytest.mark.parametrize("name", ["bash", "dash", "sh"])
def test_the_56_states_example_in_shell_yields_the_expected_rows(db, db_dsn, name):
    done = subprocess.run(
        [
            *PIPETRACK,
            "run",
            "--task",
            "DAILY_01_BDC_Locations",
            "--",
            shell(name),
            str(SCRIPTS / "wrap_states.sh"),
            helper(),
        ],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"done\n"
    assert done.stderr == b""
    row = db.execute(
        "SELECT execution_status, exit_code, task_type, total_subtasks, current_subtask, "
        "overall_percent_complete, overall_progress_message FROM pipeline_status"
    ).fetchone()
    assert row == ("FINISHED", 0, "sh", 112, 112, 100, "Successfully processed 56 states")
    rows = db.execute(
        "SELECT subtask_index, parent_index, subtask_name, subtask_status, items_total, "
        "items_complete, message FROM pipeline_subtask ORDER BY subtask_index"
    ).fetchall()
    expected = [
        (
            1,
            None,
            "processing state location data",
            "COMPLETED",
            None,
            0,
            "all states: done, really",
        )
    ]
    for i, state in enumerate(STATES, start=1):
        expected.append((2 * i, 1, f"loading file for state '{state}'", "COMPLETED", None, 0, None))
        expected.append(
            (
                2 * i + 1,
                1,
                "writing data to database",
                "COMPLETED",
                56,
                i,
                f"Writing {state}: {i} rows, 100% sure",
            )
        )
    assert rows == expected


def test_shell_values_with_protocol_characters_arrive_intact(db, db_dsn, tmp_path):
    script = tmp_path / "odd.sh"
    script.write_text(
        'set -eu\n. "$1"\n'
        "genter 'a: b, c %0A 50%' 3\n"
        'track_task_progress 2 3 "two\nlines"\n'
        "gexit FAILED\n"
        "track_status status=RUNNING overall_percent=42.5 overall_message='x, y: z'\n"
        "track_error 'it: broke, badly' \"detail 1\ndetail 2\"\n"
    )
    done = subprocess.run(
        [*PIPETRACK, "run", "--task", "odd", "--", shell("dash"), str(script), helper()],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    row = db.execute(
        "SELECT execution_status, exit_code, error_message, error_detail, overall_progress_message "
        "FROM pipeline_status"
    ).fetchone()
    assert row == ("FAILED", 0, "it: broke, badly", "detail 1\ndetail 2", "x, y: z")
    assert db.execute(
        "SELECT subtask_name, subtask_status, items_total, items_complete, message FROM pipeline_subtask"
    ).fetchall() == [("a: b, c %0A 50%", "FAILED", 3, 2, "two\nlines")]


@pytest.mark.parametrize("name", ["bash", "dash"])
def test_outside_pipetrack_run_the_shell_helper_does_nothing(name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRACK_")}
    done = subprocess.run(
        [shell(name), str(SCRIPTS / "wrap_states.sh"), helper()],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert (done.stdout, done.stderr) == (b"done\n", b"")
