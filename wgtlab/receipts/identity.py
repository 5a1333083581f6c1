"""The user's identity: the Ed25519 key that signs receipts, made once and kept mode 0600 in the
user's config directory (``$WGTLAB_IDENTITY`` names another file); and public keys as a
verifier gives them (hex, PEM, a file of either, a fingerprint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wgtlab.cluster.identity import SigningKey
from wgtlab.errors import ConfigError, IdentityKeyError
from wgtlab.keyfiles import Refusals, create_private, read_private

__all__ = [
    "IDENTITY_ENV",
    "Identity",
    "identity_path",
    "load_public_key",
    "public_pem",
    "user_identity",
]

IDENTITY_ENV = "WGTLAB_IDENTITY"
IDENTITY_FILE = "identity.key"
_MAX_KEY_FILE = 16 << 10  # a PEM key is a few hundred bytes


@dataclass(frozen=True)
class Identity(SigningKey):
    """An Ed25519 signing key and where it lives (``path`` None: held in memory only).
    ``created`` says the file was made by this call (the first receipt, or ``wgtlab
    identity``)."""

    private_key: Ed25519PrivateKey
    path: Path | None = None
    created: bool = False

    @classmethod
    def of(cls, key: Identity | Ed25519PrivateKey) -> Identity:
        """``key`` as an Identity (a bare private key is held in memory only)."""
        if isinstance(key, Identity):
            return key
        if isinstance(key, Ed25519PrivateKey):
            return cls(key)
        raise ConfigError(
            f"a receipt is signed with an Ed25519 private key (or None: your identity key), "
            f"got {type(key).__name__}"
        )

    @property
    def public_pem(self) -> str:
        return public_pem(self.public_key)

    def __repr__(self) -> str:  # never the private key
        where = f", {self.path}" if self.path else ""
        return f"Identity({self.fingerprint}{where})"


def identity_path() -> Path:
    """Where the user's identity key lives: ``$WGTLAB_IDENTITY``, else ``identity.key`` in the
    user's config directory (``platformdirs.user_config_dir("wgtlab")``)."""
    override = os.environ.get(IDENTITY_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("wgtlab")) / IDENTITY_FILE


def user_identity(path: Path | str | None = None) -> Identity:
    """The identity key at ``path`` (default ``identity_path()``), made if there is none yet:
    atomically, mode 0600, in a directory made 0700. A file that others may read or write, that
    another user owns, that is not a regular file or that holds no Ed25519 key is refused with an
    ``IdentityKeyError`` saying how to fix it."""
    where = Path(path) if path is not None else identity_path()
    try:
        return Identity(_read(where), where)
    except FileNotFoundError:
        pass
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    created = create_private(where, pem)
    return Identity(_read(where), where, created)


_REFUSALS = Refusals(
    error=IdentityKeyError,
    not_regular=(
        "the identity key {path} is not a regular file; remove it (a new identity is made) or "
        f"point ${IDENTITY_ENV} at your key file"
    ),
    shared=(
        "the identity key {path} may be read or written by others (mode {mode}): run "
        "`chmod 600 {path}` (if others may have read it, remove it instead: a new identity is "
        "made, and receipts it signed verify only with its old public key)"
    ),
    foreign=(
        "the identity key {path} belongs to another user (uid {uid}): set "
        f"${IDENTITY_ENV} to a key file of your own"
    ),
)


def _read(path: Path) -> Ed25519PrivateKey:
    pem = read_private(path, _MAX_KEY_FILE, refusals=_REFUSALS)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # not PEM, encrypted, or an unsupported algorithm
        raise IdentityKeyError(
            f"the identity key {path} is not an unencrypted PEM (PKCS#8) private key "
            f"({type(exc).__name__}); remove it and a new identity is made"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityKeyError(
            f"the identity key {path} holds a {type(key).__name__.removeprefix('_')}, not an "
            "Ed25519 key; remove it and a new identity is made"
        )
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), what ``wgtlab identity --pem`` prints."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(value: object) -> Ed25519PublicKey:
    """An Ed25519 public key as a verifier gives it: a key object, 32 raw bytes, 64 hex
    characters, PEM, or the path of a file holding hex or PEM (``wgtlab identity --pem >
    me.pub``). Anything else is a ConfigError saying what is accepted."""
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, Ed25519PrivateKey):
        raise ConfigError("give the public key (identity.public_key), not the private key")
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return Ed25519PublicKey.from_public_bytes(bytes(value))
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, os.PathLike):
        return load_public_key(_read_public(Path(value)))
    if not isinstance(value, str):
        raise ConfigError(
            f"a public key is 64 hex characters, PEM, or a file holding either; got "
            f"{type(value).__name__}"
        )
    text = value.strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
        except (ValueError, TypeError):
            raise ConfigError("the PEM given is not a public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("the PEM given is not an Ed25519 public key")
        return key
    if text and "\n" not in text and Path(text).expanduser().is_file():
        return load_public_key(_read_public(Path(text).expanduser()))
    raise ConfigError(
        f"{text[:24]!r}{'…' if len(text) > 24 else ''} is not a public key: give 64 hex "
        "characters, PEM, a file holding either (`wgtlab identity --pem > me.pub`), or a "
        "fingerprint ed25519:…"
    )


def _read_public(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the public key file {path}: {exc.strerror}") from None
    if len(raw) > _MAX_KEY_FILE:
        raise ConfigError(f"{path} is too large to be a public key file")
    text = raw.decode("ascii", "replace").strip()
    if "PRIVATE KEY" in text:
        raise ConfigError(
            f"{path} holds a private key: give the public key (`wgtlab identity --pem`)"
        )
    if not text.startswith("-----BEGIN") and not (len(text) == 64 and _is_hex(text)):
        raise ConfigError(f"{path} holds neither PEM nor 64 hex characters of a public key")
    return text


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
