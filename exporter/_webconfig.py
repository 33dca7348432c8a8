"""The web configuration file: TLS and basic auth, in Prometheus exporter-toolkit's format.

A subset of https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, default NoClientCert
      client_ca_file: ca.crt                         # optional
      min_version: TLS12                             # optional
      max_version: TLS13                             # optional
    basic_auth_users:
      alice: $2y$10$...                              # bcrypt hashes

The file is read once, at start-up, and every problem refuses the start with one clear line
(ConfigurationError). Keys of the toolkit's format that pipetrack does not implement are refused
by name rather than ignored, so nobody believes a setting is in force when it is not.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter._basic_auth import BCRYPT_HASH, MAX_COST, MIN_COST, BasicAuth, bcrypt_cost
from tracker.errors import ConfigurationError

logger = logging.getLogger("exporter")

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = {"tls_server_config", "basic_auth_users"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}
_UNSUPPORTED = {
    "http_server_config",
    "rate_limit",
    "cert",
    "key",
    "client_ca",
    "client_allowed_sans",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}


# Failed password checks a client address may make at once, and how many more per second after
# that (a token bucket): Prometheus with the right password never fails, while a guesser or a
# flood of wrong passwords gets 429 instead of a core's worth of bcrypt.
@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"

    def context(self) -> ssl.SSLContext:
        """A server-side SSLContext; ConfigurationError if the files cannot be used."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.maximum_version = _TLS_VERSIONS[self.max_version]
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"web config: cannot load certificate {self.cert_file} with key "
                f"{self.key_file}: {_reason(exc)}"
            ) from None
        context.verify_mode = _CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"web config: cannot load client_ca_file {self.client_ca_file}: {_reason(exc)}"
                ) from None
        return context


@dataclass(frozen=True)
class WebConfig:
    """What the web configuration file asks for; the empty default is plain HTTP, no auth."""

    tls: TLSSettings | None = None
    users: Mapping[str, str] = field(default_factory=dict, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.tls is None else self.tls.context()

    def authenticator(self) -> BasicAuth | None:
        return BasicAuth(self.users) if self.users else None


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web configuration file. Raises ConfigurationError naming the problem."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read web config {path}: {_reason(exc)}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigurationError(f"web config {path} is not valid YAML{line}") from None
    if raw is None:
        return WebConfig()
    section = _mapping(raw, f"web config {path}")
    _check_keys(section, _TOP_KEYS, f"web config {path}")
    base = path.parent
    tls = _tls(section.get("tls_server_config"), base, path)
    users = _users(section.get("basic_auth_users"), path)
    config = WebConfig(tls=tls, users=users)
    config.ssl_context()  # load the certificate now, so a bad one stops the start
    return config


def _tls(raw: Any, base: Path, path: Path) -> TLSSettings | None:
    where = f"web config {path}: tls_server_config"
    if raw is None:
        return None
    section = _mapping(raw, where)
    _check_keys(section, _TLS_KEYS, where)
    cert, key = section.get("cert_file"), section.get("key_file")
    if cert is None and key is None:
        return None  # as exporter-toolkit: no certificate means plain HTTP
    if not isinstance(cert, str) or not cert:
        raise ConfigurationError(f"{where}: key_file is set but cert_file is missing")
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"{where}: cert_file is set but key_file is missing")
    auth = section.get("client_auth_type") or "NoClientCert"
    if auth in _UNVERIFIED_CLIENT_AUTH:
        raise ConfigurationError(
            f"{where}: client_auth_type {auth} (a certificate that is not verified) is not "
            "supported; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
        )
    if auth not in _CLIENT_AUTH:
        raise ConfigurationError(
            f"{where}: unknown client_auth_type {auth!r} (expected one of "
            f"{', '.join(_CLIENT_AUTH)})"
        )
    ca = section.get("client_ca_file")
    if ca is not None and not isinstance(ca, str):
        raise ConfigurationError(f"{where}: client_ca_file must be a file name")
    if ca and auth == "NoClientCert":
        raise ConfigurationError(
            f"{where}: client_ca_file is set but client_auth_type is NoClientCert; "
            "set client_auth_type: RequireAndVerifyClientCert"
        )
    if not ca and auth != "NoClientCert":
        raise ConfigurationError(f"{where}: client_auth_type {auth} needs client_ca_file")
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = section.get(name) or default
        if value not in _TLS_VERSIONS:
            raise ConfigurationError(
                f"{where}: unknown {name} {value!r} (expected one of {', '.join(_TLS_VERSIONS)})"
            )
        versions[name] = str(value)
    if _TLS_VERSIONS[versions["min_version"]] > _TLS_VERSIONS[versions["max_version"]]:
        raise ConfigurationError(f"{where}: min_version is above max_version")
    return TLSSettings(
        cert_file=base / cert,
        key_file=base / key,
        client_auth_type=str(auth),
        client_ca_file=base / ca if ca else None,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
    )


def _users(raw: Any, path: Path) -> dict[str, str]:
    where = f"web config {path}: basic_auth_users"
    if raw is None:
        return {}
    section = _mapping(raw, where)
    users: dict[str, str] = {}
    for name, hashed in section.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigurationError(f"{where}: user names must be non-empty text without ':'")
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            raise ConfigurationError(
                f"{where}: the password of {name!r} is not a bcrypt hash "
                "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            )
        if not MIN_COST <= bcrypt_cost(hashed) <= MAX_COST:
            raise ConfigurationError(
                f"{where}: the bcrypt hash of {name!r} has cost {bcrypt_cost(hashed)}; "
                f"bcrypt accepts {MIN_COST} to {MAX_COST}"
            )
        users[name] = hashed
    return users


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where} must be a mapping of keys to values")
    return raw


def _check_keys(section: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in section:
        if key in _UNSUPPORTED:
            raise ConfigurationError(f"{where}: {key} is not supported by pipetrack's exporter")
        if key not in known:
            raise ConfigurationError(f"{where}: unknown key {key!r}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
