"""Certificates for a Dask cluster with mutual TLS: one cluster CA, and a bundle per member.

``init_certs(DIR, workers=N)`` writes ``DIR/ca`` (the CA; its key stays with the administrator),
and ``DIR/scheduler``, ``DIR/client``, ``DIR/worker-0`` ... bundles, each what one machine needs.

Every certificate carries its role (scheduler, client or worker) as a purpose in its extended key
usage, signed by the CA like the rest of it. ``enforce_roles`` makes a ``wgtlab scheduler`` or
``wgtlab worker`` process act on it: a worker certificate joins the scheduler as a worker and
does nothing else (see ``WORKER_OPS``); it is never a client.
"""

from __future__ import annotations

import contextvars
import datetime
import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from wgtlab import defaults
from wgtlab.errors import ConfigError

__all__ = [
    "ROLES",
    "WORKER_OPS",
    "CertBundle",
    "certificate_role",
    "enforce_roles",
    "init_certs",
    "init_local_certs",
    "issue_bundle",
    "security_for",
]

logger = logging.getLogger(__name__)

ROLES = ("scheduler", "client", "worker")
# One purpose per role in the extended key usage (an OID under 2.25, the arc of UUID-named OIDs:
# no registration, no collision). The TLS layer sees them with the rest of the certificate.
_ROLE_ARC = "2.25.4505753381439860894618713861475389452"
ROLE_OIDS = {
    "client": ObjectIdentifier(f"{_ROLE_ARC}.1"),
    "worker": ObjectIdentifier(f"{_ROLE_ARC}.2"),
    "scheduler": ObjectIdentifier(f"{_ROLE_ARC}.3"),
}
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
        role = certificate_role(cert)
        if role is None:
            raise ConfigError(
                f"{self.cert_file} carries no wgtlab role (it was issued before certificates had "
                "roles, or not by wgtlab); issue new bundles with `wgtlab certs init` or "
                "`wgtlab certs issue`"
            )
        if role != self.role:
            wanted = "DIR/worker-N" if self.role == "worker" else f"DIR/{self.role}"
            raise ConfigError(
                f"{self.cert_file} is a {role} certificate; a {self.role} needs a {self.role} "
                f"certificate (the {wanted} bundle `wgtlab certs init` wrote)"
            )

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
    ) + [ROLE_OIDS[role]]
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


# --- roles on the wire -----------------------------------------------------------------------


def certificate_role(certificate: x509.Certificate | bytes) -> str | None:
    """The wgtlab role a certificate (PEM, DER or loaded) was issued for, or None if it
    names no role, or more than one."""
    if isinstance(certificate, bytes):
        certificate = (
            x509.load_pem_x509_certificate(certificate)
            if certificate.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(certificate)
        )
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    roles = [role for role, oid in ROLE_OIDS.items() if oid in usages]
    return roles[0] if len(roles) == 1 else None


# What a worker certificate may ask of the scheduler: join as a worker, and then report on its
# own tasks. Requests (``core.Server.handle_comm``), then the worker's batched stream
# (``Scheduler.worker_handlers`` and work stealing's reply). Nothing else: not the client ops
# (``register-client``, ``update-graph``, ``run_function``, ``broadcast``, ``proxy``, plugins,
# ``connection_stream``, ...), several of which run code on the scheduler or on workers.
WORKER_OPS = frozenset(
    {
        "register-worker",
        "heartbeat_worker",
        "who_has",
        "close",
        "task-finished",
        "task-erred",
        "release-worker-data",
        "add-keys",
        "long-running",
        "reschedule",
        "keep-alive",
        "log-event",
        "worker-status-change",
        "request-refresh-who-has",
        "steal-response",
        "close-stream",
    }
)
_TRUSTED = ("scheduler", "client")
_screening: contextvars.ContextVar[Any] = contextvars.ContextVar("wgtlab_screening", default=None)


class _Refused(Exception):
    """A message from a peer that its certificate's role does not allow."""


def enforce_roles(process_role: str) -> None:
    """Make this process (a ``wgtlab scheduler`` or ``wgtlab worker``) act on the role in each
    TLS peer's certificate, before anything that peer sent is decoded:

    - client and scheduler certificates: as stock Dask (they are the trusted roles);
    - at the scheduler, a worker certificate (or one with no role) may send only ``WORKER_OPS``
      on connections it opens, and never a pickle (``__Pickled__`` parts, which Dask unpickles
      while reading, whatever the op) on any connection, either way;
    - at a worker, nothing from a worker certificate (or one with no role) is read at all:
      workers do not talk to each other here, and peers' replies are where Dask unpickles.

    A refused connection is closed, and the refusal logged with the peer's name and address.
    Idempotent; applies to every TLS connection of this process, made before or after."""
    import distributed.comm.tcp as tcp

    if process_role not in ("scheduler", "worker"):
        raise ConfigError(f"roles are enforced by a scheduler or a worker, not {process_role!r}")
    if getattr(tcp.TLS.read, "wgtlab_roles", None) == process_role:
        return
    read = getattr(tcp.TLS.read, "wgtlab_original", tcp.TLS.read)
    from_frames = getattr(tcp.from_frames, "wgtlab_original", tcp.from_frames)

    async def screened_from_frames(frames: list[Any], *args: Any, **kwargs: Any) -> Any:
        screening = _screening.get()
        if screening is not None:
            _screen(frames, *screening)
        return await from_frames(frames, *args, **kwargs)

    async def guarded_read(comm: Any, deserializers: Any = None) -> Any:
        verdict = getattr(comm, "_wgtlab_verdict", None)
        if verdict is None:
            verdict = comm._wgtlab_verdict = _verdict(comm, process_role)
        if verdict[0] == "trust":
            return await read(comm, deserializers)
        if verdict[0] == "refuse":
            _refuse(comm, verdict[1], "workers take nothing from workers")
        first = not getattr(comm, "_wgtlab_read_once", False)
        comm._wgtlab_read_once = True
        token = _screening.set((verdict[0] == "listen", first))
        try:
            return await read(comm, deserializers)
        except _Refused as exc:
            _refuse(comm, verdict[1], str(exc))
        finally:
            _screening.reset(token)

    screened_from_frames.wgtlab_original = from_frames  # type: ignore[attr-defined]
    guarded_read.wgtlab_original = read  # type: ignore[attr-defined]
    guarded_read.wgtlab_roles = process_role  # type: ignore[attr-defined]
    tcp.from_frames = screened_from_frames
    tcp.TLS.read = guarded_read  # type: ignore[method-assign]


def _verdict(comm: Any, process_role: str) -> tuple[str, str]:
    """("trust" | "listen" | "answer" | "refuse", who the peer is) for one TLS connection:
    "listen" screens requests on a connection the peer opened, "answer" screens replies."""
    sock = getattr(getattr(comm, "stream", None), "socket", None)
    der = sock.getpeercert(binary_form=True) if sock is not None else None
    role, name = None, "no certificate"
    if der:
        cert = x509.load_der_x509_certificate(der)
        role = certificate_role(cert)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = f"{role or 'no-role'} certificate {names[0].value if names else '?'!r}"
    who = f"{name} at {comm.peer_address}"
    if role in _TRUSTED:
        return "trust", who
    if process_role == "worker":
        return "refuse", who
    return ("listen" if sock is not None and sock.server_side else "answer"), who


_HANDSHAKE = frozenset({"compression", "python", "pickle-protocol"})  # Comm.handshake_info
# Events only the scheduler logs, which clients act on (DaskCluster fails a worker's tasks at
# once when its topic says "remove-worker"); a worker may log events, but not these.
_SCHEDULER_EVENTS = frozenset({"add-worker", "remove-worker", "remove-client", "add-client"})


def _screen(frames: list[Any], listening: bool, first: bool) -> None:
    """Refuse a message with a pickle anywhere in it, or (``listening``) asking for an op a
    worker may not ask for (``first``: the connection's handshake, which has no op). Reads only
    the msgpack header frame, with nothing but msgpack."""
    import msgpack

    pickled = False

    def look(obj: dict[Any, Any]) -> dict[Any, Any]:
        nonlocal pickled
        pickled = pickled or "__Pickled__" in obj
        return obj

    if not frames:
        return
    try:
        message = msgpack.loads(
            frames[0], object_hook=look, use_list=False, strict_map_key=False, raw=False
        )
    except Exception as exc:
        raise _Refused(f"an undecodable message ({type(exc).__name__})") from None
    if pickled:
        raise _Refused("a pickled part in a message")
    if not listening or (first and isinstance(message, dict) and message.keys() <= _HANDSHAKE):
        return
    for item in message if isinstance(message, (list, tuple)) else (message,):
        if item == "OK":  # ends a stream
            continue
        op = item.get("op") if isinstance(item, dict) else None
        if op not in WORKER_OPS:
            raise _Refused(f"op {str(op)[:60]!r}, which a worker certificate may not ask for")
        event = item.get("msg") if op == "log-event" else None
        if isinstance(event, dict) and event.get("action") in _SCHEDULER_EVENTS:
            raise _Refused(f"a forged scheduler event ({event['action']!r})")


def _refuse(comm: Any, who: str, why: str) -> None:
    from distributed.comm.core import CommClosedError

    logger.warning("wgtlab: refused %s: %s; connection closed", who, why)
    comm.abort()
    raise CommClosedError(f"wgtlab refused {who}: {why}")
