"""The R helper (tracker/helpers/pipetrack.R) for real: Rscript inside and outside `pipetrack run`."""

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
# Read at import: the suite's isolated environment drops PIPETRACK_* variables before tests run.
REQUIRE_R = os.environ.get("PIPETRACK_REQUIRE_R") == "1"  # CI sets it: a missing R fails
# Without the site library, R cannot find glue (Debian's r-cran-glue installs there).
WITHOUT_GLUE = {"R_LIBS_SITE": "/nonexistent", "R_LIBS_USER": "/nonexistent"}


@pytest.fixture(scope="module")
def rscript():
    found = shutil.which("Rscript")
    if found is None:
        message = "Rscript is not installed (apt-get install r-base-core r-cran-glue)"
        if REQUIRE_R:
            pytest.fail(message)
        pytest.skip(message)
    return found


def helper():
    done = subprocess.run([*PIPETRACK, "r-helper"], capture_output=True, check=True)
    return done.stdout.decode().strip()


def glue_installed(rscript, env):
    probe = subprocess.run(
        [rscript, "-e", "cat(requireNamespace('glue', quietly = TRUE))"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    )
    return probe.stdout.strip() == b"TRUE"


def test_r_helper_command_prints_the_shipped_file():
    path = Path(helper())
    assert path.name == "pipetrack.R"
    assert (
        "track_init <- function(script_name, total_tasks = NULL, category = NULL)"
        in path.read_text()
    )


@pytest.mark.parametrize("glue", ["with glue", "without glue"])
def test_the_original_design_example_of_56_states_yields_the_expected_rows(
    rscript, db, db_dsn, glue
):
    extra = {} if glue == "with glue" else WITHOUT_GLUE
    if glue == "with glue" and not glue_installed(rscript, extra):
        message = "the R package glue is not installed (Debian: r-cran-glue)"
        if REQUIRE_R:
            pytest.fail(message)
        pytest.skip(message)
    assert glue_installed(rscript, extra) == (glue == "with glue")
    done = subprocess.run(
        [
            *PIPETRACK,
            "run",
            "--task",
            "DAILY_01_BDC_Locations",
            "--",
            rscript,
            str(SCRIPTS / "wrap_states.R"),
            helper(),
        ],
        env={**os.environ, "PIPETRACK_DSN": db_dsn, **extra},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_id = db.execute("SELECT run_id FROM pipeline_status").fetchone()[0]
    # Only the script's own output is left; every protocol line was consumed.
    assert done.stdout == f"run id: {run_id} \ndone\n".encode()
    row = db.execute(
        "SELECT execution_status, exit_code, task_stage, task_type, total_subtasks, "
        "current_subtask, overall_percent_complete, overall_progress_message, script_file "
        "FROM pipeline_status"
    ).fetchone()
    assert row == (
        "FINISHED",
        0,
        "DAILY",
        "R",
        112,
        112,
        100,
        "Successfully processed 56 states",
        "wrap_states.R",
    )
    rows = db.execute(
        "SELECT subtask_index, parent_index, subtask_name, subtask_status, items_total, "
        "items_complete, message FROM pipeline_subtask ORDER BY subtask_index"
    ).fetchall()
    expected = [(1, None, "processing state location data", "COMPLETED", None, 0, None)]
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
                f"Writing {state}: {i} rows",
            )
        )
    assert rows == expected


def test_an_r_error_reported_with_track_error_fails_the_run_with_that_error(rscript, db, db_dsn):
    done = subprocess.run(
        [
            *PIPETRACK,
            "run",
            "--task",
            "ANNUAL_DEC_07_Fails",
            "--",
            rscript,
            str(SCRIPTS / "wrap_r_error.R"),
            helper(),
        ],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert b"input.csv has 0 rows" in done.stderr
    row = db.execute(
        "SELECT execution_status, exit_code, error_message, error_detail, task_stage, "
        "total_subtasks FROM pipeline_status"
    ).fetchone()
    assert row == ("FAILED", 1, "input.csv has 0 rows", "while reading input.csv", "ANNUAL_DEC", 2)
    assert db.execute("SELECT subtask_name, subtask_status FROM pipeline_subtask").fetchall() == [
        ("reading input.csv", "FAILED")
    ]


def test_outside_pipetrack_run_the_r_helper_does_nothing(rscript):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRACK_")}
    done = subprocess.run(
        [rscript, str(SCRIPTS / "wrap_states.R"), helper()],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"run id: none \ndone\n"
    assert b"pipetrack" not in done.stderr
