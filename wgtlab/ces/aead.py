"""XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) on top of ``cryptography``'s ChaCha20-Poly1305.

``cryptography`` has no XChaCha variant, so the 24-byte nonce is folded in by HChaCha20, which
one block of its raw ChaCha20 cipher yields (see ``hchacha20``). Byte-identical to libsodium.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgtlab.errors import ConfigError, IntegrityError, KeyConfigError

KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_ZERO_BLOCK = bytes(64)
_WORDS = struct.Struct("<16I")
_OUT = struct.Struct("<8I")
_MASK = 0xFFFFFFFF

Buffer = bytes | bytearray | memoryview


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, nonce16): the 32-byte subkey XChaCha20 encrypts with.

    ChaCha20's 16-byte "nonce" in ``cryptography`` fills state words 12-15 (counter + nonce),
    exactly HChaCha20's input. A keystream block is ``rounds(state) + state``; HChaCha20's
    output is words 0-3 and 12-15 of ``rounds(state)``, so subtracting the known input words
    recovers it.
    """
    encryptor = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    block = _WORDS.unpack(encryptor.update(_ZERO_BLOCK))
    nonce_words = struct.unpack("<4I", nonce16)
    out = [(block[i] - _SIGMA[i]) & _MASK for i in range(4)]
    out += [(block[12 + i] - nonce_words[i]) & _MASK for i in range(4)]
    return _OUT.pack(*out)


class XChaCha20Poly1305:
    """AEAD with a 32-byte key and a 24-byte nonce: random nonces are safe for any volume.

    ``encrypt`` returns ciphertext + 16-byte tag; ``decrypt`` raises ``IntegrityError`` when the
    tag, nonce, associated data or key do not match. The ``*_into`` variants write into a
    caller's buffer (reuse it in hot loops) and return the number of bytes written.
    """

    __slots__ = ("_key",)

    def __init__(self, key: Buffer) -> None:
        raw = bytes(key)
        if len(raw) != KEY_BYTES:
            raise KeyConfigError(f"an XChaCha20-Poly1305 key is {KEY_BYTES} bytes, not {len(raw)}")
        self._key = raw

    def __repr__(self) -> str:
        return "XChaCha20Poly1305(key=<hidden>)"

    def _inner(self, nonce: Buffer) -> tuple[ChaCha20Poly1305, bytes]:
        nonce = bytes(nonce)
        if len(nonce) != NONCE_BYTES:
            raise ConfigError(
                f"an XChaCha20-Poly1305 nonce is {NONCE_BYTES} bytes, not {len(nonce)}"
            )
        return ChaCha20Poly1305(hchacha20(self._key, nonce[:16])), bytes(4) + nonce[16:]

    def encrypt(self, nonce: Buffer, data: Buffer, aad: Buffer | None = None) -> bytes:
        aead, inner_nonce = self._inner(nonce)
        return aead.encrypt(inner_nonce, data, aad)

    def decrypt(self, nonce: Buffer, data: Buffer, aad: Buffer | None = None) -> bytes:
        aead, inner_nonce = self._inner(nonce)
        try:
            return aead.decrypt(inner_nonce, data, aad)
        except InvalidTag:
            raise IntegrityError(
                "XChaCha20-Poly1305 authentication failed: the ciphertext, tag, nonce, "
                "associated data or key is not the one it was sealed with"
            ) from None

    def encrypt_into(
        self, nonce: Buffer, data: Buffer, aad: Buffer | None, buf: bytearray | memoryview
    ) -> int:
        aead, inner_nonce = self._inner(nonce)
        return aead.encrypt_into(inner_nonce, data, aad, buf)

    def decrypt_into(
        self, nonce: Buffer, data: Buffer, aad: Buffer | None, buf: bytearray | memoryview
    ) -> int:
        """Decrypt into ``buf`` (exactly ``len(data) - 16`` bytes); the bytes written.

        The plaintext is written before the tag is checked (OpenSSL decrypts and verifies in
        one pass), so on failure ``buf`` is zeroed before ``IntegrityError`` is raised: the
        caller never holds unauthenticated plaintext. Success pays nothing extra.
        """
        aead, inner_nonce = self._inner(nonce)
        try:
            return aead.decrypt_into(inner_nonce, data, aad, buf)
        except InvalidTag:
            _wipe(buf)
            raise IntegrityError(
                "XChaCha20-Poly1305 authentication failed: the ciphertext, tag, nonce, "
                "associated data or key is not the one it was sealed with"
            ) from None


def _wipe(buf: bytearray | memoryview) -> None:
    """Overwrite every byte of ``buf`` with zero."""
    with memoryview(buf) as view, view.cast("B") as flat:
        flat[:] = bytes(flat.nbytes)
