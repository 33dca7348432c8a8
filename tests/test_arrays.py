"""Array literals: what the writer sends is what PostgreSQL reads back, element for element."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker._model.state import iso
from tracker._record.arrays import encoder_for, number_array, plain_array, text_array

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def server(admin_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        yield conn


def read_back(conn: psycopg.Connection[tuple[Any, ...]], literal: str, type_name: str) -> list[Any]:
    rows = conn.execute(f"SELECT unnest(%s::{type_name}[])", (literal,)).fetchall()
    return [row[0] for row in rows]


# Text as the model hands it on: no NUL, no lone surrogates (it cleans those out).
TEXT = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12))
def test_text_round_trips_whatever_it_holds(server, values):
    assert read_back(server, text_array(values), "text") == values


@pytest.mark.parametrize(
    "value", ["NULL", "null", "", " padded ", "{a,b}", "a,b", '"', "\\", '\\"', "é ✓ 🚀", "\t\n"]
)
def test_text_that_looks_like_array_syntax_is_quoted(server, value):
    assert read_back(server, text_array([value, None, value]), "text") == [value, None, value]


def test_uuids_and_timestamps_go_unquoted(server):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    stamps = [iso(1_700_000_000.25), None, iso(1_800_000_000.000001)]
    assert plain_array(ids) == "{" + ",".join(ids) + "}"
    assert '"' not in plain_array(stamps)
    assert [str(v) for v in read_back(server, plain_array(ids), "uuid")] == ids
    assert read_back(server, plain_array(stamps), "timestamptz") == [
        datetime.fromtimestamp(1_700_000_000.25, timezone.utc),
        None,
        datetime.fromtimestamp(1_800_000_000.000001, timezone.utc),
    ]


@pytest.mark.parametrize(
    "odd", ["NULL", "a,b", "a,,b", ",", '"', "{}", " 2024-01-01", "2024-01-01 00:00:00+00", ""]
)
def test_a_value_not_spelt_as_expected_takes_the_quoting_way(odd):
    assert plain_array([odd, None]) == text_array([odd, None])


def test_a_value_that_is_not_text_takes_the_quoting_way():
    assert plain_array([uuid.UUID(int=1), None]) == text_array([uuid.UUID(int=1), None])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, None, -2, 2**62], [1, None, -2, 2**62]),
        ([0.5, 1e-7, 12.34], [Decimal("0.5"), Decimal("1E-7"), Decimal("12.34")]),
        ([math.inf, -math.inf], [Decimal("Infinity"), Decimal("-Infinity")]),
    ],
)
def test_numbers_round_trip(server, values, expected):
    assert read_back(server, number_array(values), "numeric") == expected


def test_nan_and_booleans_take_postgresqls_spellings(server):
    (nan,) = read_back(server, number_array([math.nan]), "numeric")
    assert nan.is_nan()
    assert read_back(server, number_array([True, False]), "text") == ["t", "f"]


@pytest.mark.parametrize(
    ("type_name", "encoder"),
    [
        ("bigint", number_array),
        ("numeric", number_array),
        ("uuid", plain_array),
        ("timestamp with time zone", plain_array),
        ("character varying", text_array),
        ("jsonb", text_array),
    ],
)
def test_each_column_type_gets_its_encoding(type_name, encoder):
    assert encoder_for(type_name) is encoder


# Mostly the characters the unquoted way allows, and a few that must not slip through it.
NEAR_PLAIN = st.text(alphabet='0123456789abcdefABCDEFT:.+-,NUL "{}\\', max_size=12)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), NEAR_PLAIN), max_size=8))
def test_plain_round_trips_whatever_it_is_given(server, values):
    assert read_back(server, plain_array(values), "text") == values
