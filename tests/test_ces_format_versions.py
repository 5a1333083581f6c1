"""Shard format versions: shards written by format 1 (kept as fixtures, made by the v1 writer
before format 2 existed) still rebuild exactly, whole or with shards lost."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ces_support import KEY, sample

import wgtlab as wgt
from wgtlab.ces.format import HEADER_BYTES, SEGMENT_RAW, SEGMENT_ZSTD, VERSION, ShardHeader
from wgtlab.errors import IntegrityError

V1 = Path(__file__).parent / "data" / "ces_v1"
CASES = {"empty": (b"", 3), "mixed": (sample(5000, seed=3), 5)}


def _v1_shards(name: str) -> list[bytes]:
    _, n = CASES[name]
    return [(V1 / f"{name}-{i}.ces").read_bytes() for i in range(n)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_v1_fixtures_are_version_1(name):
    for shard in _v1_shards(name):
        assert ShardHeader.parse(shard[:HEADER_BYTES]).version == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_v1_shards_rebuild_exactly(name):
    data, _ = CASES[name]
    pipe = wgt.CESPipeline(KEY, segment_size=1024)
    shards = _v1_shards(name)
    assert pipe.reconstruct(shards) == data
    lost: list[bytes | None] = list(shards)
    lost[0] = None  # one parity shard in each fixture: lose a data shard
    assert pipe.reconstruct(lost) == data


def test_v1_shards_inspect_ok():
    report = wgt.ces.inspect(_v1_shards("mixed"), KEY)
    assert report.recoverable


def test_v1_shards_refuse_another_key():
    shards = _v1_shards("mixed")
    assert ShardHeader.parse(shards[0][:HEADER_BYTES]).segment_count == 5
    with pytest.raises(wgt.ces.KeyMismatchError):
        wgt.CESPipeline(bytes(32), segment_size=1024).reconstruct(shards)


# --- version 2: segments zstd cannot shrink are stored raw, flagged under the AEAD ---------------


def _sealed(pipe: wgt.CESPipeline, shards: list[bytes], j: int) -> tuple[ShardHeader, bytes]:
    from wgtlab.ces.shardset import ShardSet, memory_sources

    shard_set = ShardSet.open(memory_sources(shards, None), pipe._keys)
    return shard_set.header, shard_set.sealed_segment(j)


def _mixed_big(seed: int = 5) -> bytes:
    """Three 256 KiB segments: noise, CSV-like text, noise (a short tail)."""
    rng = random.Random(seed)
    text = b"".join(b"%d,carrier-%d,%.2f\n" % (i, i % 17, i / 3) for i in range(20_000))
    return rng.randbytes(256 << 10) + text[: 256 << 10] + rng.randbytes(100_000)


def test_new_shards_are_version_2_and_store_noise_raw():
    pipe = wgt.CESPipeline(KEY, data_shards=4, parity_shards=2, segment_size=256 << 10)
    data = _mixed_big()
    shards = pipe.process(data)
    header, _ = _sealed(pipe, shards, 0)
    assert header.version == VERSION == 2
    flags = [_sealed(pipe, shards, j)[1][0] for j in range(3)]
    assert flags == [SEGMENT_RAW, SEGMENT_ZSTD, SEGMENT_RAW]
    assert pipe.reconstruct(shards) == data
    lost: list[bytes | None] = [None, shards[1], None, *shards[3:]]
    assert pipe.reconstruct(lost) == data


@pytest.mark.parametrize("j", [0, 1])
def test_flipping_a_segment_flag_fails_authentication(j):
    pipe = wgt.CESPipeline(KEY, data_shards=4, parity_shards=2, segment_size=256 << 10)
    header, sealed = _sealed(pipe, pipe.process(_mixed_big()), j)
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(IntegrityError, match=f"segment {j} of dataset .* failed authentication"):
        pipe._unseal(header, j, flipped)
    with pytest.raises(IntegrityError, match="unknown storage flags"):
        pipe._unseal(header, j, b"\x07" + sealed[1:])


def test_small_incompressible_segments_are_stored_raw_too():
    pipe = wgt.CESPipeline(KEY, data_shards=2, parity_shards=1, segment_size=1024)
    data = random.Random(1).randbytes(3000)
    shards = pipe.process(data)
    assert all(_sealed(pipe, shards, j)[1][0] == SEGMENT_RAW for j in range(3))
    assert pipe.reconstruct([None, *shards[1:]]) == data


def test_empty_dataset_round_trips_in_version_2():
    pipe = wgt.CESPipeline(KEY, data_shards=2, parity_shards=1)
    shards = pipe.process(b"")
    assert _sealed(pipe, shards, 0)[0].version == 2
    assert pipe.reconstruct(shards) == b""


def test_version_2_shards_relabelled_version_1_do_not_open():
    """A downgrade (header version rewritten) breaks the header checksum and MAC."""
    pipe = wgt.CESPipeline(KEY, data_shards=2, parity_shards=1, segment_size=1024)
    shards = pipe.process(sample(3000))
    relabelled = [s[:8] + b"\x00\x01" + s[10:] for s in shards]
    with pytest.raises(wgt.CESError):
        pipe.reconstruct(relabelled)


def test_v1_shards_rotate_into_version_2():
    from wgtlab.ces.rotation import rotate

    new_key = bytes(range(1, 33))
    rotated = rotate(_v1_shards("mixed"), KEY, new_key)
    assert ShardHeader.parse(rotated[0][:HEADER_BYTES]).version == 2
    assert wgt.CESPipeline(new_key).reconstruct([None, *rotated[1:]]) == CASES["mixed"][0]
