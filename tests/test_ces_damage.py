"""Broken shard sets: bit flips anywhere, wrong keys, mixed datasets, truncation, reordering,
duplicates and forged segment moves. Never wrong plaintext, never an untyped exception."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest
from ces_support import KEY, SEGMENT, pipeline
from hypothesis import given, settings
from hypothesis import strategies as st

import wgtlab as wgt
from wgtlab.ces.format import (
    HEADER_BYTES,
    build_footer,
    footer_bytes,
    fragment_checksum,
    parse_layout,
)
from wgtlab.ces.keys import KeySchedule
from wgtlab.errors import (
    CESError,
    IntegrityError,
    KeyMismatchError,
    NotEnoughShardsError,
    ShardFormatError,
)

K, M = 4, 2
DATA = os.urandom(1200) + b"a,b,c\n" * 200  # three segments, incompressible and compressible


@pytest.fixture(scope="module")
def pipe() -> wgt.CESPipeline:
    return pipeline(K, M)


@pytest.fixture(scope="module")
def shards(pipe) -> list[bytes]:
    return pipe.process(DATA)


def flip(shard: bytes, bit: int) -> bytes:
    out = bytearray(shard)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_single_bit_flips_anywhere_in_any_shard_are_survived(pipe, shards):
    """Every byte of every shard, one bit each (the bit rotates with the position), plus all
    eight bits of every header and footer byte of the first and last shard."""
    flips = []
    for i, shard in enumerate(shards):
        flips += [(i, 8 * pos + (pos + i) % 8) for pos in range(len(shard))]
    for i in (0, len(shards) - 1):
        tail = len(shards[i]) - footer_bytes(3)
        metadata = [*range(HEADER_BYTES), *range(tail, len(shards[i]))]
        flips += [(i, 8 * pos + bit) for pos in metadata for bit in range(8)]
    for i, bit in flips:
        damaged = list(shards)
        damaged[i] = flip(shards[i], bit)
        assert pipe.reconstruct(damaged) == DATA, (i, bit)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), damaged_count=st.integers(1, K + M))
def test_many_damaged_shards_never_yield_wrong_plaintext(pipe, shards, seed, damaged_count):
    rng = random.Random(seed)
    damaged = list(shards)
    for i in rng.sample(range(K + M), damaged_count):
        for _ in range(rng.randint(1, 3)):
            damaged[i] = flip(damaged[i], rng.randrange(8 * len(damaged[i])))
    try:
        result = pipe.reconstruct(damaged)
    except (NotEnoughShardsError, IntegrityError, ShardFormatError):
        assert damaged_count > M  # up to M damaged shards must always rebuild
        return
    assert result == DATA


def test_damage_in_different_segments_of_more_shards_than_parity_still_rebuilds(pipe, shards):
    """A rotten fragment costs only its own segment: 3 shards each rotten in a different segment
    leave every segment with 5 good fragments of the 4 needed."""
    damaged = list(shards)
    for i in range(3):
        layout = parse_layout(len(damaged[i]), lambda o, n, s=damaged[i]: s[o : o + n])
        middle = layout.fragment_offsets[i] + layout.fragment_lengths[i] // 2
        damaged[i] = flip(damaged[i], 8 * middle)
    assert pipe.reconstruct(damaged) == DATA
    report = pipe.inspect(damaged)
    assert report.recoverable and report.usable == 5
    assert [s.state for s in report.shards] == ["damaged"] * 3 + ["ok"] * 3


def test_wrong_key_is_refused_before_decryption(shards):
    other = wgt.CESPipeline(os.urandom(32), data_shards=K, parity_shards=M)
    with pytest.raises(KeyMismatchError) as caught:
        other.reconstruct(shards)
    assert "nothing was decrypted" in str(caught.value)
    assert KEY.hex()[:16] not in str(caught.value)


def test_shards_of_two_datasets_mixed_are_detected(pipe, shards):
    other = pipe.process(DATA)  # same key and data, another dataset
    mixed = shards[:3] + other[3:]
    with pytest.raises(ShardFormatError, match="2 different shard sets"):
        pipe.reconstruct(mixed)
    report = wgt.ces.inspect(mixed, key=KEY)
    assert not report.recoverable and "different shard sets" in report.problem


def test_shards_under_another_key_among_ours_count_as_missing(pipe, shards):
    foreign = wgt.CESPipeline(os.urandom(32), data_shards=K, parity_shards=M).process(DATA)
    assert pipe.reconstruct([foreign[0], foreign[1], *shards[2:]]) == DATA
    with pytest.raises(NotEnoughShardsError, match="3 foreign, 3 ok"):
        pipe.reconstruct([foreign[0], foreign[1], foreign[2], *shards[3:]])


def test_reordered_and_duplicated_shards_rebuild_exactly(pipe, shards):
    rng = random.Random(1)
    reordered = list(shards)
    rng.shuffle(reordered)
    assert pipe.reconstruct(reordered) == DATA
    assert pipe.reconstruct([shards[5], shards[5], shards[4], shards[3], shards[3], shards[2]]) == (
        DATA
    )
    with pytest.raises(NotEnoughShardsError) as caught:
        pipe.reconstruct([shards[0]] * 6)
    assert caught.value.usable == 1


@pytest.mark.parametrize("cut", [0, 1, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 100, -1, -37])
def test_truncated_shards_count_as_missing(pipe, shards, cut):
    truncated = list(shards)
    truncated[0] = shards[0][:cut]
    truncated[3] = shards[3][:cut]
    assert pipe.reconstruct(truncated) == DATA
    truncated[5] = shards[5][:cut]
    with pytest.raises(NotEnoughShardsError):
        pipe.reconstruct(truncated)


def test_extended_and_empty_shards_count_as_missing(pipe, shards):
    assert pipe.reconstruct([shards[0] + b"\0", b"", *shards[2:]]) == DATA


@pytest.mark.parametrize(
    "junk",
    [[b""] * 6, [b"\0" * 900] * 6, [os.urandom(900) for _ in range(6)]],
)
def test_garbage_is_a_format_error(pipe, junk):
    with pytest.raises(ShardFormatError, match="none of the 6 shards"):
        pipe.reconstruct(junk)


def test_future_format_version_is_named(pipe, shards):
    bumped = [s[:8] + b"\x00\x03" + s[10:] for s in shards]
    with pytest.raises(ShardFormatError, match="version 3 is not supported"):
        pipe.reconstruct(bumped)


def forge(shards: list[bytes], key: bytes, reorder) -> list[bytes]:
    """Rebuild each shard with its fragments rearranged by ``reorder`` and valid checksums and
    MACs: what only a key holder could do. Only the AEAD's associated data can catch it."""
    mac_key = KeySchedule.from_key(key).mac_key
    out = []
    for shard in shards:
        layout = parse_layout(len(shard), lambda o, n, s=shard: s[o : o + n])
        fragments = [
            shard[o : o + n]
            for o, n in zip(layout.fragment_offsets, layout.fragment_lengths, strict=True)
        ]
        fragments = reorder(fragments)
        entries = [(len(f), fragment_checksum(f)) for f in fragments]
        out.append(
            shard[:HEADER_BYTES]
            + b"".join(fragments)
            + build_footer(layout.header, entries, mac_key)
        )
    return out


def test_swapped_segments_fail_authentication(pipe, shards):
    swapped = forge(shards, KEY, lambda f: [f[1], f[0], f[2]])
    with pytest.raises(IntegrityError, match=r"segment 0 .* failed authentication"):
        pipe.reconstruct(swapped)


def test_segment_spliced_from_another_dataset_fails_authentication(pipe, shards):
    other = pipe.process(DATA)
    donor = iter(forge(other, KEY, lambda f: f))
    # Take segment 1 of the other dataset (same key, same plaintext), keep our headers.
    spliced = []
    for shard in shards:
        theirs = next(donor)
        ours_layout = parse_layout(len(shard), lambda o, n, s=shard: s[o : o + n])
        their_layout = parse_layout(len(theirs), lambda o, n, s=theirs: s[o : o + n])
        offsets = ours_layout.fragment_offsets
        piece = theirs[their_layout.fragment_offsets[1] :][: their_layout.fragment_lengths[1]]
        frags = [
            shard[o : o + n] for o, n in zip(offsets, ours_layout.fragment_lengths, strict=True)
        ]
        frags[1] = piece
        entries = [(len(f), fragment_checksum(f)) for f in frags]
        mac_key = KeySchedule.from_key(KEY).mac_key
        spliced.append(
            shard[:HEADER_BYTES]
            + b"".join(frags)
            + build_footer(ours_layout.header, entries, mac_key)
        )
    with pytest.raises(IntegrityError, match="segment 1"):
        pipe.reconstruct(spliced)


def test_dropping_the_last_segment_fails_authentication(pipe, shards):
    """A key holder drops the last segment and rewrites every header to match (2 segments,
    2 KiB): checksums and MACs are valid, but the segments' associated data bound count and
    size, so the truncated set does not open."""
    mac_key = KeySchedule.from_key(KEY).mac_key
    truncated = []
    for shard in shards:
        layout = parse_layout(len(shard), lambda o, n, s=shard: s[o : o + n])
        header = replace(layout.header, segment_count=2, original_size=2 * SEGMENT)
        body = shard[HEADER_BYTES : layout.fragment_offsets[2]]
        entries = [
            (n, c) for n, c in zip(layout.fragment_lengths, layout.fragment_checksums, strict=True)
        ][:2]
        truncated.append(header.pack() + body + build_footer(header, entries, mac_key))
    with pytest.raises(IntegrityError, match="segment 0"):
        pipe.reconstruct(truncated)


def test_every_error_is_a_ces_error(pipe, shards):
    rng = random.Random(7)
    for _ in range(200):
        junk = [rng.choice([None, b"", rng.randbytes(rng.randint(0, 1200)), s]) for s in shards]
        try:
            result = pipe.reconstruct(junk)
        except CESError:
            continue
        assert result == DATA
