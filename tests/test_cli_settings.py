"""Bad connection settings are a bad configuration (exit 2), not an unreachable database (3).

libpq itself judges the settings (tracker._db.connect.settings_problem); these are the values a
user mistypes, each in a DSN and in the PG* variable libpq reads.
"""

from __future__ import annotations

import pytest

from tests.test_cli import PASSWORD, assert_one_clean_line, closed_port, pipetrack
from tracker._db.connect import settings_problem
from tracker.cli._common import EXIT_UNAVAILABLE, EXIT_USAGE

BAD_SETTINGS = [
    ("port=notanumber", "PGPORT", "notanumber", "port"),
    ("port=99999", "PGPORT", "99999", "port"),
    ("sslmode=bogus", "PGSSLMODE", "bogus", "sslmode"),
    ("gssencmode=nope", "PGGSSENCMODE", "nope", "gssencmode"),
    ("target_session_attrs=fastest", "PGTARGETSESSIONATTRS", "fastest", "target_session_attrs"),
    ("connect_timeout=soon", "PGCONNECT_TIMEOUT", "soon", "connect_timeout"),
    ("service=no_such_service", "PGSERVICE", "no_such_service", "service"),
]


@pytest.mark.parametrize(("setting", "variable", "value", "named"), BAD_SETTINGS)
@pytest.mark.parametrize("command", [("status",), ("db", "upgrade"), ("history", "X")])
def test_bad_settings_in_a_dsn_exit_2_with_one_line(command, setting, variable, value, named):
    dsn = f"host=127.0.0.1 port={closed_port()} user=etl password={PASSWORD} {setting}"
    result = pipetrack(*command, "--dsn", dsn)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_clean_line(result.stderr)
    assert "bad connection settings" in result.stderr
    assert named in result.stderr


@pytest.mark.parametrize(("setting", "variable", "value", "named"), BAD_SETTINGS)
def test_bad_settings_in_libpq_variables_exit_2(setting, variable, value, named):
    env = {"PGHOST": "127.0.0.1", "PGUSER": "etl", variable: value}
    if variable != "PGPORT":
        env["PGPORT"] = str(closed_port())
    result = pipetrack("status", env=env)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_clean_line(result.stderr)


def test_good_settings_to_a_closed_port_still_exit_3():
    dsn = f"host=127.0.0.1,127.0.0.1 port={closed_port()},{closed_port()} sslmode=prefer"
    result = pipetrack("status", "--dsn", dsn)
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert_one_clean_line(result.stderr)


def test_settings_problem_asks_libpq_without_touching_the_network():
    assert settings_problem("host=db.invalid port=5432 sslmode=verify-full") is None
    assert settings_problem("host=a,b port=1,2 target_session_attrs=read-write") is None
    assert settings_problem("hostaddr=192.0.2.1 port=5432") is None
    problem = settings_problem("host=a,b port=1,2,3")
    assert problem is not None
    assert "port" in problem


@pytest.mark.parametrize("flag", ["--dsn", "--reap-dsn"])
def test_the_exporter_refuses_to_start_on_settings_libpq_refuses(flag):
    # A database that is down is no reason not to start (the metrics say so); a bad setting is.
    good = f"host=127.0.0.1 port={closed_port()}"
    dsns = {"--dsn": good, "--reap-dsn": good, flag: f"{good} sslmode=bogus password={PASSWORD}"}
    result = pipetrack(
        "exporter",
        "--listen",
        "127.0.0.1:0",
        *(part for f, d in dsns.items() for part in (f, d)),
        timeout=60,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_clean_line(result.stderr)
    assert "sslmode" in result.stderr
