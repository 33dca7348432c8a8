"""Passwords the suite uses, so one place can check that none ever reaches a log line."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

DSN_PASSWORD = "s3cr3t-P@ss w0rd"
CLI_PASSWORD = "hunter2-Zq9"
ENV_PASSWORD = "env-Pa55-redact-me"
# Passwords made during the session (the servers tests start for themselves).
_SESSION_PASSWORDS: list[str] = []


def register_password(password: str) -> None:
    """Add a password made at run time to those no log line may contain."""
    _SESSION_PASSWORDS.append(password)


def all_test_passwords() -> list[str]:
    """The literal test passwords, plus the password of PIPETRACK_TEST_DSN if it has one."""
    found = [DSN_PASSWORD, CLI_PASSWORD, ENV_PASSWORD, *_SESSION_PASSWORDS]
    dsn = os.environ.get("PIPETRACK_TEST_DSN")
    if dsn:
        password = conninfo_to_dict(dsn).get("password")
        if isinstance(password, str) and password:
            found.append(password)
    return found
