"""The `pipetrack` command: help everywhere, meaningful exit codes, one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.fix_db import libpq_params
from tests.secrets import CLI_PASSWORD
from tests.tracker_support import silent_port
from tracker.cli import build_parser
from tracker.cli._common import EXIT_NOT_OK, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

PASSWORD = CLI_PASSWORD


def pipetrack(*args, env=None, timeout=60):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def every_command_path():
    """Every subcommand path of the parser, e.g. ('db', 'upgrade')."""
    paths = []

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    paths.append((*prefix, name))
                    walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return paths


@pytest.mark.parametrize("path", [(), *every_command_path()], ids=" ".join)
def test_every_command_has_help(path):
    result = pipetrack(*path, "--help")
    assert result.returncode == EXIT_OK
    assert "usage: pipetrack" in result.stdout


def test_no_command_is_a_usage_error():
    result = pipetrack()
    assert result.returncode == EXIT_USAGE
    assert "usage:" in result.stderr


def assert_one_clean_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pipetrack: error: ")
    assert "Traceback" not in stderr
    assert PASSWORD not in stderr


def test_malformed_dsn_is_one_line_and_exit_2():
    result = pipetrack("db", "status", "--dsn", f"host=localhost password={PASSWORD} dbname")
    assert result.returncode == EXIT_USAGE
    assert_one_clean_line(result.stderr)
    assert "malformed DSN" in result.stderr


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_is_one_line_and_exit_3_without_the_password():
    dsn = f"postgresql://etl:{PASSWORD}@127.0.0.1:{closed_port()}/geodb"
    result = pipetrack("db", "upgrade", "--dsn", dsn)
    assert result.returncode == EXIT_UNAVAILABLE
    assert_one_clean_line(result.stderr)
    assert "etl:****@127.0.0.1" in result.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    with silent_port() as port:
        yield port


def test_a_host_that_never_answers_fails_after_the_connect_timeout(silent_server):
    # The bound is the 5 s connect timeout plus interpreter start-up: no hang.
    result = pipetrack("db", "status", "--dsn", f"host=127.0.0.1 port={silent_server}", timeout=30)
    assert result.returncode == EXIT_UNAVAILABLE
    assert_one_clean_line(result.stderr)
    assert "timeout" in result.stderr.lower()


def test_db_status_exits_1_while_migrations_are_pending(empty_db_dsn):
    result = pipetrack("db", "status", "--dsn", empty_db_dsn)
    assert result.returncode == EXIT_NOT_OK
    assert "pending" in result.stdout
    upgraded = pipetrack("db", "upgrade", "--dsn", empty_db_dsn)
    assert upgraded.returncode == EXIT_OK, upgraded.stderr
    assert "applied 0001_pipeline_status" in upgraded.stdout
    assert pipetrack("db", "status", "--dsn", empty_db_dsn).returncode == EXIT_OK


def test_monitor_db_alias_variables_reach_the_database(db_dsn):
    params = libpq_params(db_dsn)
    names = {
        "host": "MONITOR_DB_HOST",
        "port": "MONITOR_DB_PORT",
        "dbname": "MONITOR_DB_NAME",
        "user": "MONITOR_DB_USER",
        "password": "MONITOR_DB_PASSWORD",
    }
    env = {alias: params[key] for key, alias in names.items() if key in params}
    result = pipetrack("db", "status", env=env)
    assert result.returncode == EXIT_OK, result.stderr
    assert "MONITOR_DB" not in result.stdout  # shows the target, not variable names
    assert params["dbname"] in result.stdout
    if "password" in params:
        assert params["password"] not in result.stdout + result.stderr


def test_libpq_variables_reach_the_database(db_dsn):
    params = libpq_params(db_dsn)
    env = {
        f"PG{k.upper()}": v for k, v in params.items() if k in ("host", "port", "user", "password")
    }
    env["PGDATABASE"] = params["dbname"]
    result = pipetrack("db", "status", env=env)
    assert result.returncode == EXIT_OK, result.stderr
    assert "applied" in result.stdout


def test_db_url_shows_a_configured_dsn_redacted():
    dsn = f"postgresql://etl:{PASSWORD}@db.example:5432/geodb"
    result = pipetrack("db", "url", env={"PIPETRACK_DSN": dsn})
    assert result.returncode == EXIT_OK
    assert result.stdout.strip() == "postgresql://etl:****@db.example:5432/geodb"


def test_a_reader_that_goes_away_is_not_an_error_message():
    reader = subprocess.Popen(
        [sys.executable, "-m", "tracker", "db", "url"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PIPETRACK_DSN": "dbname=geodb"},
    )
    assert reader.stdout is not None
    reader.stdout.close()  # like `| head` exiting before reading anything
    _, stderr = reader.communicate(timeout=30)
    assert stderr == b""
    assert reader.returncode == EXIT_NOT_OK
