"""CES primitives: key sources, tenant keys (vs Go), XChaCha20-Poly1305 (vs libsodium), erasure."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import random

import nacl.bindings
import pytest

import wgtlab as wgt
from wgtlab.ces import keys
from wgtlab.ces.aead import XChaCha20Poly1305, hchacha20
from wgtlab.ces.erasure import (
    ISA_L_RS_CAUCHY,
    ISA_L_RS_VAND,
    ErasureCodec,
    choose_codec,
)
from wgtlab.errors import (
    ConfigError,
    EphemeralKeyWarning,
    IntegrityError,
    KeyConfigError,
    NotEnoughShardsError,
)

ENV = "CES_ENCRYPTION_KEY"
GOOD_HEX = "00112233445566778899aabbccddeeff" * 2

# --- key sources ---------------------------------------------------------------------------------


def test_explicit_key_wins_over_environment(monkeypatch):
    monkeypatch.setenv(ENV, GOOD_HEX)
    key = bytes(range(32))
    assert keys.resolve_key(key) == (key, "explicit")
    assert keys.resolve_key(bytes(range(32)).hex()) == (key, "explicit")


def test_environment_key_is_used(monkeypatch):
    monkeypatch.setenv(ENV, GOOD_HEX.upper())
    assert keys.resolve_key(None) == (bytes.fromhex(GOOD_HEX), "environment")
    pipe = wgt.CESPipeline()
    assert pipe.key_source == "environment"
    assert pipe.key_id == wgt.CESPipeline(bytes.fromhex(GOOD_HEX)).key_id


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        (GOOD_HEX[:-2], "has 62 characters"),
        (GOOD_HEX + "00", "has 66 characters"),
        (GOOD_HEX[:-1] + "g", "not hex digits"),
        (" " + GOOD_HEX[1:], "not hex digits"),
        (GOOD_HEX[:-1] + "\n", "not hex digits"),
        ("é" * 64, "not hex digits"),
    ],
)
def test_malformed_environment_key_is_refused_without_echo(monkeypatch, value, problem):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(KeyConfigError) as caught:
        wgt.CESPipeline()
    message = str(caught.value)
    assert ENV in message and problem in message and "64 hex characters" in message
    if value.strip():
        assert value.strip() not in message and GOOD_HEX[:16] not in message


def test_unset_environment_gives_ephemeral_key_with_warning(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.warns(EphemeralKeyWarning) as record:
        pipe = wgt.CESPipeline(data_shards=2, parity_shards=1)
    message = str(record[0].message)
    assert "cannot be reconstructed by another process or after a restart" in message
    assert record[0].filename == __file__  # points at the caller, not at wgtlab
    assert pipe.key_source == "ephemeral"
    shards = pipe.process(b"only this process can read me")
    assert pipe.reconstruct(shards) == b"only this process can read me"
    with pytest.warns(EphemeralKeyWarning):
        other = wgt.CESPipeline(data_shards=2, parity_shards=1)
    with pytest.raises(wgt.KeyMismatchError):
        other.reconstruct(shards)


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33, "ab" * 31, 12345, ["k"]])
def test_explicit_key_of_wrong_form_is_refused(bad):
    with pytest.raises(KeyConfigError) as caught:
        wgt.CESPipeline(key=bad)
    assert "32 bytes" in str(caught.value) or "64 hex" in str(caught.value)


def test_key_material_never_in_repr():
    key = bytes(range(32))
    pipe = wgt.CESPipeline(key)
    schedule = keys.KeySchedule.from_key(key)
    for text in (repr(pipe), repr(schedule), repr(XChaCha20Poly1305(key))):
        assert key.hex()[:16] not in text
        assert schedule.seal_key.hex()[:16] not in text and schedule.mac_key.hex()[:16] not in text


def test_subkeys_are_distinct_and_key_id_is_stable():
    schedule = keys.KeySchedule.from_key(bytes(32))
    assert len({schedule.key_id, schedule.seal_key, schedule.mac_key, bytes(32)}) == 4
    assert keys.KeySchedule.from_key(bytes(32)) == schedule


# --- tenant keys ---------------------------------------------------------------------------------

# Produced by the Go example of the security guidelines (getTenantKey, golang.org/x/crypto/hkdf),
# run with master secret bytes(range(32)) and the tenant ids below.
GO_TENANT_KEYS = {
    "acme": "fee3e1de64d6b0f34bedea2cb9823d0dba1f6b96d45ad172ec41e132a69dea8b",
    "tenant-42": "b946a33c86c55c3a896bfff766d1dec0761e6d16a6af7a61fc95c11448e38639",
    "Zürich €": "f2950301e6fef321ee1c2809fce83f758340f46dba3406471000b559e7a8ce8d",
}


@pytest.mark.parametrize(("tenant", "expected"), GO_TENANT_KEYS.items())
def test_tenant_key_matches_go_example(tenant, expected):
    assert wgt.ces.derive_tenant_key(tenant, bytes(range(32))).hex() == expected
    assert wgt.ces.derive_tenant_key(tenant.encode(), bytes(range(32))).hex() == expected


def _rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out from the RFC, as an independent reference."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def test_hkdf_rfc5869_test_case_1():
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = keys.hkdf_sha256(ikm, salt=salt, info=info, length=42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_tenant_keys_against_independent_hkdf():
    rng = random.Random(5)
    for _ in range(50):
        secret = rng.randbytes(rng.randint(16, 80))
        tenant = "".join(rng.choice("abcxyz-_0189é") for _ in range(rng.randint(1, 20)))
        expected = _rfc5869(secret, b"wgt-ces-v1", b"ces-pipeline-" + tenant.encode(), 32)
        assert wgt.ces.derive_tenant_key(tenant, secret) == expected


def test_tenant_pipelines_are_isolated():
    secret = os.urandom(32)
    acme = wgt.CESPipeline.for_tenant("acme", secret, data_shards=3, parity_shards=2)
    again = wgt.CESPipeline.for_tenant("acme", secret, data_shards=3, parity_shards=2)
    other = wgt.CESPipeline.for_tenant("globex", secret, data_shards=3, parity_shards=2)
    shards = acme.process(b"acme's ledger")
    assert again.reconstruct(shards) == b"acme's ledger"
    with pytest.raises(wgt.KeyMismatchError):
        other.reconstruct(shards)


@pytest.mark.parametrize(
    ("tenant", "secret", "problem"),
    [
        ("", os.urandom(32), "tenant_id is empty"),
        ("t", b"short", "at least 16"),
        ("t", "ab" * 32, "must be bytes"),
    ],
)
def test_tenant_key_refuses_bad_input(tenant, secret, problem):
    with pytest.raises(KeyConfigError, match=problem):
        wgt.ces.derive_tenant_key(tenant, secret)


def test_for_tenant_refuses_an_explicit_key_too():
    with pytest.raises(ConfigError):
        wgt.CESPipeline.for_tenant("t", os.urandom(32), key=os.urandom(32))


# --- XChaCha20-Poly1305 --------------------------------------------------------------------------


def test_hchacha20_draft_vector():
    # draft-irtf-cfrg-xchacha-03, section 2.2.1
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert hchacha20(key, nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    )


def test_xchacha_draft_vector():
    # draft-irtf-cfrg-xchacha-03, appendix A.3.1
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
        b"future, sunscreen would be it."
    )
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    key = bytes.fromhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
    nonce = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
    sealed = wgt.ces.XChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)
    assert sealed.hex() == (
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"
    )
    assert wgt.ces.XChaCha20Poly1305(key).decrypt(nonce, sealed, aad) == plaintext


def test_xchacha_matches_libsodium_on_random_cases():
    rng = random.Random(2026)
    for case in range(3000):
        key, nonce = rng.randbytes(32), rng.randbytes(24)
        data = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 63, 64, 65, rng.randint(0, 3000)]))
        aad = rng.randbytes(rng.randint(0, 40)) if case % 4 else b""
        ours = XChaCha20Poly1305(key).encrypt(nonce, data, aad)
        sodium = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key)
        assert ours == sodium, case
        assert XChaCha20Poly1305(key).decrypt(nonce, sodium, aad) == data


def test_xchacha_into_variants_match():
    key, nonce, data, aad = os.urandom(32), os.urandom(24), os.urandom(5000), b"ctx"
    aead = XChaCha20Poly1305(key)
    buf = bytearray(len(data) + 16)
    assert aead.encrypt_into(nonce, data, aad, buf) == len(buf)
    assert bytes(buf) == aead.encrypt(nonce, data, aad)
    out = bytearray(len(data))
    assert aead.decrypt_into(nonce, bytes(buf), aad, out) == len(data)
    assert bytes(out) == data


def test_xchacha_tampering_fails():
    key, nonce, aad = os.urandom(32), os.urandom(24), b"dataset 7, segment 3"
    aead = XChaCha20Poly1305(key)
    sealed = aead.encrypt(nonce, b"attack at dawn" * 10, aad)
    flipped_tag = sealed[:-1] + bytes([sealed[-1] ^ 1])
    flipped_body = bytes([sealed[0] ^ 0x80]) + sealed[1:]
    other_nonce = nonce[:-1] + bytes([nonce[-1] ^ 1])
    other_prefix = bytes([nonce[0] ^ 1]) + nonce[1:]  # the part HChaCha20 consumes
    for args in [
        (nonce, flipped_tag, aad),
        (nonce, flipped_body, aad),
        (other_nonce, sealed, aad),
        (other_prefix, sealed, aad),
        (nonce, sealed, aad + b"!"),
        (nonce, sealed, b""),
        (nonce, sealed[:-16], aad),
    ]:
        with pytest.raises(IntegrityError):
            aead.decrypt(*args)
        with pytest.raises(IntegrityError):
            aead.decrypt_into(*args, bytearray(max(0, len(args[1]) - 16)))
    with pytest.raises(IntegrityError):
        XChaCha20Poly1305(os.urandom(32)).decrypt(nonce, sealed, aad)


AUTH_FAILED = "XChaCha20-Poly1305 authentication failed"


@pytest.mark.parametrize(
    "tamper",
    ["flip a ciphertext bit", "flip a tag bit", "other associated data", "other key"],
)
def test_failed_decrypt_into_leaves_only_zeros(tamper):
    """OpenSSL writes the plaintext before checking the tag: none of it may survive a failure."""
    key, nonce, aad = os.urandom(32), os.urandom(24), b"dataset 7, segment 3"
    plaintext = b"account 4711 owes 1,000,000 EUR; " * 200
    sealed = XChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)
    opener = XChaCha20Poly1305(key)
    if tamper == "flip a ciphertext bit":
        sealed = sealed[:100] + bytes([sealed[100] ^ 0x01]) + sealed[101:]
    elif tamper == "flip a tag bit":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 0x80])
    elif tamper == "other associated data":
        aad = b"dataset 7, segment 4"
    else:
        opener = XChaCha20Poly1305(os.urandom(32))

    # A bytearray the exact size, pre-filled with a marker.
    out = bytearray(b"\xa5" * len(plaintext))
    with pytest.raises(IntegrityError, match=AUTH_FAILED) as caught:
        opener.decrypt_into(nonce, sealed, aad, out)
    assert bytes(out) == bytes(len(plaintext))
    assert "4711" not in str(caught.value) and key.hex() not in str(caught.value)

    # A writable window into a larger buffer: the window is zeroed, the rest is untouched.
    backing = bytearray(b"\x5a" * (len(plaintext) + 64))
    with memoryview(backing) as whole, pytest.raises(IntegrityError, match=AUTH_FAILED):
        opener.decrypt_into(nonce, sealed, aad, whole[32 : 32 + len(plaintext)])
    assert bytes(backing[32 : 32 + len(plaintext)]) == bytes(len(plaintext))
    assert bytes(backing[:32]) == bytes(backing[-32:]) == b"\x5a" * 32

    # The same buffer still works for a genuine ciphertext afterwards.
    genuine = XChaCha20Poly1305(key).encrypt(nonce, plaintext, b"dataset 7, segment 3")
    assert XChaCha20Poly1305(key).decrypt_into(nonce, genuine, b"dataset 7, segment 3", out) == (
        len(plaintext)
    )
    assert bytes(out) == plaintext


def test_failed_segment_leaves_no_plaintext_in_the_pipeline_scratch():
    """The pipeline decrypts segments into a reused per-thread buffer: a segment that fails
    authentication must not leave its decrypted (compressed) bytes there."""
    from wgtlab.ces import buffers
    from wgtlab.ces.shardset import ShardSet, memory_sources

    pipe = wgt.CESPipeline(bytes(range(32)), data_shards=2, parity_shards=1, segment_size=1024)
    secret = os.urandom(1000)  # incompressible: the compressed segment holds it verbatim
    shards = pipe.process(secret)
    shard_set = ShardSet.open(memory_sources(shards, None), pipe._keys)
    header = shard_set.header
    sealed = shard_set.sealed_segment(0)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])  # a tag bit
    buffers._scratch.buffer = scratch = bytearray(b"\xa5" * (1 << 20))
    with pytest.raises(
        IntegrityError, match=r"segment 0 of dataset [0-9a-f]{32} failed authentication"
    ):
        pipe._unseal(header, 0, tampered)
    used = len(sealed) - 1 - 24 - 16  # flags, nonce, tag
    assert bytes(scratch[:used]) == bytes(used)
    assert secret[:64] not in scratch
    assert bytes(pipe._unseal(header, 0, sealed)[1]).find(secret[:64]) >= 0  # genuine opens


def test_xchacha_refuses_bad_key_and_nonce():
    with pytest.raises(KeyConfigError):
        XChaCha20Poly1305(b"short")
    with pytest.raises(ConfigError):
        XChaCha20Poly1305(bytes(32)).encrypt(bytes(12), b"data", None)


# --- erasure coding ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "m"), [(0, 2), (2, 0), (-1, 1), (200, 56), (255, 1)])
def test_shard_counts_are_validated(k, m):
    with pytest.raises(ConfigError) as caught:
        wgt.CESPipeline(key=bytes(32), data_shards=k, parity_shards=m)
    assert "data_shards" in str(caught.value) or "parity_shards" in str(caught.value)


@pytest.mark.parametrize("bad", [2.0, "4", True, None])
def test_shard_counts_must_be_ints(bad):
    with pytest.raises(ConfigError):
        ErasureCodec(bad, 2)


def test_largest_configurations_work():
    for k, m in [(254, 1), (1, 254), (128, 127)]:
        codec = ErasureCodec(k, m)
        payload = os.urandom(10_000)
        fragments = codec.encode(payload)
        keep = dict(list(enumerate(fragments))[m:])
        assert codec.decode(keep) == payload


def test_codec_choice_follows_isa_l_guidance():
    assert choose_codec(8, 4) == ISA_L_RS_VAND  # the default: any 8 of 12
    assert choose_codec(10, 4) == ISA_L_RS_VAND and choose_codec(3, 7) == ISA_L_RS_VAND
    assert choose_codec(6, 6) == ISA_L_RS_CAUCHY and choose_codec(12, 6) == ISA_L_RS_CAUCHY


@pytest.mark.parametrize(("k", "m"), [(6, 6), (5, 5), (3, 7), (4, 2)])
def test_every_pattern_of_k_fragments_decodes(k, m):
    # ISA-L's Vandermonde matrix fails some 6-of-12 patterns; the codec choice must not.
    codec = ErasureCodec(k, m)
    payload = os.urandom(3000)
    fragments = codec.encode(payload)
    for keep in itertools.combinations(range(k + m), k):
        assert codec.decode({i: fragments[i] for i in keep}) == payload, keep


def test_too_few_fragments_is_typed():
    codec = ErasureCodec(4, 2)
    fragments = codec.encode(b"x" * 1000)
    with pytest.raises(NotEnoughShardsError) as caught:
        codec.decode({0: fragments[0], 5: fragments[5], 3: fragments[3]})
    assert (caught.value.usable, caught.value.needed) == (3, 4)


def test_garbage_fragments_give_typed_errors_not_crashes():
    codec = ErasureCodec(4, 2)
    fragments = codec.encode(os.urandom(1000))
    for bad in (
        {i: os.urandom(len(f)) for i, f in enumerate(fragments)},
        {i: f[:50] for i, f in enumerate(fragments)},
        {i: b"" for i in range(6)},
        {i: fragments[0] for i in range(4)},
    ):
        with pytest.raises(IntegrityError):
            codec.decode(bad)
