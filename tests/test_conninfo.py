"""tracker._db.conninfo parses and writes connection strings exactly as psycopg (libpq) does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.secrets import DSN_PASSWORD
from tracker._db import conninfo
from tracker._db.conninfo import LIBPQ_KEYWORDS, parse_conninfo

PASSWORD_PIECES = ("s3cr3t", "w0rd", "P@ss")


def libpq(text: str) -> list[tuple[str, str]] | str:
    """psycopg's parse as an ordered list of pairs, or "error"."""
    try:
        return list(conninfo_to_dict(text).items())  # type: ignore[arg-type]
    except Exception:  # ProgrammingError, or UnicodeDecodeError on bad %-escapes
        return "error"


def ours(text: str) -> list[tuple[str, str]] | str:
    try:
        return list(parse_conninfo(text).items())
    except ValueError:
        return "error"


CASES = [
    "",
    "   ",
    "dbname=geodb",
    "host=db port=5433 dbname=geodb user=etl",
    "host = db   port =5433\tdbname=\n geodb",
    "host='a b' password='it\\'s' dbname=x",
    "password=back\\\\slash user=a\\ b",
    "host='x'port=3",
    "host= port=5",
    "host=''",
    "application_name='' options='-c search_path=pipetrack,public'",
    "requiressl=1",
    "requiressl=0 sslmode=verify-full",
    "dbname=a dbname=b",
    "dbname=a=b",
    "dbname='postgresql://h/db'",
    "sslmode=require sslrootcert=/etc/ca.pem sslcert=c sslkey=k",
    "service=prod",
    "x=1",
    "=x",
    "host",
    "host db",
    "host='unterminated",
    "host=db password='s3cr3t",
    "host=\\",
    "postgresql://",
    "postgres://",
    "postgresql:///geodb",
    "postgresql://db",
    "postgresql://db:5433",
    "postgresql://db:5433/geodb",
    "postgresql://etl@db/geodb",
    "postgresql://etl:pw@db/geodb",
    "postgresql://etl:p:w@db/geodb",
    "postgresql://:pw@db",
    "postgresql://etl:@db",
    "postgresql://@db",
    "postgresql://e%74l:p%40ss%20w0rd@db/ge%6Fdb",
    "postgresql://%2Fvar%2Frun%2Fpostgresql/geodb",
    "postgresql:///geodb?host=/var/run/postgresql",
    "postgresql:///geodb?host=%2Ftmp&port=5433",
    "postgresql://h1,h2/db",
    "postgresql://h1:1,h2:2,h3/db",
    "postgresql://h1,[::1]:5432,10.0.0.1:7/db",
    "postgresql://[::1]/db",
    "postgresql://[::1]:5432/db",
    "postgresql://[fe80::1%25eth0]/db",
    "postgresql://[::1",
    "postgresql://[]/db",
    "postgresql://[::1]x/db",
    "postgresql://db/geodb?",
    "postgresql://db/geodb?sslmode=require&application_name=etl",
    "postgresql://db/geodb?sslmode=require&",
    "postgresql://db/geodb?&sslmode=require",
    "postgresql://db/geodb?sslmode",
    "postgresql://db/geodb?a=b=c",
    "postgresql://db/geodb?nosuch=1",
    "postgresql://db/geodb?ssl=true",
    "postgresql://db/geodb?ssl=false",
    "postgresql://db/geodb?user=a&user=b",
    "postgresql://u@db/geodb?user=other",
    "postgresql://db/geodb?options=-c%20search_path%3Dx",
    "postgresql://db/geo db",
    "postgresql://db/ geodb ",
    "postgresql://db/%zz",
    "postgresql://db/%4",
    "postgresql://db/%00",
    "postgresql://db/%C3%A9t%C3%A9",
    "postgresql://db/%FF",
    "postgresql://db:notaport:/x",
    "postgresql://etl:s3cr3t-P@ss w0rd@db/x",
    "postgresql://db?x@y/z",
    "postgresql://a/b/c?d=?",
    "postgresql://db/g?e#frag",
    "POSTGRESQL://db",
    " postgresql://db",
    "postgresql:/db",
    "host=café dbname=été",
    "host=a\x00b dbname=x",
    "host=\ud800",
]


@pytest.mark.parametrize("text", CASES)
def test_parse_matches_libpq(text):
    assert ours(text) == libpq(text)


def test_keyword_list_is_the_bundled_libpq_one_in_its_order():
    bundled = tuple(option.keyword.decode() for option in pq.Conninfo.get_defaults())
    assert bundled == LIBPQ_KEYWORDS


@pytest.mark.parametrize(
    ("base", "extra"),
    [
        ("", {}),
        ("dbname=x", {}),
        ("postgresql://u@h/db", {}),
        ("", {"dbname": "x"}),
        ("dbname=x", {"connect_timeout": "5", "application_name": "pipetrack"}),
        ("postgresql://u:pw@h:5433/db?sslmode=require", {"application_name": "a b"}),
        ("host=h", {"password": "it's a \\ test", "options": "-c search_path=a,b"}),
        ("host=h", {"dbname": ""}),
        ("host=h", {"dbname": None}),
        ("dbname=a user=b", {"dbname": "c"}),
        ("host=h", {"password": "tab\there"}),
        ("host=h", {"password": "nbsp\u00a0here"}),
    ],
)
def test_make_conninfo_matches_psycopg(base, extra):
    assert conninfo.make_conninfo(base, **extra) == make_conninfo(base, **extra)


def test_make_conninfo_keeps_what_libpq_keeps_of_a_value_with_a_nul():
    assert conninfo.make_conninfo("port=5432", host="a\x00b") == make_conninfo(
        "port=5432", host="a\x00b"
    )


def test_make_conninfo_rejects_an_unknown_keyword():
    with pytest.raises(ValueError, match="invalid connection option"):
        conninfo.make_conninfo("dbname=x", nosuch="1")


@pytest.mark.parametrize(
    "text",
    [
        f"host=db password='{DSN_PASSWORD}",
        f"host=db password='{DSN_PASSWORD}' dbname",
        f"host=db password={DSN_PASSWORD} x",
        f"postgresql://etl:{DSN_PASSWORD}@db/x",
        f"postgresql://etl:{DSN_PASSWORD}%zz@db/x",
        f"postgresql://etl:{DSN_PASSWORD}%00@db/x",
        f"postgresql://db/x?password={DSN_PASSWORD}",
        "postgresql://db/x?password=s3cr3t&w0rd",
        "postgresql://db/x?password=s3cr3t=w0rd",
        "postgresql://etl:s3cr3tw0rd@[::1/x",
    ],
)
def test_malformed_input_raises_without_any_piece_of_the_password(text):
    with pytest.raises(ValueError, match=r"URI|connection string|option") as caught:
        parse_conninfo(text)
    assert libpq(text) == "error"
    for piece in PASSWORD_PIECES:
        assert piece not in str(caught.value)


# Characters that steer both grammars, plus a few keywords and values that parse.
_ALPHABET = st.sampled_from([*"ab =\\'\"@:/?,&%[]#\t\n", "%2F", "%20", "%41", "%zz", "é"])
_KEYWORD = st.sampled_from(["host", "port", "dbname", "user", "password", "sslmode", "nosuch", ""])
_VALUE = st.lists(_ALPHABET, max_size=12).map("".join)


@st.composite
def _keyword_strings(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(_KEYWORD, _ALPHABET, _VALUE), max_size=4))
    return " ".join(f"{key}{sep}{value}" for key, sep, value in parts)


@st.composite
def _uris(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["postgresql://", "postgres://"]))
    userinfo = draw(st.sampled_from(["", "u@", "u:p@", ":p@", "@"])) + draw(_VALUE)
    hosts = draw(st.lists(_VALUE, min_size=1, max_size=3))
    query = draw(st.lists(st.tuples(_KEYWORD, _VALUE), max_size=3))
    tail = "&".join(f"{key}={value}" for key, value in query)
    return f"{prefix}{userinfo}{','.join(hosts)}/{draw(_VALUE)}?{tail}"


@settings(max_examples=400, deadline=None)
@given(st.one_of(_keyword_strings(), _uris(), st.lists(_ALPHABET, max_size=30).map("".join)))
def test_any_string_parses_as_libpq_parses_it(text):
    assert ours(text) == libpq(text)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["host", "dbname", "user", "password", "options", "application_name"]),
        # libpq stops reading at a NUL, so such values cannot come back (the table has one);
        # lone surrogates cannot even be encoded for libpq.
        st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=10),
        max_size=4,
    )
)
def test_any_values_are_written_as_psycopg_writes_them_and_read_back(values):
    written = conninfo.make_conninfo("port=5432", **values)
    assert written == make_conninfo("port=5432", **values)
    assert parse_conninfo(written) == {"port": "5432", **values}
