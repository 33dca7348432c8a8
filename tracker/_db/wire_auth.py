"""Password authentication for tracker._db.wire: MD5 and SCRAM-SHA-256 (RFC 5802/7677).

The hashes come from CPython's built-in ``_sha256``/``_md5`` modules where they exist, with HMAC
and PBKDF2 written out here: ``hashlib`` and ``hmac`` load OpenSSL's libcrypto, which costs a
process about 4 MB of RSS, the very thing the small client exists to avoid. Tests check these
primitives against hashlib's.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable
from typing import Any, Protocol

from tracker._db.wire_errors import WireUnavailable


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Any: ...


def _constructor(builtin_modules: tuple[str, ...], name: str) -> Callable[..., _Hash]:
    import importlib

    for module_name in builtin_modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found: Callable[..., _Hash] | None = getattr(module, name, None)
        if found is not None:
            return found
    import hashlib  # a Python built without the small hash modules

    constructor: Callable[..., _Hash] = getattr(hashlib, name)
    return constructor


def sha256(data: bytes = b"") -> _Hash:
    # _sha256 up to Python 3.11, _sha2 from 3.12.
    digest = _constructor(("_sha2", "_sha256"), "sha256")()
    digest.update(data)
    return digest


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return _HmacSha256(key).digest(message)


class _HmacSha256:
    """HMAC-SHA-256 (RFC 2104) with the keyed inner and outer states computed once."""

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = sha256(key).digest()
        key = key.ljust(64, b"\x00")
        self._inner = sha256(bytes(b ^ 0x36 for b in key))
        self._outer = sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        result: bytes = outer.digest()
        return result


def pbkdf2_sha256(password: bytes, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA-256 (RFC 8018), one 32-byte block: SCRAM's SaltedPassword."""
    prf = _HmacSha256(password)
    block = prf.digest(salt + b"\x00\x00\x00\x01")
    total = int.from_bytes(block, "big")
    for _ in range(iterations - 1):
        block = prf.digest(block)
        total ^= int.from_bytes(block, "big")
    return total.to_bytes(32, "big")


def md5_response(password: bytes, user: bytes, salt: bytes) -> bytes:
    """The answer to AuthenticationMD5Password: "md5" + md5(md5(password + user) + salt)."""
    md5 = _constructor(("_md5",), "md5")
    inner = md5()
    inner.update(password + user)
    outer = md5()
    outer.update(inner.hexdigest().encode("ascii") + salt)
    return b"md5" + outer.hexdigest().encode("ascii")


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def _compare_digest(a: bytes, b: bytes) -> bool:
    from _operator import _compare_digest  # what hmac.compare_digest is, without libcrypto

    result: bool = _compare_digest(a, b)
    return result


def saslprep(password: str) -> bytes:
    """The password as libpq's pg_saslprep prepares it (RFC 4013), or as given when that fails.

    ASCII passwords are used as they are; so is anything SASLprep prohibits, as libpq does.
    """
    raw = password.encode("utf-8", "surrogateescape")
    if raw.isascii():
        return raw
    import stringprep
    import unicodedata

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal:
        return raw
    prohibited = (
        stringprep.in_table_a1,
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if any(check(char) for char in normal for check in prohibited):
        return raw
    if any(stringprep.in_table_d1(char) for char in normal) and (
        any(stringprep.in_table_d2(char) for char in normal)
        or not stringprep.in_table_d1(normal[0])
        or not stringprep.in_table_d1(normal[-1])
    ):
        return raw
    return normal.encode("utf-8")


class ScramSha256:
    """The client side of one SCRAM-SHA-256 exchange, without channel binding ("n,,").

    1. ``client_first()`` goes in SASLInitialResponse;
    2. ``client_final(server_first)`` answers AuthenticationSASLContinue;
    3. ``verify(server_final)`` checks AuthenticationSASLFinal's server signature, so a server
       that does not know the password cannot pretend to.
    """

    MECHANISM = "SCRAM-SHA-256"

    def __init__(self, password: str, *, nonce: bytes | None = None) -> None:
        self._password = saslprep(password)
        self._nonce = nonce if nonce is not None else _b64(os.urandom(18))
        self._client_first_bare = b"n=,r=" + self._nonce
        self._server_signature = b""
        self.verified = False

    def client_first(self) -> bytes:
        return b"n,," + self._client_first_bare

    def client_final(self, server_first: bytes) -> bytes:
        if server_first.startswith(b"m="):
            raise WireUnavailable("the server asked for a SCRAM extension this client lacks")
        fields = _attributes(server_first)
        nonce, salt_b64, iterations_text = fields.get(b"r"), fields.get(b"s"), fields.get(b"i")
        if nonce is None or salt_b64 is None or iterations_text is None:
            raise WireUnavailable("malformed SCRAM message from the server")
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise WireUnavailable("invalid SCRAM response from the server (nonce mismatch)")
        try:
            salt = binascii.a2b_base64(salt_b64)
            iterations = int(iterations_text)
        except (binascii.Error, ValueError):
            raise WireUnavailable("malformed SCRAM message from the server") from None
        if iterations < 1:
            raise WireUnavailable("malformed SCRAM message from the server")
        salted = pbkdf2_sha256(self._password, salt, iterations)
        client_key = hmac_sha256(salted, b"Client Key")
        stored_key = sha256(client_key).digest()
        without_proof = b"c=biws,r=" + nonce  # biws = base64("n,,")
        auth_message = b",".join((self._client_first_bare, server_first, without_proof))
        signature = hmac_sha256(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac_sha256(salted, b"Server Key")
        self._server_signature = hmac_sha256(server_key, auth_message)
        return without_proof + b",p=" + _b64(proof)

    def verify(self, server_final: bytes) -> None:
        fields = _attributes(server_final)
        if b"e" in fields:
            raise WireUnavailable(
                "SCRAM authentication failed: " + fields[b"e"].decode("ascii", "replace")
            )
        try:
            given = binascii.a2b_base64(fields.get(b"v", b""))
        except binascii.Error:
            given = b""
        if not self._server_signature or not _compare_digest(given, self._server_signature):
            raise WireUnavailable("the server's SCRAM signature is wrong: it may be an impostor")
        self.verified = True


def _attributes(message: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for part in message.split(b","):
        name, sep, value = part.partition(b"=")
        if sep and len(name) == 1 and name not in fields:
            fields[name] = value
    return fields
