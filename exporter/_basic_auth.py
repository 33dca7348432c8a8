"""HTTP basic auth for the exporter's web config: bcrypt checks, a cache of successes, and a
limit on failed logins per client.

Only successful checks are cached (LRU), so a flood of wrong passwords cannot flush the right
one; failures are rate-limited per client address (a token bucket; IPv6 per /64) and answered
429 without running bcrypt. An unknown user's password is checked against a dummy hash of the
configured users' highest cost, so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

logger = logging.getLogger("exporter")

BCRYPT_HASH = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# bcrypt's cost is log2 of its rounds; the library accepts 4 to 31.
MIN_COST, MAX_COST = 4, 31

# exporter-toolkit's client_auth_type values (Go's tls.ClientAuthType names). Python's ssl cannot
# ask for a certificate without verifying it, so the two non-verifying policies are refused.
DEFAULT_FAILURE_BURST = 10
DEFAULT_FAILURES_PER_SECOND = 1.0


def bcrypt_cost(hashed: str | bytes) -> int:
    """The cost (log2 of the rounds) of a bcrypt hash such as ``$2y$10$...``."""
    text = hashed.decode("ascii") if isinstance(hashed, bytes) else hashed
    match = BCRYPT_HASH.match(text)
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
