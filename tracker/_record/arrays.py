"""Python values as PostgreSQL array literals: one text parameter per column of a batch.

The server casts each literal to the column's array type. Numbers, UUIDs and ISO timestamps
go unquoted (checked: anything not spelt as expected takes the quoting way); text is quoted
and escaped. ``encoder_for`` picks the quick encoding of a column from its type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_JSON = json.JSONEncoder(separators=(",", ":")).encode


def element(value: Any) -> str:
    """``value`` as one element of an array literal (the server casts it to the column type)."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value)
    if isinstance(value, bool):
        text = "t" if value else "f"
    elif isinstance(value, (dict, list)):
        text = _JSON(value)
    else:
        text = str(value)
    return '"' + text.translate(_ESCAPES) + '"'


def _number(value: float) -> str:
    if isinstance(value, int) or math.isfinite(value):
        return repr(value)
    # numeric's own spellings; the table's checks then say what is wrong with the row.
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
_FLOAT_TYPES = frozenset({"numeric", "real", "double precision"})
# Types whose values, as pipetrack spells them, need no quoting in an array literal.
_PLAIN_TYPES = frozenset({"uuid", "timestamp with time zone"})
_NUMBER_CHARACTERS = b"0123456789.-+e,NUL"
# A UUID's or an ISO timestamp's characters, and the comma between elements; "NULL" is not
# spelt with these, so a joined column made of them alone is read back element for element.
_PLAIN_CHARACTERS = b"0123456789abcdefABCDEF-:.+T,"


def _only(text: str, allowed: bytes) -> bool:
    """Whether ``text`` holds nothing but ``allowed`` (ASCII) characters.

    bytes.translate deletes in C: twenty times quicker than a set of characters, which
    matters for columns checked at every batch.
    """
    try:
        return not text.encode("ascii").translate(None, allowed)
    except UnicodeEncodeError:
        return False


def text_array(values: Sequence[Any]) -> str:
    # The common case inline (no call per value): text, timestamps as ISO strings, NULLs.
    return (
        "{"
        + ",".join(
            "NULL"
            if v is None
            else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if type(v) is str
            else element(v)
            for v in values
        )
        + "}"
    )


def number_array(values: Sequence[Any]) -> str:
    # repr() spells ints and finite floats as PostgreSQL reads them; anything else (nan, inf,
    # a bool) takes element(), which knows PostgreSQL's spellings.
    text = ",".join(map(repr, values)).replace("None", "NULL")
    if not _only(text, _NUMBER_CHARACTERS):
        return "{" + ",".join(map(element, values)) + "}"
    return "{" + text + "}"


def plain_array(values: Sequence[Any]) -> str:
    # UUIDs and timestamps unquoted; anything not spelt as pipetrack spells these (not text,
    # or other characters) goes the quoting way.
    present = values
    try:
        text = ",".join(values)
    except TypeError:  # NULLs among them (or not text)
        present = [v for v in values if v is not None]
        if not present:
            return "{" + ",".join(["NULL"] * len(values)) + "}"
        try:
            text = ",".join(present)
        except TypeError:
            return text_array(values)
    # Only those characters, no value empty or holding a comma: element for element.
    if (
        not _only(text, _PLAIN_CHARACTERS)
        or text.count(",") != len(present) - 1
        or not all(present)
    ):
        return text_array(values)
    if len(present) < len(values):
        text = ",".join(["NULL" if v is None else v for v in values])
    return "{" + text + "}"


def encoder_for(type_name: str) -> Callable[[Sequence[Any]], str]:
    if type_name in _INTEGER_TYPES or type_name in _FLOAT_TYPES:
        return number_array
    if type_name in _PLAIN_TYPES:
        return plain_array
    return text_array
