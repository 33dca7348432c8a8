"""Which database pipetrack talks to, and how to show that without leaking a password.

Order: an explicit DSN (``--dsn``), ``PIPETRACK_DSN`` (alias ``MONITOR_DB_CONN``), libpq's ``PG*``
variables (each with its ``MONITOR_DB_*`` alias), and with none of those the embedded server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from tracker import _env
from tracker.errors import ConfigurationError

CONNECT_TIMEOUT_SECONDS = 5
_LIBPQ_PARAMS = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "service": "PGSERVICE",
}
REDACTED = "****"

# What a password looks like inside a DSN, for text we could not parse (a malformed DSN, an error
# message quoting one): key=value (quoted or bare), and the userinfo or query part of a URI.
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)", re.IGNORECASE)
# Greedy to the last "@" of the authority: users do write raw "@" and spaces in passwords.
_URI_USERINFO = re.compile(r"(postgres(?:ql)?://[^/@:?#\s]*:)([^/?#]+)(@)", re.IGNORECASE)
_URI_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&\s]*)", re.IGNORECASE)


@dataclass(frozen=True)
class DatabaseTarget:
    """A database to connect to. ``conninfo`` may hold a password: show ``redacted`` instead."""

    conninfo: str
    source: str
    embedded: bool = False
    secrets: tuple[str, ...] = field(default=(), repr=False)
    connect_kwargs: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: for targets named by environment variables: the libpq parameters, password masked
    description: str = ""

    def __repr__(self) -> str:
        return f"DatabaseTarget({self.redacted!r}, source={self.source!r})"

    @property
    def redacted(self) -> str:
        """The DSN as it may appear in logs, errors and CLI output."""
        if self.conninfo:
            return self.redact(redact_dsn(self.conninfo))
        return self.redact(self.description) or f"({self.source})"

    def redact(self, text: str) -> str:
        """``text`` with every password this target knows of replaced."""
        return redact_text(text, self.secrets)


def redact_dsn(dsn: str) -> str:
    """A DSN (URI or key=value, well-formed or not) with its password masked."""
    text = _URI_USERINFO.sub(lambda m: m.group(1) + REDACTED + m.group(3), dsn)
    text = _URI_QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (and its URI-encoded form) replaced, longest first."""
    forms = {form for secret in secrets if secret for form in (secret, quote(secret, safe=""))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return redact_dsn(text)


def _passwords_in(dsn: str) -> list[str]:
    """Every password-looking value in ``dsn``, decoded and as written."""
    found: list[str] = []
    for match in _KV_PASSWORD.finditer(dsn):
        raw = match.group(2)
        found.append(raw)
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            found.append(re.sub(r"\\(.)", r"\1", raw[1:-1]))
    for pattern in (_URI_USERINFO, _URI_QUERY_PASSWORD):
        for match in pattern.finditer(dsn):
            found.extend((match.group(2), unquote(match.group(2))))
    return [value for value in found if value]


def _checked(dsn: str, source: str, secrets: list[str]) -> str:
    """``dsn`` if libpq can parse it; otherwise a ConfigurationError with the password masked."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = redact_text(_unquoted(str(exc).strip()), secrets)
        raise ConfigurationError(f"malformed DSN in {source}: {reason}") from None
    password = params.get("password")
    if isinstance(password, str) and password:
        secrets.append(password)
    return dsn


_QUOTED = re.compile(r'"([^"]*)"')


def _unquoted(reason: str) -> str:
    """libpq's reason for refusing a DSN, without the pieces of the DSN it quotes.

    libpq quotes what it could not read (``unexpected spaces found in "ss w0rd@db"``), and in a
    malformed DSN nobody can tell where a password ends: only libpq's own parameter names and
    punctuation are kept.
    """
    from psycopg import pq

    keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}

    def shown(match: re.Match[str]) -> str:
        piece = match.group(1)
        return match.group(0) if piece in keywords or len(piece) <= 1 else f'"{REDACTED}"'

    return _QUOTED.sub(shown, reason)


def resolve_target(
    dsn: str | None = None, *, environ: Mapping[str, str] | None = None
) -> DatabaseTarget:
    """The database pipetrack should use, from an explicit DSN or the environment.

    Returns an ``embedded`` target (with an empty conninfo) when nothing names a database; the
    caller starts the embedded server. Raises ConfigurationError for a DSN libpq cannot parse.
    """
    env = os.environ if environ is None else environ
    secrets = [env[name] for name in ("PGPASSWORD", "MONITOR_DB_PASSWORD") if env.get(name)]

    for source, value in (
        ("--dsn", dsn),
        (_env.PIPETRACK_DSN, env.get(_env.PIPETRACK_DSN)),
        (_env.MONITOR_DB_CONN, env.get(_env.MONITOR_DB_CONN)),
    ):
        if value is not None and value.strip():
            secrets.extend(_passwords_in(value))
            conninfo = _checked(value, source, secrets)
            return DatabaseTarget(conninfo=conninfo, source=source, secrets=tuple(secrets))

    # Aliases fill in only what libpq's own variable leaves unset; libpq reads PG* itself.
    aliases = {
        param: env[alias]
        for alias, (param, libpq_var) in _env.MONITOR_DB_ALIASES.items()
        if env.get(alias) and not env.get(libpq_var)
    }
    names_server = [v for v in _env.LIBPQ_TARGET_VARS if env.get(v)]
    alias_names_server = [p for p in aliases if p != "password"]
    if names_server or alias_names_server:
        source = "PG* environment" if names_server else "MONITOR_DB_* environment"
        if names_server and alias_names_server:
            source = "PG* and MONITOR_DB_* environment"
        shown = {param: env[var] for param, var in _LIBPQ_PARAMS.items() if env.get(var)}
        shown.update(aliases)
        description = " ".join(
            f"{k}={REDACTED if k == 'password' else v}" for k, v in sorted(shown.items())
        )
        return DatabaseTarget(
            conninfo="",
            source=source,
            secrets=tuple(secrets),
            connect_kwargs=aliases,
            description=description,
        )
    return DatabaseTarget(conninfo="", source="embedded", embedded=True, secrets=tuple(secrets))


def connect_params(target: DatabaseTarget, environ: Mapping[str, str] | None = None) -> str:
    """The full conninfo to connect with: the target plus pipetrack's timeout and name."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    env = os.environ if environ is None else environ
    extra: dict[str, str] = dict(target.connect_kwargs)
    params = conninfo_to_dict(target.conninfo) if target.conninfo else {}
    if "connect_timeout" not in params and not env.get("PGCONNECT_TIMEOUT"):
        extra["connect_timeout"] = str(CONNECT_TIMEOUT_SECONDS)
    if "application_name" not in params and not env.get("PGAPPNAME"):
        extra["application_name"] = "pipetrack"
    return make_conninfo(target.conninfo, **extra)


def default_user() -> str:
    """The user libpq logs in as when none is given: ``PGUSER``, else the effective OS user's
    name (libpq asks the password database, never ``$USER``)."""
    import pwd

    try:
        return os.environ.get("PGUSER") or pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a name (a container's): libpq fails too
        return ""
