"""TLS for tracker._db.wire, as libpq's sslmode, sslrootcert, sslcert and sslkey describe it.

Imported only once a server has agreed to TLS: ``ssl`` loads OpenSSL, several MB of RSS.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat

from tracker._db.wire_errors import WireUnavailable
from tracker._db.wire_settings import Settings

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def wrap(sock: socket.socket, settings: Settings) -> ssl.SSLSocket:
    """``sock`` after a TLS handshake that checks what ``settings.sslmode`` asks for.

    As libpq does, every sslmode verifies the chain when a root certificate file exists (the
    given one or ~/.postgresql/root.crt): ``require`` then acts as ``verify-ca``, and ``prefer``
    goes on without TLS when the check fails. A client certificate is sent when its file exists.
    Raises WireUnavailable for a missing root certificate or an unsafe key file, and OSError
    (ssl.SSLError) when the handshake or the verification fails.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    mode = settings.sslmode
    has_root = os.path.exists(settings.sslrootcert)
    # libpq verifies the chain whenever a root certificate file exists, whatever the sslmode.
    if mode in ("verify-ca", "verify-full") or has_root:
        if not has_root:
            raise WireUnavailable(
                f"root certificate file {settings.sslrootcert} does not exist; either provide "
                "the file, use the system's trusted roots with sslrootcert=system, or change "
                "sslmode to disable server certificate verification"
            )
        context.load_verify_locations(cafile=settings.sslrootcert)
        context.check_hostname = mode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
        # libpq (OpenSSL's defaults) accepts CA certificates Python 3.13's strict mode rejects.
        context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        # Like libpq, fall back to the subject's CN when a certificate has no DNS names.
        context.hostname_checks_common_name = True
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = _VERSIONS[settings.ssl_min_protocol_version]
    if settings.ssl_max_protocol_version:
        context.maximum_version = _VERSIONS[settings.ssl_max_protocol_version]
    if os.path.exists(settings.sslcert):
        _check_key_file(settings.sslkey)
        try:
            context.load_cert_chain(settings.sslcert, settings.sslkey)
        except (OSError, ValueError) as exc:
            raise WireUnavailable(f"could not load the client certificate: {exc}") from None
    name = settings.host if (settings.sslsni or mode == "verify-full") else None
    if name is not None and mode != "verify-full" and _is_ip(name):
        name = None  # no SNI for an IP address, as libpq
    return context.wrap_socket(sock, server_hostname=name)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_key_file(path: str) -> None:
    """libpq's rule: the key file is the user's with no group/world access (0600), or root's
    with at most group read (0640)."""
    try:
        info = os.stat(path)
    except OSError:
        raise WireUnavailable(f"certificate present, but not private key file {path}") from None
    if not stat.S_ISREG(info.st_mode):
        raise WireUnavailable(f'private key file "{path}" is not a regular file')
    too_open = (info.st_uid == os.geteuid() and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)) or (
        info.st_uid == 0 and info.st_mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO)
    )
    if too_open:
        raise WireUnavailable(
            f'private key file "{path}" has group or world access; file must have permissions '
            "u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) "
            "or less if owned by root"
        )
