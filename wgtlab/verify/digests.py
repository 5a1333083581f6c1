"""SHA-256 digests of task inputs and outputs, the one hash every verification mode agrees on.

Kept to hashlib so that importing ``wgtlab.verify`` stays cheap.
"""

from __future__ import annotations

import hashlib

from wgtlab.errors import ConfigError

DIGEST_SIZE = 32  # bytes of a SHA-256 digest


def _checked(data: object) -> object:
    if isinstance(data, str):
        raise ConfigError(
            "sha256 hashes bytes, not str: encode the text first (for example text.encode())"
        )
    return data


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte SHA-256 digest of ``data`` (any bytes-like object)."""
    return hashlib.sha256(_checked(data)).digest()  # type: ignore[arg-type]


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The SHA-256 digest of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(_checked(data)).hexdigest()  # type: ignore[arg-type]


def as_digest(value: bytes | bytearray | memoryview | str, what: str = "digest") -> bytes:
    """A 32-byte digest from raw bytes or 64 hex characters; anything else is a ConfigError."""
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ConfigError(f"{what} is not hex: expected 64 hex characters") from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise ConfigError(f"{what} must be bytes or a hex string, got {type(value).__name__}")
    if len(raw) != DIGEST_SIZE:
        raise ConfigError(f"{what} must be {DIGEST_SIZE} bytes (SHA-256), got {len(raw)}")
    return raw
