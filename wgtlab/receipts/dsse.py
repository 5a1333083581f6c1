"""DSSE envelopes (the in-toto ecosystem's signing envelope) on securesystemslib: signing, the
pre-authentication encoding, and a strict reading of an envelope from JSON.

securesystemslib owns the format and the signature check (``Envelope.pae``, ``CryptoSigner``,
``SSlibKey.verify_signature``); this module maps its errors to wgtlab's at the boundary and reads
envelopes strictly itself, so that a damaged file is named field by field instead of raising.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab.cluster.identity import fingerprint
from wgtlab.errors import ReceiptError
from wgtlab.receipts.identity import Identity

__all__ = ["PAYLOAD_TYPE", "Envelope", "pae", "sign"]

#: the DSSE payload type of an in-toto Statement
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP
    body``, what a signature covers (securesystemslib's implementation)."""
    from securesystemslib.dsse import Envelope as _Envelope

    return _Envelope(payload, payload_type, {}).pae()


def sign(payload: bytes, payload_type: str, identity: Identity) -> dict[str, Any]:
    """A DSSE envelope of ``payload`` signed by ``identity`` (Ed25519 over the PAE; the keyid is
    the key's fingerprint), as its JSON object."""
    from securesystemslib.dsse import Envelope as _Envelope
    from securesystemslib.signer import CryptoSigner, SSlibKey

    key = SSlibKey.from_crypto(identity.public_key, keyid=identity.fingerprint)
    envelope = _Envelope(payload, payload_type, {})
    envelope.sign(CryptoSigner(identity.private_key, key))
    return envelope.to_dict()


@dataclass(frozen=True)
class Envelope:
    """An envelope read from JSON: the payload bytes, its type, and (keyid, signature) pairs."""

    payload: bytes
    payload_type: str
    signatures: tuple[tuple[str | None, bytes], ...]

    @classmethod
    def parse(cls, doc: object) -> Envelope:
        """Read ``doc`` (the envelope's JSON object) strictly: every field of the right type,
        base64 (either alphabet, as DSSE allows) in its one canonical form, so that no altered
        character decodes to the same bytes. Anything else is a ReceiptError naming the field."""
        if not isinstance(doc, Mapping):
            raise ReceiptError(f"a DSSE envelope is a JSON object, got {type(doc).__name__}")
        missing = [k for k in ("payload", "payloadType", "signatures") if k not in doc]
        if missing:
            raise ReceiptError(f"not a DSSE envelope: no {', '.join(missing)}")
        payload_type = doc["payloadType"]
        if not isinstance(payload_type, str):
            raise ReceiptError("the envelope's payloadType is not a string")
        payload = _base64(doc["payload"], "the envelope's payload")
        signatures = doc["signatures"]
        if not isinstance(signatures, list) or not signatures:
            raise ReceiptError("the envelope has no signatures")
        pairs = []
        for i, entry in enumerate(signatures):
            if not isinstance(entry, Mapping) or "sig" not in entry:
                raise ReceiptError(f"signature {i} of the envelope has no sig")
            keyid = entry.get("keyid")
            if keyid is not None and not isinstance(keyid, str):
                raise ReceiptError(f"signature {i} of the envelope has a keyid that is no string")
            pairs.append((keyid, _base64(entry["sig"], f"signature {i} of the envelope")))
        return cls(payload, payload_type, tuple(pairs))

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether one of the signatures is ``public_key``'s over the PAE. Every signature is
        tried: DSSE keyids only narrow the search, they never decide it."""
        from securesystemslib.exceptions import UnverifiedSignatureError
        from securesystemslib.signer import Signature, SSlibKey

        key = SSlibKey.from_crypto(public_key, keyid=fingerprint(public_key))
        message = self.pae()
        for _, signature in self.signatures:
            try:
                key.verify_signature(Signature(key.keyid, signature.hex()), message)
            except UnverifiedSignatureError:
                continue
            return True
        return False

    @property
    def keyids(self) -> list[str]:
        return [k for k, _ in self.signatures if k]


def _base64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ReceiptError(f"{what} is not a base64 string")
    urlsafe = "-" in value or "_" in value
    text = value.translate(str.maketrans("-_", "+/")) if urlsafe else value
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptError(f"{what} is not valid base64 (a character was altered?)") from None
    again = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()
    if value not in (again, again.rstrip("=")):
        raise ReceiptError(
            f"{what} is not base64 in its canonical form (a character was altered: its unused "
            "bits are not zero)"
        )
    return raw
