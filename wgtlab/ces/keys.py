"""Where CES keys come from (explicit, ``CES_ENCRYPTION_KEY``, ephemeral, per tenant) and the
subkeys one data key is split into. No function here ever puts key material in a message.
"""

from __future__ import annotations

import os
import secrets
import warnings
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wgtlab import defaults
from wgtlab.ces.audit import AuditPath, audit_log_from
from wgtlab.errors import EphemeralKeyWarning, KeyConfigError

KEY_BYTES = 32
KEY_ID_BYTES = 16
TENANT_SALT = b"wgt-ces-v1"
TENANT_INFO_PREFIX = b"ces-pipeline-"
MIN_MASTER_SECRET_BYTES = 16
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

KeyLike = bytes | bytearray | memoryview | str


def hkdf_sha256(secret: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869), the same function as Go's ``golang.org/x/crypto/hkdf``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def generate_key() -> bytes:
    """A fresh random 32-byte key from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def parse_hex_key(text: str, *, source: str = "the key") -> bytes:
    """32 bytes from exactly 64 hex characters; ``source`` names where the text came from."""
    if not text:
        problem = "is empty"
    elif len(text) != 2 * KEY_BYTES:
        problem = f"has {len(text)} characters"
    elif not _HEX_DIGITS.issuperset(text):
        problem = "contains characters that are not hex digits"
    else:
        return bytes.fromhex(text)
    raise KeyConfigError(
        f"{source} {problem}; expected exactly {2 * KEY_BYTES} hex characters (a 32-byte key), "
        "e.g. the output of `wgtlab keygen` or `openssl rand -hex 32`"
    )


def parse_key_bytes(data: bytes, *, source: str = "the key file") -> bytes:
    """32 bytes from a key file's contents: 64 hex characters (surrounding whitespace, e.g. a
    final newline, is ignored) or exactly 32 raw bytes. Anything else is a ``KeyConfigError``
    naming ``source`` and the accepted forms, never any of the bytes."""
    raw = bytes(data)
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES and _HEX_DIGITS.issuperset(text.decode("latin-1")):
        return bytes.fromhex(text.decode("ascii"))
    if len(raw) == KEY_BYTES and not _looks_like_text(raw):
        return raw
    if len(raw) == KEY_BYTES:
        problem = f"holds {KEY_BYTES} bytes of text, not random binary bytes"
    elif len(text) == 2 * KEY_BYTES:
        problem = f"holds {len(text)} characters that are not all hex digits"
    elif not raw:
        problem = "is empty"
    else:
        problem = f"holds {len(raw)} bytes"
    raise KeyConfigError(
        f"{source} {problem}; expected {2 * KEY_BYTES} hex characters (optionally followed by "
        f"a newline), e.g. from `wgtlab keygen > FILE`, or exactly {KEY_BYTES} raw bytes, e.g. "
        f"from `head -c {KEY_BYTES} /dev/urandom > FILE`"
    )


def _looks_like_text(raw: bytes) -> bool:
    # 32 random bytes are all printable ASCII with odds of about 1e-13: a 32-byte file of text
    # is a short hex key, a passphrase or a typo, not a raw key.
    return all(32 <= b < 127 or b in b"\t\n\r" for b in raw)


def key_from_env(variable: str = defaults.CES_KEY_ENV) -> bytes | None:
    """The key in ``$CES_ENCRYPTION_KEY``, None if the variable is unset; malformed -> error."""
    text = os.environ.get(variable)
    if text is None:
        return None
    return parse_hex_key(text, source=f"the environment variable {variable}")


def coerce_key(key: KeyLike) -> bytes:
    """An explicit key as 32 bytes: raw bytes, or a 64-character hex string."""
    if isinstance(key, str):
        return parse_hex_key(key)
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
        if len(raw) != KEY_BYTES:
            raise KeyConfigError(
                f"the key is {len(raw)} bytes long; a CES key is exactly {KEY_BYTES} bytes "
                "(or 64 hex characters). Generate one with `wgtlab keygen`."
            )
        return raw
    raise KeyConfigError(
        f"a CES key is 32 bytes or a 64-character hex string, not a {type(key).__name__}"
    )


def resolve_key(key: KeyLike | None = None, *, stacklevel: int = 2) -> tuple[bytes, str]:
    """The data key and where it came from: ``"explicit"``, ``"environment"`` or ``"ephemeral"``.

    Order: the key passed in; else ``$CES_ENCRYPTION_KEY``; else a random key, with an
    ``EphemeralKeyWarning`` because nothing outside this process can ever decrypt that data.
    """
    if key is not None:
        return coerce_key(key), "explicit"
    from_env = key_from_env()
    if from_env is not None:
        return from_env, "environment"
    warnings.warn(
        f"no CES key given and {defaults.CES_KEY_ENV} is not set: using a random key that lives "
        "only in this process. The data cannot be reconstructed by another process or after a "
        f"restart. Pass key=... or set {defaults.CES_KEY_ENV} (see `wgtlab keygen`).",
        EphemeralKeyWarning,
        stacklevel=stacklevel + 1,
    )
    return generate_key(), "ephemeral"


def derive_tenant_key(
    tenant_id: str | bytes, master_secret: bytes, *, audit_log: AuditPath | None = None
) -> bytes:
    """A tenant's 32-byte key: HKDF-SHA256(master_secret, salt=b"wgt-ces-v1",
    info=b"ces-pipeline-" + tenant_id), byte for byte the Go example of the security guidelines.

    With the audit log on (``audit_log`` path, else ``$WGTLAB_AUDIT_LOG``) the derivation is
    recorded (the derived key's id and a hash of the tenant id) before the key is returned; a
    log that cannot be written is an ``AuditLogError`` and no key is returned.
    """
    audit = audit_log_from(audit_log)
    tenant = tenant_id.encode() if isinstance(tenant_id, str) else bytes(tenant_id)
    if not tenant:
        raise KeyConfigError("tenant_id is empty; give each tenant a distinct, non-empty id")
    if not isinstance(master_secret, bytes | bytearray | memoryview):
        raise KeyConfigError(
            f"master_secret must be bytes, not {type(master_secret).__name__} "
            "(decode a hex secret with bytes.fromhex first)"
        )
    if len(master_secret) < MIN_MASTER_SECRET_BYTES:
        raise KeyConfigError(
            f"master_secret is {len(master_secret)} bytes; use at least "
            f"{MIN_MASTER_SECRET_BYTES} random bytes (32 recommended)"
        )
    key = hkdf_sha256(bytes(master_secret), salt=TENANT_SALT, info=TENANT_INFO_PREFIX + tenant)
    if audit is not None:
        audit.record("derive", KeySchedule.from_key(key).key_id, tenant=tenant)
    return key


@dataclass(frozen=True, repr=False)
class KeySchedule:
    """The subkeys one data key is split into, so no key is used for two purposes.

    ``key_id`` is public (it is written in every shard header) and identifies the key without
    revealing it; ``seal_key`` encrypts segments; ``mac_key`` authenticates shard headers.
    """

    key_id: bytes
    seal_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)

    @classmethod
    def from_key(cls, key: bytes) -> KeySchedule:
        def sub(purpose: bytes, length: int = KEY_BYTES) -> bytes:
            return hkdf_sha256(key, salt=TENANT_SALT, info=b"ces-subkey-" + purpose, length=length)

        return cls(key_id=sub(b"key-id", KEY_ID_BYTES), seal_key=sub(b"seal"), mac_key=sub(b"mac"))

    def __repr__(self) -> str:
        return f"KeySchedule(key_id={self.key_id.hex()})"
