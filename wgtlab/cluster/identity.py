"""Worker identities: an Ed25519 key per worker, and the signature over each result.

The manager keys trust by the fingerprint of a worker's public key, not by its name, so a worker
cannot inherit another's trust by taking its name.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wgtlab.errors import SignatureError

_RESULT_DOMAIN = b"wgt-result-v2\x00"


def fingerprint(public_key: Ed25519PublicKey | bytes) -> str:
    """``ed25519:`` + the first 16 bytes of SHA-256 over the raw public key, in hex."""
    raw = public_key if isinstance(public_key, bytes) else public_bytes(public_key)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def result_message(
    job_id: str,
    task_id: int,
    chunk: int,
    input_digest: bytes,
    code_digest: bytes,
    outcome_digest: bytes,
) -> bytes:
    """What a worker signs: the job, the task, the chunk, the SHA-256 of the input it was given
    and of the code it ran, and the digest of its outcome. A signature thus vouches for "this
    code on this input gave this", which a receipt's reader can check without the client."""
    job = job_id.encode()
    return (
        _RESULT_DOMAIN
        + struct.pack(">I", len(job))
        + job
        + struct.pack(">QQ", task_id, chunk)
        + input_digest
        + code_digest
        + outcome_digest
    )


class SigningKey:
    """An Ed25519 private key and what others know it by: its public key (raw bytes) and its
    fingerprint. Workers sign results with one; users sign receipts with one."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return public_bytes(self.public_key)

    @property
    def fingerprint(self) -> str:
        """``ed25519:`` + 32 hex characters of the public key's SHA-256."""
        return fingerprint(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


@dataclass(frozen=True)
class WorkerIdentity(SigningKey):
    """A worker's name and signing key."""

    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> WorkerIdentity:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, name: str, directory: Path | str) -> WorkerIdentity:
        """The identity kept in ``directory/NAME.ed25519`` (created with mode 0600 if absent)."""
        path = Path(directory) / f"{name}.ed25519"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise SignatureError(f"{path} does not hold an Ed25519 private key")
            return cls(name, key)
        identity = cls.generate(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return identity


def verify_signature(
    public_key: Ed25519PublicKey | bytes, signature: bytes, message: bytes
) -> None:
    """Raise SignatureError unless ``signature`` is the key's signature over ``message``."""
    key = (
        Ed25519PublicKey.from_public_bytes(public_key)
        if isinstance(public_key, bytes)
        else public_key
    )
    try:
        key.verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(
            f"result signature does not verify for worker key {fingerprint(key)}"
        ) from exc
