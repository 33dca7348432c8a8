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

import base64
import binascii
import hashlib
import ipaddress
import logging
import math
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracker.errors import ConfigurationError

logger = logging.getLogger("exporter")

_BCRYPT_HASH = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# bcrypt's cost is log2 of its rounds; the library accepts 4 to 31.
_MIN_COST, _MAX_COST = 4, 31

# exporter-toolkit's client_auth_type values (Go's tls.ClientAuthType names). Python's ssl cannot
# ask for a certificate without verifying it, so the two non-verifying policies are refused.
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
DEFAULT_FAILURE_BURST = 10
DEFAULT_FAILURES_PER_SECOND = 1.0


def bcrypt_cost(hashed: str | bytes) -> int:
    """The cost (log2 of the rounds) of a bcrypt hash such as ``$2y$10$...``."""
    text = hashed.decode("ascii") if isinstance(hashed, bytes) else hashed
    match = _BCRYPT_HASH.match(text)
    if match is None:
        raise ValueError("not a bcrypt hash")
    return int(match.group(1))


def dummy_hash(users: Mapping[str, str]) -> bytes:
    """A hash nobody's password matches, checked for unknown users: it has the cost of the most
    expensive configured hash, so a wrong user name takes as long as the slowest wrong password
    and timing does not tell which names exist."""
    cost = max((bcrypt_cost(hashed) for hashed in users.values()), default=10)
    return b"$2b$%02d$" % cost + b"." * 53


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


@dataclass(frozen=True)
class Verdict:
    """The answer to one Authorization header: let in, refuse (401), or rate-limited (429,
    ``retry_after`` seconds)."""

    allowed: bool
    retry_after: int = 0

    @property
    def limited(self) -> bool:
        return self.retry_after > 0


_ALLOWED = Verdict(True)
_DENIED = Verdict(False)


class FailureLimiter:
    """A token bucket of failed password checks per client address.

    Each check takes a token before bcrypt runs (so parallel attempts cannot overrun the
    bucket), and a success gives it back: only failures spend the bucket. An IPv6 client is
    keyed by its /64, the block one host usually holds. At most ``max_clients`` buckets are
    kept; full ones (nothing to remember) are dropped first, then the least recently used.
    """

    def __init__(
        self,
        burst: int = DEFAULT_FAILURE_BURST,
        per_second: float = DEFAULT_FAILURES_PER_SECOND,
        *,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or not (math.isfinite(per_second) and per_second > 0):
            raise ValueError("a failure limit needs a burst of 1 or more and a positive rate")
        self.burst = burst
        self.per_second = per_second
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, client: str | None) -> float:
        """Take a token for ``client``: 0.0 if one was there, else the seconds until one is."""
        key = _client_key(client)
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.per_second
            self._buckets[key] = (tokens - 1, now)
            self._buckets.move_to_end(key)
            self._trim(now)
            return 0.0

    def give_back(self, client: str | None) -> None:
        """Return the token of a check that succeeded."""
        key = _client_key(client)
        with self._lock:
            if key in self._buckets:
                now = self._clock()
                self._buckets[key] = (min(self.burst, self._tokens(key, now) + 1), now)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_second)

    def _trim(self, now: float) -> None:
        if len(self._buckets) <= self._max_clients:
            return
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[key]
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)


def _client_key(client: str | None) -> str:
    if not client:
        return ""
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is slow on purpose (tens of ms per check at cost 10); Prometheus sends the same
    credentials every scrape, so a success is cached under a SHA-256 of user, password and hash,
    as exporter-toolkit does. Failures are never cached (a flood of distinct wrong passwords
    cannot push the right one out), and are rate-limited per client address instead
    (FailureLimiter): past the limit, a header that would need bcrypt gets 429 without it.
    """

    _CACHE_LIMIT = 1024
    _WARN_EVERY_SECONDS = 60.0

    def __init__(self, users: Mapping[str, str], *, limiter: FailureLimiter | None = None) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self.dummy_hash = dummy_hash(users)
        self.limiter = limiter or FailureLimiter()
        self._cache: OrderedDict[bytes, None] = OrderedDict()  # successes only
        self._lock = threading.Lock()
        self._warned_at = -math.inf

    def check(self, header: str | None, client: str | None = None) -> Verdict:
        """The verdict on ``header`` (the Authorization value) from address ``client``."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return _DENIED  # no header, or not Basic: nothing to hash, nothing to limit
        user, password = credentials
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return _ALLOWED
        wait = self.limiter.take(client)
        if wait > 0:
            self._warn(client)
            return Verdict(False, retry_after=max(1, math.ceil(wait)))
        import bcrypt

        try:
            matches = bcrypt.checkpw(password, hashed or self.dummy_hash) and hashed is not None
        except ValueError:  # bcrypt refuses passwords over 72 bytes; none was hashed
            matches = False
        if not matches:
            return _DENIED
        self.limiter.give_back(client)
        with self._lock:
            self._cache[key] = None
            while len(self._cache) > self._CACHE_LIMIT:
                self._cache.popitem(last=False)
        return _ALLOWED

    def _warn(self, client: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            quiet = now - self._warned_at < self._WARN_EVERY_SECONDS
            if not quiet:
                self._warned_at = now
        if quiet:
            logger.debug("basic auth: failed logins from %s rate-limited", client)
        else:
            logger.warning(
                "basic auth: too many failed logins from %s; answering 429 until the limit "
                "(%d, then %g per second) allows more",
                client,
                self.limiter.burst,
                self.limiter.per_second,
            )


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


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
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            raise ConfigurationError(
                f"{where}: the password of {name!r} is not a bcrypt hash "
                "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            )
        if not _MIN_COST <= bcrypt_cost(hashed) <= _MAX_COST:
            raise ConfigurationError(
                f"{where}: the bcrypt hash of {name!r} has cost {bcrypt_cost(hashed)}; "
                f"bcrypt accepts {_MIN_COST} to {_MAX_COST}"
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
