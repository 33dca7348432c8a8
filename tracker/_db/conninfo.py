"""libpq connection strings (``key=value`` and ``postgresql://`` URIs) parsed without psycopg.

The rules are libpq 18's (``conninfo_parse`` and ``conninfo_uri_parse_options`` in fe-connect.c),
so ``parse_conninfo`` and ``make_conninfo`` give what ``psycopg.conninfo`` would, without loading
libpq and OpenSSL into the process. Error messages never quote the text: any piece of it may be
a piece of a password.
"""

from __future__ import annotations

import re

# Every keyword libpq 18 knows, in PQconndefaults' order (the order conninfo_to_dict returns
# them in, which make_conninfo keeps); tests compare this with the bundled libpq's.
LIBPQ_KEYWORDS = (
    "service",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "min_protocol_version",
    "max_protocol_version",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "replication",
    "target_session_attrs",
    "load_balance_hosts",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "sslkeylogfile",
)
_KEYWORD_RANK = {keyword: rank for rank, keyword in enumerate(LIBPQ_KEYWORDS)}

_URI_PREFIXES = ("postgresql://", "postgres://")
# C's isspace() in the "C" locale, which is what libpq's key=value parser uses.
_C_SPACE = frozenset(" \t\n\v\f\r")
# psycopg's make_conninfo quotes a value when Python's \s matches anywhere in it.
_NEEDS_ESCAPE = re.compile(r"([\\'])")
_HAS_SPACE = re.compile(r"\s")


def parse_conninfo(text: str) -> dict[str, str]:
    """The parameters ``text`` sets, as ``psycopg.conninfo.conninfo_to_dict`` returns them.

    Raises ValueError for text libpq would refuse; the message never quotes the text.
    """
    # libpq reads a C string: whatever follows a NUL is not there.
    text = text.partition("\x00")[0]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("connection string is not valid Unicode") from None
    params = _parse_uri(text) if text.startswith(_URI_PREFIXES) else _parse_keywords(text)
    return {key: params[key] for key in sorted(params, key=_KEYWORD_RANK.__getitem__)}


def make_conninfo(base: str = "", **extra: str | None) -> str:
    """``base`` with ``extra`` merged in, as ``psycopg.conninfo.make_conninfo`` writes it.

    With nothing to add, ``base`` comes back unchanged (after checking that it parses).
    """
    if not base and not extra:
        return ""
    if not extra:
        parse_conninfo(base)
        return str(base)
    given = {key: value for key, value in extra.items() if value is not None}
    merged = parse_conninfo(base) if base else {}
    merged.update(given)
    result = " ".join(f"{key}={_quote(str(value))}" for key, value in merged.items())
    parse_conninfo(result)  # an unknown keyword in `extra` fails here, as in psycopg
    return result


def _quote(value: str) -> str:
    if not value:
        return "''"
    value = _NEEDS_ESCAPE.sub(r"\\\1", value)
    if _HAS_SPACE.search(value):
        value = f"'{value}'"
    return value


def _store(params: dict[str, str], keyword: str, value: str) -> bool:
    """libpq's conninfo_storeval: False for a keyword libpq does not know."""
    if keyword == "requiressl":  # libpq's pre-9.x spelling, still translated
        keyword, value = "sslmode", ("require" if value.startswith("1") else "prefer")
    if keyword not in _KEYWORD_RANK:
        return False
    params[keyword] = value
    return True


def _parse_keywords(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, end = 0, len(text)
    while i < end:
        if text[i] in _C_SPACE:
            i += 1
            continue
        start = i
        while i < end and text[i] != "=" and text[i] not in _C_SPACE:
            i += 1
        keyword = text[start:i]
        while i < end and text[i] in _C_SPACE:
            i += 1
        if i >= end or text[i] != "=":
            raise ValueError(
                f"missing '=' after a keyword at offset {start} of the connection string"
            )
        i += 1
        while i < end and text[i] in _C_SPACE:
            i += 1
        value, i = _read_value(text, i)
        if not _store(params, keyword, value):
            raise ValueError(f"invalid connection option at offset {start}")
    return params


def _read_value(text: str, i: int) -> tuple[str, int]:
    """The value starting at ``text[i]`` (quoted or bare, backslash escapes) and where it ends."""
    end = len(text)
    quoted = i < end and text[i] == "'"
    if quoted:
        i += 1
    value: list[str] = []
    while True:
        if i >= end:
            if quoted:
                raise ValueError("unterminated quoted string in the connection string")
            return "".join(value), i
        char = text[i]
        i += 1
        if char == "\\":
            if i < end:
                value.append(text[i])
                i += 1
        elif (char == "'" and quoted) or (char in _C_SPACE and not quoted):
            return "".join(value), i
        else:
            value.append(char)


def _uri_decode(raw: str, part: str) -> str:
    """libpq's conninfo_uri_decode: %XX escapes, blanks only around the value."""
    stripped = raw.lstrip(" ")
    if " " in stripped.rstrip(" "):
        raise ValueError(f"unexpected spaces in the URI's {part}; use %20 instead")
    stripped = stripped.rstrip(" ")
    if "%" not in stripped:
        return stripped
    out = bytearray()
    i = 0
    data = stripped.encode("utf-8")
    while i < len(data):
        byte = data[i]
        if byte != 0x25:  # '%'
            out.append(byte)
            i += 1
            continue
        digits = data[i + 1 : i + 3]
        if len(digits) != 2 or not all(chr(d) in "0123456789abcdefABCDEF" for d in digits):
            raise ValueError(f"invalid percent-encoded token in the URI's {part}")
        code = int(digits, 16)
        if code == 0:
            raise ValueError(f"forbidden value %00 in the URI's {part}")
        out.append(code)
        i += 3
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the URI's {part} does not decode to UTF-8") from None


def _parse_uri(uri: str) -> dict[str, str]:
    params: dict[str, str] = {}
    prefix = next(prefix for prefix in _URI_PREFIXES if uri.startswith(prefix))
    rest = _take_userinfo(uri[len(prefix) :], params)
    pos, terminator = _take_hosts(rest, params)
    # /dbname, then ?key=value&... (the query overrides anything set before).
    if terminator and terminator != "?":
        start = pos = pos + 1
        while pos < len(rest) and rest[pos] != "?":
            pos += 1
        dbname = rest[start:pos]
        terminator = rest[pos : pos + 1]
        if dbname:
            params["dbname"] = _uri_decode(dbname, "database name")
    if terminator:
        _parse_query(rest[pos + 1 :], params)
    return params


def _take_userinfo(rest: str, params: dict[str, str]) -> str:
    """Store ``user[:password]@`` (if an "@" comes before the first "/"); return what follows."""
    slash = rest.find("/")
    at = rest.find("@", 0, slash if slash >= 0 else len(rest))
    if at < 0:
        return rest
    user, colon, password = rest[:at].partition(":")
    if user:
        params["user"] = _uri_decode(user, "user name")
    if colon and password:
        params["password"] = _uri_decode(password, "password")
    return rest[at + 1 :]


def _take_hosts(rest: str, params: dict[str, str]) -> tuple[int, str]:
    """Store the comma-separated ``host[:port]`` list ([IPv6] in brackets) as libpq does: hosts
    and ports joined by commas, a port left empty where its host has none. Returns where the
    list ends and the character that ended it ("" at the end of the URI)."""
    hosts: list[str] = []
    ports: list[str] = []
    pos = 0
    while True:
        if rest[pos : pos + 1] == "[":
            close = rest.find("]", pos + 1)
            if close < 0:
                raise ValueError("no matching ']' for an IPv6 host address in the URI")
            if close == pos + 1:
                raise ValueError("empty IPv6 host address in the URI")
            hosts.append(rest[pos + 1 : close])
            pos = close + 1
            if pos < len(rest) and rest[pos] not in ":/?,":
                raise ValueError(f"unexpected character at offset {pos} after an IPv6 address")
        else:
            start = pos
            while pos < len(rest) and rest[pos] not in ":/?,":
                pos += 1
            hosts.append(rest[start:pos])
        port = ""
        if rest[pos : pos + 1] == ":":
            start = pos = pos + 1
            while pos < len(rest) and rest[pos] not in "/?,":
                pos += 1
            port = rest[start:pos]
        ports.append(port)
        terminator = rest[pos : pos + 1]
        if terminator != ",":
            break
        pos += 1
    host_text, port_text = ",".join(hosts), ",".join(ports)
    if host_text:
        params["host"] = _uri_decode(host_text, "host")
    if port_text:
        params["port"] = _uri_decode(port_text, "port")
    return pos, terminator


def _parse_query(query: str, params: dict[str, str]) -> None:
    number = 0
    while query:
        number += 1
        pair, _, query = query.partition("&")
        if pair.count("=") > 1:
            raise ValueError(f"extra '=' in URI query parameter {number}")
        if "=" not in pair:
            raise ValueError(f"missing '=' in URI query parameter {number}")
        raw_key, _, raw_value = pair.partition("=")
        keyword = _uri_decode(raw_key, "query")
        value = _uri_decode(raw_value, "query")
        if keyword == "ssl" and value == "true":  # JDBC's spelling, which libpq accepts
            keyword, value = "sslmode", "require"
        if not _store(params, keyword, value):
            raise ValueError(f"invalid URI query parameter {number}")
