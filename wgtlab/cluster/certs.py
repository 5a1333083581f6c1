"""Certificates for a Dask cluster with mutual TLS: one cluster CA, and a bundle per member.

``init_certs(DIR, workers=N)`` writes ``DIR/ca`` (the CA; its key stays with the administrator),
and ``DIR/scheduler``, ``DIR/client``, ``DIR/worker-0`` ... bundles, each what one machine needs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wgtlab import defaults
from wgtlab.errors import ConfigError

__all__ = [
    "ROLES",
    "CertBundle",
    "init_certs",
    "init_local_certs",
    "issue_bundle",
    "security_for",
]

ROLES = ("scheduler", "client", "worker")
CA_DIR = "ca"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CERT = "cert.pem"
KEY = "key.pem"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Loopback is always a SAN: DaskCluster.local and tests connect there. (Dask itself does not
# check host names: a cluster has its own CA, and the CA's signature is what is checked.)
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
LOCAL_VALID_DAYS = 2  # DaskCluster.local: its CA and members are throwaways


@dataclass(frozen=True)
class CertBundle:
    """What one member of the cluster holds: the CA certificate, its own certificate and key."""

    name: str  # "scheduler", "client", "worker-3"
    role: str  # "scheduler" | "client" | "worker"
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def load(cls, path: str | Path, role: str, name: str | None = None) -> CertBundle:
        """The bundle at ``path`` (a bundle directory), or ``path/NAME`` inside a directory made
        by ``init_certs`` (``NAME`` defaults to the role; for workers, to the only worker)."""
        if role not in ROLES:
            raise ConfigError(f"certificate role must be one of {ROLES}, got {role!r}")
        directory = Path(path)
        if not directory.is_dir():
            raise ConfigError(
                f"certificate directory {str(directory)!r} does not exist; create one with "
                "`wgtlab certs init DIR`"
            )
        if not (directory / CERT).exists():
            directory = directory / _pick(directory, role, name)
        for filename in (CA_CERT, CERT, KEY):
            if not (directory / filename).is_file():
                raise ConfigError(
                    f"{str(directory)!r} is not a certificate bundle: {filename} is missing "
                    f"(a bundle holds {CA_CERT}, {CERT} and {KEY})"
                )
        bundle = cls(directory.name, role, directory / CA_CERT, directory / CERT, directory / KEY)
        bundle.check()
        return bundle

    def check(self) -> None:
        """Refuse a bundle whose certificate is not signed by its CA, or whose key is readable
        by other users."""
        mode = self.key_file.stat().st_mode & 0o077
        if mode and os.name == "posix":
            raise ConfigError(
                f"{self.key_file} is readable by other users (mode {oct(mode)}); run "
                f"`chmod 600 {self.key_file}`"
            )
        ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no message
            raise ConfigError(
                f"{self.cert_file} is not signed by the CA in {self.ca_file}; use the bundle "
                "`wgtlab certs init` made for this cluster"
            ) from exc

    def security(self, **options: Any) -> Any:
        """A ``distributed.Security`` for this member: mutual TLS, TLS 1.3, encryption required."""
        return security_for(self, **options)


def _pick(directory: Path, role: str, name: str | None) -> str:
    if name is not None:
        if not (directory / name / CERT).exists():
            raise ConfigError(f"no certificate bundle {name!r} in {str(directory)!r}")
        return name
    if role != "worker":
        return role
    workers = sorted(p.name for p in directory.glob("worker-*") if (p / CERT).exists())
    if len(workers) != 1:
        raise ConfigError(
            f"{str(directory)!r} holds {len(workers)} worker bundles ({', '.join(workers[:5])}); "
            "pass the one for this machine (e.g. --certs DIR/worker-0)"
        )
    return workers[0]


def security_for(*bundles: CertBundle, **options: Any) -> Any:
    """A ``distributed.Security`` holding each bundle's certificate for its role (one process
    may play several roles, as ``DaskCluster.local`` does); all bundles share one CA."""
    import ssl

    from distributed.security import Security

    if not bundles:
        raise ConfigError("security_for needs at least one certificate bundle")
    if len({b.ca_file.read_bytes() for b in bundles}) != 1:
        raise ConfigError("these certificate bundles come from different cluster CAs")
    files: dict[str, str] = {}
    for bundle in bundles:
        files[f"tls_{bundle.role}_cert"] = str(bundle.cert_file)
        files[f"tls_{bundle.role}_key"] = str(bundle.key_file)
    return Security(
        tls_ca_file=str(bundles[0].ca_file),
        require_encryption=True,
        tls_min_version=ssl.TLSVersion.TLSv1_3,
        **files,
        **options,
    )


# --- issuing ---------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (a key is never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _sans(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*_LOOPBACK, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _new_ca(cluster: str, valid_days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wgtlab"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"wgtlab cluster CA {cluster}"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_dir = directory / CA_DIR
    if not (ca_dir / CA_KEY).is_file():
        raise ConfigError(
            f"{str(directory)!r} holds no cluster CA ({CA_DIR}/{CA_KEY}); issue certificates "
            "where `wgtlab certs init` was run"
        )
    cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_dir / CA_KEY} is not the EC key wgtlab writes")
    return cert, key


def issue_bundle(
    directory: str | Path,
    name: str,
    role: str,
    *,
    hosts: Sequence[str] = (),
    valid_days: int = defaults.CERT_VALID_DAYS,
) -> CertBundle:
    """Issue a certificate for one member (``role``) from the CA in ``directory``, written as the
    bundle ``directory/NAME`` (key mode 0600)."""
    ca_cert, ca_key = _load_ca(Path(directory))
    return _issue(ca_cert, ca_key, Path(directory), name, role, hosts=hosts, valid_days=valid_days)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    directory: Path,
    name: str,
    role: str,
    *,
    hosts: Sequence[str] = (),
    valid_days: int = defaults.CERT_VALID_DAYS,
) -> CertBundle:
    if role not in ROLES:
        raise ConfigError(f"certificate role must be one of {ROLES}, got {role!r}")
    if not _NAME.match(name) or name == CA_DIR:
        raise ConfigError(
            f"bundle name {name!r} must be 1-63 letters, digits, '.', '_' or '-' (and not "
            f"{CA_DIR!r})"
        )
    target = directory / name
    if target.exists():
        raise ConfigError(f"{str(target)!r} exists already; choose another name")
    key = ec.generate_private_key(ec.SECP256R1())
    usages = (
        [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role == "client"  # a client only connects; the others also listen
        else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wgtlab"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(
            min(now + datetime.timedelta(days=valid_days), ca_cert.not_valid_after_utc)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(_sans(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    target.mkdir(mode=0o700)
    _write(target / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(target / CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(target / KEY, _key_pem(key), 0o600)
    return CertBundle(name, role, target / CA_CERT, target / CERT, target / KEY)


def init_certs(
    directory: str | Path,
    *,
    workers: int = defaults.DASK_CERT_WORKERS,
    hosts: Sequence[str] = (),
    valid_days: int = defaults.CERT_VALID_DAYS,
) -> dict[str, CertBundle]:
    """A new cluster CA in ``directory/ca`` and bundles ``scheduler``, ``client`` and
    ``worker-0`` .. ``worker-{N-1}``; ``hosts`` are extra names/IPs for the scheduler and
    worker certificates. ``directory`` must be new or empty."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 4096:
        raise ConfigError(f"workers must be an int in 0..4096, got {workers!r}")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(
            f"{str(directory)!r} is not empty; `wgtlab certs init` needs a new directory "
            "(use `wgtlab certs issue` to add members to an existing cluster)"
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cluster = os.urandom(4).hex()
    ca_cert, ca_key = _new_ca(cluster, max(valid_days, defaults.CA_VALID_DAYS))
    (directory / CA_DIR).mkdir(mode=0o700)
    _write(directory / CA_DIR / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(directory / CA_DIR / CA_KEY, _key_pem(ca_key), 0o600)
    bundles = {
        "scheduler": issue_bundle(
            directory, "scheduler", "scheduler", hosts=hosts, valid_days=valid_days
        ),
        "client": issue_bundle(directory, "client", "client", valid_days=valid_days),
    }
    for i in range(workers):
        name = f"worker-{i}"
        bundles[name] = issue_bundle(directory, name, "worker", hosts=hosts, valid_days=valid_days)
    return bundles


def init_local_certs(
    directory: str | Path, *, workers: int, valid_days: int = LOCAL_VALID_DAYS
) -> dict[str, CertBundle]:
    """Bundles ``scheduler``, ``client`` and ``worker-0`` .. for a cluster on this machine
    (``DaskCluster.local``), under a CA that exists only for this call: its private key is
    never written anywhere and is dropped when this returns, so nobody (including whoever
    reads ``directory``) can issue another certificate of this cluster. Only the members' own
    keys are written (mode 0600, in ``directory``, which must be new; created mode 0700)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700)
    ca_cert, ca_key = _new_ca(f"local-{os.urandom(4).hex()}", valid_days)
    bundles = {
        name: _issue(ca_cert, ca_key, directory, name, role, valid_days=valid_days)
        for name, role in [
            ("scheduler", "scheduler"),
            ("client", "client"),
            *((f"worker-{i}", "worker") for i in range(workers)),
        ]
    }
    return bundles
