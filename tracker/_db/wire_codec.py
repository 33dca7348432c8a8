"""Bytes of the PostgreSQL protocol for tracker._db.wire: messages, parameters in text form,
rows and error fields."""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from typing import Any

from tracker._db.wire_errors import ServerError

SYNC = b"S\x00\x00\x00\x04"
EXECUTE = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"  # unnamed portal, all rows


def message(kind: bytes, body: bytes | bytearray) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    data = text.encode("utf-8")
    if b"\x00" in data:
        raise ValueError("PostgreSQL strings cannot contain NUL characters")
    return data + b"\x00"


def sql_text(sql: str) -> bytes:
    try:
        return cstr(sql)
    except UnicodeEncodeError:
        raise ValueError("the SQL text is not valid Unicode") from None


def bind_body(name: str, params: Sequence[object]) -> bytes:
    if len(params) > 65535:
        raise ValueError("more than 65535 parameters in one statement")
    parts = [b"\x00", cstr(name), b"\x00\x00", struct.pack("!h", len(params))]
    for position, value in enumerate(params, start=1):
        encoded = encode_param(value, position)
        if encoded is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(struct.pack("!i", len(encoded)))
            parts.append(encoded)
    parts.append(b"\x00\x00")  # every result column in text format
    return b"".join(parts)


def encode_param(value: object, position: int = 1) -> bytes | None:
    """A parameter's text form, as the server's input functions read it (None for NULL).

    Raises TypeError for a type with no obvious text form, ValueError for a string PostgreSQL
    cannot store (NUL characters, lone surrogates).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):  # before int: bool is an int
        text = "t" if value else "f"
    elif isinstance(value, int):
        text = str(int(value))
    elif isinstance(value, float):
        text = _float_text(value)
    elif isinstance(value, (dict, list)):
        import json

        text = json.dumps(value)
    else:
        text = _other_text(value, position)
    if "\x00" in text:
        raise ValueError(f"parameter ${position}: PostgreSQL text cannot contain NUL characters")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"parameter ${position} is not valid Unicode") from None


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _other_text(value: object, position: int) -> str:
    # Look the types up only in modules already imported: a value of the type implies its module.
    modules = sys.modules
    datetime_module: Any = modules.get("datetime")
    if datetime_module is not None and isinstance(
        value, (datetime_module.date, datetime_module.time)
    ):
        text: str = value.isoformat()
        return text
    uuid_module: Any = modules.get("uuid")
    if uuid_module is not None and isinstance(value, uuid_module.UUID):
        return str(value)
    decimal_module: Any = modules.get("decimal")
    if decimal_module is not None and isinstance(value, decimal_module.Decimal):
        return _decimal_text(value)
    raise TypeError(f"parameter ${position}: cannot send a {type(value).__name__} value")


def _decimal_text(value: Any) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value.is_signed() else "Infinity"
    return str(value)


def command_count(data: memoryview) -> int:
    """A CommandComplete's row count: the tag's last word ("UPDATE 250", "INSERT 0 3"), or 0
    for a tag without one ("BEGIN")."""
    last = bytes(data).rstrip(b"\x00").rpartition(b" ")[2]
    return int(last) if last.isdigit() else 0


def data_row(data: memoryview) -> tuple[str | None, ...]:
    (count,) = struct.unpack_from("!h", data)
    values: list[str | None] = []
    offset = 2
    for _ in range(count):
        (length,) = struct.unpack_from("!i", data, offset)
        offset += 4
        if length < 0:
            values.append(None)
        else:
            values.append(bytes(data[offset : offset + length]).decode("utf-8"))
            offset += length
    return tuple(values)


def error_fields(data: bytes | memoryview) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in bytes(data).split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def server_error(data: memoryview) -> ServerError:
    fields = error_fields(data)
    return ServerError(
        fields.get("M", "unknown error"),
        sqlstate=fields.get("C", "XX000"),
        severity=fields.get("V", fields.get("S", "ERROR")),
        detail=fields.get("D"),
        hint=fields.get("H"),
    )
