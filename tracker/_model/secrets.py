"""Secrets masked out of error text before it is stored.

A failed command's stderr tail and an exception's traceback go to ``error_message`` and
``error_detail``, which the reader role, Grafana and the exporter's readers see. Programs print
connection strings, ``password=…`` settings and tokens in their errors, so those columns pass
through ``mask_secrets``: database DSNs (tracker._db.dsn), the userinfo of any URL, ``key=value``
and ``"key": "value"`` pairs whose key names a secret, ``Authorization:`` headers, and tokens
recognisable by their prefix (AWS access key ids, GitHub, GitLab, Slack, JWTs, private keys).
"""

from __future__ import annotations

import re

from tracker._db.dsn import REDACTED, redact_dsn

__all__ = ["mask_secrets"]

# A key that names a secret: password, passwd, pwd, secret, token, api_key, apikey, access_key,
# private_key, client_secret, credentials, auth ... (as a whole word or a suffix: AWS_SECRET_KEY).
_SECRET_WORDS = (
    r"passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"  # noqa: S105 (a pattern of key names)
    r"|credentials?|auth"
)
# key=value or key: value, value bare or quoted; also "key": "value" in JSON.
_PAIR = re.compile(
    rf"""(?P<key>["']?\b[\w.-]*(?:{_SECRET_WORDS})["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s,;&"'}]+)""",
    re.IGNORECASE,
)
# Authorization: Bearer abc / Basic abc / a bare token; Proxy-Authorization too.
_AUTHORIZATION = re.compile(
    r"(\bauthorization\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?)(\S+)", re.IGNORECASE
)
# scheme://user:password@host for any scheme (redis, mysql, https, amqp, ...).
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/@:\s]*:)([^/@\s]+)(@)", re.IGNORECASE)
_TOKENS = re.compile(
    r"\b(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
    r")"
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)


def _keep_key(match: re.Match[str]) -> str:
    value = match.group("value")
    if value[:1] in "\"'" and len(value) >= 2 and value[-1] == value[0]:
        return f"{match.group('key')}{value[0]}{REDACTED}{value[0]}"
    return match.group("key") + REDACTED


def mask_secrets(text: str) -> str:
    """``text`` with DSN passwords, secret-named values, credentials in URLs, authorization
    headers and recognisable tokens replaced by ``****``."""
    text = redact_dsn(text)
    text = _PRIVATE_KEY.sub(f"-----{REDACTED} PRIVATE KEY-----", text)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)
    text = _PAIR.sub(_keep_key, text)
    return _TOKENS.sub(REDACTED, text)
