"""Secrets in a failed run's error text are masked before they are stored.

``error_message`` and ``error_detail`` hold a command's stderr tail or an exception's traceback,
and the reader role, Grafana and the exporter's readers see them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.tracker_support import make_tracker
from tracker._model.secrets import mask_secrets

# Made up, but shaped like the real thing.
DSN_SECRET = "Sup3rS3cret-dsn"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS_KEY_ID = "AKIA" + "Q2WS3ED4RF5TG6YH"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
BEARER = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
SECRETS = (DSN_SECRET, GITHUB_TOKEN, AWS_KEY_ID, AWS_SECRET, "hunter2", "pa55word", BEARER[20:])

STDERR = f"""\
connecting to postgresql://etl:{DSN_SECRET}@db.internal:5432/warehouse
psql: error: connection failed: host=db user=etl password=hunter2 dbname=x
curl -H 'Authorization: Bearer {BEARER}' https://api.example.com
git push https://x-access-token:{GITHUB_TOKEN}@github.com/org/repo
export AWS_ACCESS_KEY_ID={AWS_KEY_ID} aws_secret_access_key={AWS_SECRET}
{{"user": "etl", "password": "pa55word"}}
ValueError: bad input file
"""


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("password=hunter2 user=x", "password=**** user=x"),
        ("PGPASSWORD='a b c' psql", "PGPASSWORD='****' psql"),
        ('{"api_key": "k-123", "n": 1}', '{"api_key": "****", "n": 1}'),
        ("token: abc123", "token: ****"),
        ("postgresql://u:SECRET@h/db", "postgresql://u:****@h/db"),
        ("redis://:pw@localhost:6379/0", "redis://:****@localhost:6379/0"),
        ("Authorization: Basic dXNlcjpwdw==", "Authorization: Basic ****"),
        (f"key {AWS_KEY_ID} used", "key **** used"),
        (f"token {GITHUB_TOKEN}", "token ****"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", None),
        # Ordinary error text stays as it is.
        ("KeyError: 'password'", "KeyError: 'password'"),
        ("author=Jane tokens=5 at https://example.com/a:b", None),
    ],
)
def test_mask_secrets(text, masked):
    if masked is None:
        result = mask_secrets(text)
        if "PRIVATE KEY" in text:
            assert "MIIE" not in result
        else:
            assert result == text
    else:
        assert mask_secrets(text) == masked


def _assert_masked(value: str | None) -> None:
    assert value is not None
    for secret in SECRETS:
        assert secret not in value, (secret, value)
    assert "****" in value


@pytest.mark.db
def test_pipetrack_run_masks_secrets_in_the_stderr_tail_it_stores(db, db_dsn, tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(f"import sys\nsys.stderr.write({STDERR!r})\nsys.exit(4)\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracker",
            "run",
            "--task",
            "DAILY_leaky",
            "--",
            sys.executable,
            str(script),
        ],
        env={**os.environ, "PIPETRACK_DSN": db_dsn},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    # The terminal still gets the child's own stderr unchanged: it is the user's output.
    assert DSN_SECRET.encode() in done.stderr
    message, detail = db.execute(
        "SELECT error_message, error_detail FROM pipeline_status WHERE task_name = 'DAILY_leaky'"
    ).fetchone()
    assert message == "exited with code 4: ValueError: bad input file"
    _assert_masked(detail)
    assert "ValueError: bad input file" in detail


@pytest.mark.db
def test_a_failed_runs_exception_text_is_masked_too(db, db_dsn, tmp_path):
    tr = make_tracker(db_dsn, tmp_path / "spool")
    try:
        run = tr.run("DAILY_leaky_exception")
        try:
            raise ConnectionError(f"no postgresql://etl:{DSN_SECRET}@db/x token={GITHUB_TOKEN}")
        except ConnectionError as exc:
            run.fail(exc)
        assert tr.flush(30.0)
    finally:
        tr.shutdown(30.0)
    message, detail = db.execute(
        "SELECT error_message, error_detail FROM pipeline_status "
        "WHERE task_name = 'DAILY_leaky_exception'"
    ).fetchone()
    _assert_masked(message)
    _assert_masked(detail)
