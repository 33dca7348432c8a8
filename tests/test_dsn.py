"""Which database pipetrack picks, and that a password never shows."""

from __future__ import annotations

import pytest

from tests.secrets import DSN_PASSWORD
from tracker._db.dsn import REDACTED, connect_params, redact_dsn, redact_text, resolve_target
from tracker.errors import ConfigurationError

SECRET = DSN_PASSWORD


def test_nothing_configured_means_embedded():
    target = resolve_target(environ={})
    assert target.embedded
    assert target.source == "embedded"


def test_explicit_dsn_wins_over_every_variable():
    env = {"PIPETRACK_DSN": "dbname=env", "MONITOR_DB_CONN": "dbname=alias", "PGHOST": "pg"}
    target = resolve_target("dbname=flag", environ=env)
    assert (target.conninfo, target.source) == ("dbname=flag", "--dsn")


def test_pipetrack_dsn_then_monitor_db_conn_alias():
    both = {"PIPETRACK_DSN": "dbname=env", "MONITOR_DB_CONN": "dbname=alias"}
    assert resolve_target(environ=both).source == "PIPETRACK_DSN"
    alias_only = {"MONITOR_DB_CONN": "dbname=alias"}
    assert resolve_target(environ=alias_only).conninfo == "dbname=alias"


def test_libpq_variables_name_a_server():
    target = resolve_target(environ={"PGHOST": "db.example", "PGDATABASE": "geodb"})
    assert not target.embedded
    assert target.source == "PG* environment"
    # libpq reads PG* itself; pipetrack adds only its timeout and name.
    assert "db.example" not in connect_params(target, environ={})


def test_password_alone_does_not_leave_the_embedded_default():
    assert resolve_target(environ={"PGPASSWORD": "x"}).embedded


def test_monitor_db_aliases_fill_in_what_pg_variables_leave_unset():
    env = {
        "MONITOR_DB_HOST": "alias-host",
        "MONITOR_DB_PORT": "6543",
        "MONITOR_DB_NAME": "geodb",
        "MONITOR_DB_USER": "etl",
        "MONITOR_DB_PASSWORD": SECRET,
        "PGPORT": "5433",
    }
    target = resolve_target(environ=env)
    assert target.source == "PG* and MONITOR_DB_* environment"
    assert dict(target.connect_kwargs) == {
        "host": "alias-host",
        "dbname": "geodb",
        "user": "etl",
        "password": SECRET,
    }
    assert SECRET not in target.redacted
    assert SECRET not in repr(target)


def test_connect_params_add_a_five_second_timeout_unless_given():
    target = resolve_target("dbname=x", environ={})
    assert "connect_timeout=5" in connect_params(target, environ={})
    target = resolve_target("dbname=x connect_timeout=2", environ={})
    assert "connect_timeout=2" in connect_params(target, environ={})
    assert "connect_timeout=5" not in connect_params(target, environ={})
    assert "connect_timeout" not in connect_params(
        resolve_target("dbname=x", environ={}), environ={"PGCONNECT_TIMEOUT": "9"}
    )


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://etl:{SECRET.replace(' ', '%20').replace('@', '%40')}@db:5432/geodb",
        f"postgres://etl:{SECRET.replace(' ', '%20').replace('@', '%40')}@db/geodb?sslmode=require",
        f"postgresql://etl@db/geodb?password={SECRET.replace(' ', '%20').replace('@', '%40')}",
        f"host=db user=etl password='{SECRET}' dbname=geodb",
        "host=db password=plainsecret dbname=geodb",
    ],
)
def test_every_dsn_form_is_shown_without_its_password(dsn):
    target = resolve_target(dsn, environ={})
    shown = target.redacted
    assert REDACTED in shown
    for secret in (SECRET, "plainsecret", "s3cr3t", "w0rd"):
        assert secret not in shown
    assert "db" in shown


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=db password='{SECRET}' dbname",  # missing "="
        f"postgresql://etl:{SECRET}@db:notaport:/x",
        f"host=db password='{SECRET}",  # unterminated quote
    ],
)
def test_malformed_dsn_is_a_configuration_error_without_the_password(dsn):
    with pytest.raises(ConfigurationError) as caught:
        resolve_target(dsn, environ={})
    message = str(caught.value)
    assert message.startswith("malformed DSN in --dsn")
    assert "s3cr3t" not in message
    assert "w0rd" not in message


def test_empty_password_in_uri_is_not_masked():
    assert redact_dsn("postgresql://postgres:@/postgres?host=/tmp") == (
        "postgresql://postgres:@/postgres?host=/tmp"
    )


def test_redact_text_masks_known_secrets_anywhere():
    text = f"FATAL: something quoted {SECRET} and its encoding s3cr3t-P%40ss%20w0rd"
    assert "s3cr3t" not in redact_text(text, [SECRET])


def test_blank_dsn_variables_count_as_unset():
    assert resolve_target(environ={"PIPETRACK_DSN": "  ", "MONITOR_DB_CONN": ""}).embedded


def test_a_refused_dsn_names_libpqs_parameters_but_never_quotes_the_dsn():
    with pytest.raises(ConfigurationError) as caught:
        resolve_target("host=db dbname", environ={})
    assert '"=" after "dbname"' in str(caught.value)  # libpq's words and parameter names
    with pytest.raises(ConfigurationError) as caught:
        resolve_target("host=db pasword=hunter2-secret", environ={})
    assert "hunter2" not in str(caught.value)  # what it could not read may be a password
    assert '"****"' in str(caught.value)
