"""The settings one tracker._db.wire connection uses: libpq's parameters, its ``PG*``
environment fallbacks and ``.pgpass``, checked down to what the small client can honour.

Anything it cannot honour exactly as libpq would raises WireUnsupported, so the caller uses
psycopg (libpq) instead, which also gives libpq's own message for a value it rejects.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from tracker._db.wire_errors import WireUnsupported

logger = logging.getLogger("tracker")

# libpq's environment fallback for each parameter (PQconndefaults' envvar column).
ENV_FALLBACKS = {
    "service": "PGSERVICE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "dbname": "PGDATABASE",
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "client_encoding": "PGCLIENTENCODING",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "min_protocol_version": "PGMINPROTOCOLVERSION",
    "max_protocol_version": "PGMAXPROTOCOLVERSION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}

# Parameters the client honours, or whose every value it can ignore without changing behaviour.
_HANDLED = frozenset(
    {
        "host",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "connect_timeout",
        "application_name",
        "fallback_application_name",
        "options",
        "client_encoding",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslsni",
        "sslcompression",  # ignored by libpq itself since OpenSSL dropped compression
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "load_balance_hosts",  # one host only, so either value means the same
    }
)
# Parameters accepted only with the values listed (an empty value means libpq's default).
_ONLY = {
    "channel_binding": {"", "disable", "prefer"},  # prefer: fine to go without, which we do
    "gssencmode": {"", "disable", "prefer"},  # the bundled libpq has no GSSAPI: prefer = disable
    "target_session_attrs": {"", "any"},
    "sslnegotiation": {"", "postgres"},
    "sslcertmode": {"", "allow"},
    "min_protocol_version": {"", "3.0"},
    "max_protocol_version": {"", "3.0", "3.2", "latest"},
    "gssdelegation": {"", "0"},
}
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_UTF8_NAMES = {"utf8", "utf-8", "unicode"}
# libpq's EnvironmentOptions: variables it turns into startup-packet settings.
_ENVIRONMENT_OPTIONS = (("PGDATESTYLE", "datestyle"), ("PGTZ", "timezone"), ("PGGEQO", "geqo"))


@dataclass(frozen=True)
class Settings:
    """Everything needed to open one connection, defaults and fallbacks applied."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(repr=False)
    #: the password came from .pgpass (libpq says so when the server rejects it)
    password_from_file: bool
    connect_timeout: float | None
    application_name: str | None
    options: str
    sslmode: str
    sslrootcert: str
    sslcert: str
    sslkey: str
    sslsni: bool
    ssl_min_protocol_version: str
    ssl_max_protocol_version: str
    keepalives: bool
    keepalive_options: tuple[tuple[str, int], ...]
    #: run-time settings libpq sends from PGDATESTYLE, PGTZ and PGGEQO
    environment_options: tuple[tuple[str, str], ...] = ()

    @property
    def unix_socket(self) -> bool:
        return self.host.startswith("/")

    @property
    def socket_path(self) -> str:
        return os.path.join(self.host, f".s.PGSQL.{self.port}")


def resolve(params: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Settings:
    """The settings for ``params`` (a parsed conninfo), as libpq would complete them.

    Raises WireUnsupported for anything libpq would do that this client does not.
    """
    env = os.environ if environ is None else environ
    merged = {key: value for key, value in params.items() if value is not None}
    for key, var in ENV_FALLBACKS.items():
        if key not in merged and env.get(var) is not None:
            merged[key] = env[var]
    if "sslmode" not in merged and env.get("PGREQUIRESSL", "").startswith("1"):
        merged["sslmode"] = "require"  # libpq still honours the deprecated variable
    _check_supported(merged)

    host = merged.get("host", "")
    if not host:
        raise WireUnsupported("no host given: libpq's compiled-in socket directory is unknown")
    if "," in host or "," in merged.get("port", ""):
        raise WireUnsupported("several hosts or ports")
    if host.startswith("@"):
        raise WireUnsupported("abstract Unix socket names")
    port = _int(merged.get("port") or "5432", "port")
    if not 1 <= port <= 65535:
        raise WireUnsupported("port out of range")
    user = merged.get("user") or _os_user()
    dbname = merged.get("dbname") or user
    home = _home(env)
    password = merged.get("password") or None
    from_file = False
    if password is None:
        passfile = merged.get("passfile") or os.path.join(home, ".pgpass")
        password = _password_from_file(passfile, host, str(port), dbname, user)
        from_file = password is not None
    sslmode = merged.get("sslmode") or "prefer"
    if sslmode not in _SSLMODES:
        raise WireUnsupported("sslmode value")
    crl = os.path.join(home, ".postgresql", "root.crl")
    if sslmode != "disable" and not host.startswith("/") and os.path.exists(crl):
        raise WireUnsupported("a certificate revocation list (~/.postgresql/root.crl)")
    rootcert = merged.get("sslrootcert") or os.path.join(home, ".postgresql", "root.crt")
    if rootcert == "system":
        raise WireUnsupported("sslrootcert=system")
    sslsni = _flag(merged.get("sslsni", "1"), "sslsni")
    if not sslsni and sslmode == "verify-full" and not host.startswith("/"):
        raise WireUnsupported("sslsni=0 with sslmode=verify-full")
    return Settings(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=password,
        password_from_file=from_file,
        connect_timeout=_connect_timeout(merged.get("connect_timeout", "")),
        application_name=(
            merged.get("application_name") or merged.get("fallback_application_name") or None
        ),
        options=merged.get("options", ""),
        sslmode=sslmode,
        sslrootcert=rootcert,
        sslcert=merged.get("sslcert") or os.path.join(home, ".postgresql", "postgresql.crt"),
        sslkey=merged.get("sslkey") or os.path.join(home, ".postgresql", "postgresql.key"),
        sslsni=sslsni,
        ssl_min_protocol_version=_tls_version(merged, "ssl_min_protocol_version", "TLSv1.2"),
        ssl_max_protocol_version=_tls_version(merged, "ssl_max_protocol_version", ""),
        keepalives=_flag(merged.get("keepalives", "1"), "keepalives"),
        keepalive_options=tuple(
            (name, _int(merged[name], name))
            for name in ("keepalives_idle", "keepalives_interval", "keepalives_count")
            if merged.get(name)
        ),
        environment_options=tuple(
            (name, env[var]) for var, name in _ENVIRONMENT_OPTIONS if env.get(var)
        ),
    )


def _check_supported(merged: Mapping[str, str]) -> None:
    for key, value in merged.items():
        if key in _HANDLED:
            continue
        if key in _ONLY:
            if value not in _ONLY[key]:
                raise WireUnsupported(f"{key}={value}")
            continue
        if key == "krbsrvname" or value:
            # service, hostaddr, require_auth, requirepeer, sslcrl, sslpassword, GSS, OAuth...
            raise WireUnsupported(f"parameter {key}")
    encoding = merged.get("client_encoding", "")
    if encoding and encoding.lower() not in _UTF8_NAMES:
        raise WireUnsupported("client_encoding other than UTF8")


def _int(text: str, name: str) -> int:
    """libpq's pqParseIntParam: an integer, blanks around it allowed."""
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise WireUnsupported(f"{name} is not an integer") from None


def _flag(text: str, name: str) -> bool:
    if text not in ("0", "1"):
        raise WireUnsupported(f"{name} value")
    return text == "1"


def _connect_timeout(text: str) -> float | None:
    if not text.strip():
        return None
    seconds = _int(text, "connect_timeout")
    if seconds <= 0:
        return None
    return float(max(seconds, 2))  # libpq insists on at least two seconds


def _tls_version(merged: Mapping[str, str], key: str, default: str) -> str:
    value = merged.get(key) or default
    if value and value not in _TLS_VERSIONS:
        raise WireUnsupported(f"{key} value")
    return value


def _os_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise WireUnsupported("no user given and the OS user has no name") from None


def _home(env: Mapping[str, str]) -> str:
    """libpq's pqGetHomeDirectory: $HOME, else the password database's entry."""
    home = env.get("HOME")
    if home:
        return home
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return ""


def _password_from_file(path: str, host: str, port: str, dbname: str, user: str) -> str | None:
    """libpq's passwordFromFile: the first ``host:port:db:user:password`` line that matches.

    A Unix socket directory matches the host field ``localhost``. The file is ignored (with a
    warning, as libpq prints one) unless it is a plain file without group or world access.
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        logger.warning("password file %s is not a plain file", path)
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "password file %s has group or world access; permissions should be u=rw (0600) or less",
            path,
        )
        return None
    if host.startswith("/"):
        host = "localhost"
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if not line or line.startswith("#"):
            continue
        rest: str | None = line
        for token in (host, port, dbname, user):
            rest = _match_field(rest, token)
            if rest is None:
                break
        if rest is not None:
            return _unescape_password(rest)
    return None


def _match_field(line: str | None, token: str) -> str | None:
    """libpq's pwdfMatchesString: what follows the field if it is ``*`` or equals ``token``."""
    if line is None:
        return None
    if line.startswith("*:"):
        return line[2:]
    i = 0
    matched = 0
    while i < len(line):
        char = line[i]
        escaped = False
        if char == "\\" and i + 1 < len(line):
            i += 1
            char = line[i]
            escaped = True
        if char == ":" and not escaped and matched == len(token):
            return line[i + 1 :]
        if matched == len(token) or token[matched] != char:
            return None
        matched += 1
        i += 1
    return None


def _unescape_password(field: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(field) and field[i] != ":":
        if field[i] == "\\" and i + 1 < len(field):
            i += 1
        out.append(field[i])
        i += 1
    return "".join(out)
