"""The spool against hostile and broken files: each file is judged on its own, a bad one is moved
aside (``*.corrupt``) with one warning, and nothing in the spool folder can stop a process's own
statuses from reaching the database, hang a command, or be read through a link.

Everything here is real: tracked child processes spool while the database (behind a proxy) is
down and write once it is back; the bad files are real files, FIFOs and links in the real spool
folder; ``pipetrack spool …`` runs as a command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid

import pytest

from tests.tracker_support import SCRIPTS, child_env, proxy_for, snapshot, spool_files
from tracker._record.store import Store

TIMEOUT = 60.0  # generous: a busy machine; a hang shows as a timeout, never as a stuck suite


def status_of(db, run_id):
    row = db.execute(
        "SELECT execution_status FROM pipeline_status WHERE run_id = %s", (run_id,)
    ).fetchone()
    return row[0] if row else None


def pipetrack(*args, env):
    try:
        return subprocess.run(
            [sys.executable, "-m", "tracker", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`pipetrack {' '.join(args)}` hung for {TIMEOUT} s")


def tracked(env, *, umask=None):
    """Run one tracked process (tests/scripts/lifecycle.py normal); returns (run_id, stderr)."""
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPTS / "lifecycle.py"), "normal"],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            umask=-1 if umask is None else umask,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"a tracked process hung for {TIMEOUT} s")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1], done.stderr


def spooled_run(env, spool):
    """A real run spooled while the database is down; returns (run_id, its spool file)."""
    before = set(spool_files(spool))
    run_id, _ = tracked(env)
    (path,) = set(spool_files(spool)) - before
    return run_id, path


def spool_name():
    """A spool file name as the tracker makes them (sorts by creation time)."""
    return f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"


def quarantined(spool):
    return sorted(p.name for p in spool.iterdir() if p.name.endswith(".corrupt"))


def no_traceback(result):
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def spool_text(key, run_id, *, host="h"):
    """A well-formed spool file holding a finished run, as another process would leave it."""
    header = {"pipetrack_spool": 1, "target": key, "host": host, "pid": 1}
    line = json.dumps(snapshot(run_id, 1, "FINISHED").to_json(), default=str)
    return json.dumps(header) + "\n" + line + "\n"


def test_a_non_utf8_file_is_quarantined_and_every_good_status_still_reaches_the_database(
    db_dsn, db, tmp_path
):
    data = tmp_path / "data"
    spool = data / "spool"
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        proxy.stop()
        before, _ = spooled_run(env, spool)
        bad = spool / spool_name()  # between the two good files
        bad.write_bytes(b'{"pipetrack_spool": 1, "target": "\xff\xfe torn"}\n\x80\x81\n')
        after, after_file = spooled_run(env, spool)
        assert bad.name < after_file.name

        proxy.start()
        fresh, stderr = tracked(env)
    # The new process wrote its own run whatever the spool held, and replayed both good files.
    assert status_of(db, fresh) == "FINISHED", stderr
    assert status_of(db, before) == "FINISHED"
    assert status_of(db, after) == "FINISHED"
    assert not spool_files(spool)
    assert quarantined(spool) == [bad.name + ".corrupt"]
    assert stderr.count(bad.name) == 1, stderr
    no_traceback(subprocess.CompletedProcess([], 0, "", stderr))


def test_corrupt_truncated_and_bad_header_files_are_each_moved_aside_with_one_warning(
    db_dsn, db, tmp_path
):
    data = tmp_path / "data"
    spool = data / "spool"
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        key = Store(proxy.dsn).resolve()
        proxy.stop()
        torn_run, torn = spooled_run(env, spool)
        with torn.open("a") as handle:
            handle.write('{"run": {"run_id": "trunc')  # killed mid-write: a torn last line
        garbage = spool / spool_name()
        garbage.write_text("this is not json at all\n{]\n")
        empty = spool / spool_name()
        empty.write_bytes(b"")
        half_header = spool / spool_name()
        half_header.write_text('{"pipetrack_spool": 1, "target": "postgr')
        # Finding 14: a file whose first line is no header names no database. It used to wait
        # forever for `--any-target`; now it is moved aside, its run not written anywhere.
        headless_run = str(uuid.uuid4())
        headless = spool / spool_name()
        headless.write_text(spool_text(key, headless_run).split("\n", 1)[1])
        good_run, _ = spooled_run(env, spool)

        proxy.start()
        fresh, stderr = tracked(env)
        again = pipetrack("spool", "replay", "--any-target", "--dsn", proxy.dsn, env=env)
    assert status_of(db, fresh) == "FINISHED", stderr
    assert status_of(db, good_run) == "FINISHED"
    assert status_of(db, torn_run) == "FINISHED"  # its good lines were replayed
    assert status_of(db, headless_run) is None
    bad = [torn, garbage, empty, half_header, headless]
    assert quarantined(spool) == sorted(p.name + ".corrupt" for p in bad)
    assert not spool_files(spool)
    for path in bad:
        assert stderr.count(path.name) == 1, stderr
    # Nothing is picked up again: not by the next replay, not with --any-target.
    assert again.returncode == 0, again.stderr
    assert "replayed 0 status(es) from 0 file(s)" in again.stdout
    assert status_of(db, headless_run) is None
    no_traceback(again)


def test_a_fifo_in_the_spool_hangs_no_command_and_blocks_no_process(db_dsn, db, tmp_path):
    data = tmp_path / "data"
    spool = data / "spool"
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        proxy.stop()
        fifo = spool / "00000000000000000000-1-fifo0000.jsonl"  # first in line
        spool.mkdir(parents=True)
        os.mkfifo(fifo)
        waiting, _ = spooled_run(env, spool)

        status = pipetrack("spool", "status", env=env)
        assert status.returncode == 1, status.stderr
        assert fifo.name in status.stdout + status.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # status only looks

        proxy.start()
        fresh, stderr = tracked(env)
    # A writer blocked in open() would have missed the exit deadline and spooled the run.
    assert status_of(db, fresh) == "FINISHED", stderr
    assert status_of(db, waiting) == "FINISHED"
    assert "did not take the final status" not in stderr
    assert quarantined(spool) == [fifo.name + ".corrupt"]
    assert stat.S_ISFIFO(os.lstat(spool / (fifo.name + ".corrupt")).st_mode)
    assert fifo.name in stderr
    no_traceback(status)


def test_a_symlink_in_the_spool_is_never_followed(db_dsn, db, tmp_path):
    data = tmp_path / "data"
    spool = data / "spool"
    spool.mkdir(parents=True)
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        key = Store(proxy.dsn).resolve()
        # Stands in for /etc/passwd: a file outside the spool, here shaped like a spool file
        # so that anything reading through the link would both show and replay it.
        outside = tmp_path / "passwd"
        planted = str(uuid.uuid4())
        outside.write_text(spool_text(key, planted, host="OUTSIDE-SECRET-HOST"))
        content = outside.read_bytes()
        link = spool / spool_name()
        link.symlink_to(outside)

        status = pipetrack("spool", "status", env=env)
        assert "OUTSIDE-SECRET-HOST" not in status.stdout + status.stderr
        assert link.name in status.stdout + status.stderr
        assert status.returncode == 1

        fresh, stderr = tracked(env)
    assert status_of(db, fresh) == "FINISHED", stderr
    assert status_of(db, planted) is None
    assert outside.read_bytes() == content
    assert quarantined(spool) == [link.name + ".corrupt"]
    assert (spool / (link.name + ".corrupt")).is_symlink()
    assert link.name in stderr
    no_traceback(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user owns needs root")
def test_a_file_owned_by_another_user_is_not_replayed(db_dsn, db, tmp_path):
    data = tmp_path / "data"
    spool = data / "spool"
    nobody = 65534
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        proxy.stop()
        theirs, path = spooled_run(env, spool)
        os.chown(path, nobody, nobody)

        proxy.start()
        fresh, stderr = tracked(env)
        replay = pipetrack("spool", "replay", "--any-target", "--dsn", proxy.dsn, env=env)
    assert status_of(db, fresh) == "FINISHED", stderr
    assert status_of(db, theirs) is None
    assert quarantined(spool) == [path.name + ".corrupt"]
    assert f"owned by uid {nobody}" in stderr
    assert replay.returncode == 0, replay.stderr
    assert status_of(db, theirs) is None
    no_traceback(replay)


def test_the_spool_is_private_whatever_the_umask(tmp_path):
    data = tmp_path / "data"
    with proxy_for("host=127.0.0.1 port=1 dbname=x") as proxy:
        proxy.stop()
        env = child_env(proxy.dsn, data)
        tracked(env, umask=0o022)
    spool = data / "spool"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700  # made by the process, as its spool
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    (path,) = spool_files(spool)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_spool_folder_open_to_others_is_warned_about_once(tmp_path):
    data = tmp_path / "data"
    spool = data / "spool"
    spool.mkdir(parents=True)
    spool.chmod(0o755)
    with proxy_for("host=127.0.0.1 port=1 dbname=x") as proxy:
        proxy.stop()
        env = child_env(proxy.dsn, data)
        _, stderr = tracked(env)
        status = pipetrack("spool", "status", env=env)
    assert stderr.count(str(spool)) == 1, stderr
    assert "0755" in stderr
    assert status.stderr.count(str(spool)) == 1, status.stderr
    assert stat.S_IMODE(spool.stat().st_mode) == 0o755  # the user's choice, only warned about


def test_spool_commands_end_in_one_line_per_problem_never_a_traceback(db_dsn, db, tmp_path):
    data = tmp_path / "data"
    spool = data / "spool"
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        proxy.stop()
        good, good_file = spooled_run(env, spool)
        broken = spool / ("0" * 20 + "-1-broken00.jsonl")
        broken.write_bytes(b"\xff\xfe\xfd not utf-8\n")
        fifo = spool / ("0" * 20 + "-2-fifo0000.jsonl")
        os.mkfifo(fifo)
        link = spool / ("0" * 20 + "-3-link0000.jsonl")
        outside = tmp_path / "outside"
        outside.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
        link.symlink_to(outside)
        headless = spool / ("0" * 20 + "-4-header00.jsonl")
        headless.write_text('{"run": {}}\n')
        bad = [broken, fifo, link, headless]

        status = pipetrack("spool", "status", env=env)
        down = pipetrack("spool", "replay", "--dsn", proxy.dsn, env=env)
        proxy.start()
        replay = pipetrack("spool", "replay", "--dsn", proxy.dsn, env=env)
        again = pipetrack("spool", "replay", "--any-target", "--dsn", proxy.dsn, env=env)
        after = pipetrack("spool", "status", env=env)
    for result in (status, down, replay, again, after):
        no_traceback(result)
    assert status.returncode == 1
    for path in bad:
        assert path.name in status.stdout, status.stdout
    assert "root:x" not in status.stdout + status.stderr
    assert down.returncode == 3, down.stdout + down.stderr
    assert down.stderr.startswith("pipetrack: error: database unavailable")
    assert len(down.stderr.splitlines()) == 1, down.stderr
    assert replay.returncode == 0, replay.stderr
    # One line on stderr for each bad file, naming it; the good file after them replayed once.
    for path in bad:
        assert replay.stderr.count(path.name) == 1, replay.stderr
    assert len(replay.stderr.strip().splitlines()) == len(bad), replay.stderr
    assert "4 file(s) quarantined" in replay.stdout
    assert status_of(db, good) == "FINISHED"
    assert not good_file.exists()
    assert "replayed 0 status(es) from 0 file(s)" in again.stdout
    assert again.stderr == ""
    assert quarantined(spool) == sorted(p.name + ".corrupt" for p in bad)
    # Status still lists what was moved aside, so that someone looks at it.
    assert "4 file(s) moved aside" in after.stdout, after.stdout
    assert after.returncode == 1


def test_a_spool_that_cannot_be_listed_stops_no_status_and_no_command(db_dsn, db, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "spool").write_text("a file where the spool folder should be\n")
    with proxy_for(db_dsn) as proxy:
        env = child_env(proxy.dsn, data)
        fresh, stderr = tracked(env)
        status = pipetrack("spool", "status", env=env)
        replay = pipetrack("spool", "replay", "--dsn", proxy.dsn, env=env)
    # Replay failed as a whole, yet the process's own statuses were written.
    assert status_of(db, fresh) == "FINISHED", stderr
    assert "cannot replay the spool" in stderr
    for result in (status, replay):
        no_traceback(result)
        assert result.returncode == 1
        assert "cannot read the spool" in result.stderr


def test_a_replay_racing_the_birth_of_spool_files_loses_none_of_them(tmp_path):
    """A replay that opened a file between its creation and its header took it for an empty
    file and deleted it, and the statuses then written into it were lost (132 of 2,000 here
    before files were born under a temporary name)."""
    from tracker._record.spool import Spool

    directory, stop = tmp_path / "spool", tmp_path / "stop"
    replayers = [
        subprocess.Popen(
            [sys.executable, str(SCRIPTS / "spool_replayer.py"), str(directory), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    written = []
    try:
        for _ in range(2000):
            spool = Spool(directory, max_bytes=10**9)
            run_id = str(uuid.uuid4())
            assert spool.append("key", [snapshot(run_id, 1, "FINISHED")]) == 1
            spool.rotate()
            written.append(run_id)
    finally:
        stop.touch()
        outputs = [replayer.communicate(timeout=TIMEOUT) for replayer in replayers]
    replayed = set()
    for (out, err), replayer in zip(outputs, replayers, strict=True):
        assert replayer.returncode == 0, err
        assert err == "", err
        replayed |= set(out.split())
    last: list[str] = []
    Spool(directory, max_bytes=10**9).replay(None, lambda s: last.append(s.run_id))
    replayed |= set(last)
    assert set(written) - replayed == set()
    assert not list(directory.iterdir())  # nothing set aside, nothing left behind
