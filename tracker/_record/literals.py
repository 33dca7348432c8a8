"""Array literals: a column of values as the one text parameter PostgreSQL casts to an array.

psycopg can send a Python list as a binary array, but its list dumpers visit every element in
Python (0.4 µs each in psycopg 3.3); a literal is one ``str.join`` per column. Every text element
is quoted and escaped; numbers and timestamps are spelled as Python spells them, which PostgreSQL
reads, so nothing needs checking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from tracker._model.columns import Kind


def text_array(values: Sequence[str | None]) -> str:
    return (
        "{"
        + ",".join(
            [
                "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                for v in values
            ]
        )
        + "}"
    )


def number_array(values: Sequence[float | None]) -> str:
    # repr spells ints and floats as PostgreSQL reads them (the model sends nothing else).
    return "{" + ",".join(["NULL" if v is None else repr(v) for v in values]) + "}"


def timestamp_array(values: Sequence[datetime | None]) -> str:
    # A batch's snapshots are taken at one time: each distinct time is spelled once (isoformat
    # is ten times a dictionary lookup).
    spelled: dict[datetime | None, str] = {
        v: '"' + v.isoformat() + '"' for v in set(values) if v is not None
    }
    spelled[None] = "NULL"
    return "{" + ",".join([spelled[v] for v in values]) + "}"


LITERAL_OF: dict[Kind, Callable[[Sequence[Any]], str]] = {
    Kind.UUID: text_array,
    Kind.TEXT: text_array,
    Kind.JSON: text_array,
    Kind.INTEGER: number_array,
    Kind.BIGINT: number_array,
    Kind.NUMERIC: number_array,
    Kind.DOUBLE: number_array,
    Kind.TIMESTAMP: timestamp_array,
}
