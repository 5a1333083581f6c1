"""Shard format versions: shards written by format 1 (kept as fixtures, made by the v1 writer
before format 2 existed) still rebuild exactly, whole or with shards lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from ces_support import KEY, sample

import wgtlab as wgt
from wgtlab.ces.format import HEADER_BYTES, ShardHeader

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
