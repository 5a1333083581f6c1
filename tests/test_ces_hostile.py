"""Hostile shard sets: a stray shard of another dataset among good ones, mixed complete sets.
Real shards, real shard sets in real directories.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import wgtlab as wgt
from wgtlab.errors import NotEnoughShardsError, ShardFormatError

KEY = bytes(range(32))
SEGMENT = 1024
K, M = 8, 4
DATA = os.urandom(2500) + b"x,y\n" * 600  # several segments, incompressible and compressible
OTHER = os.urandom(700) + b"other dataset\n" * 90


@pytest.fixture(scope="module")
def pipe() -> wgt.CESPipeline:
    return wgt.CESPipeline(KEY, data_shards=K, parity_shards=M, segment_size=SEGMENT)


@pytest.fixture(scope="module")
def shards(pipe) -> list[bytes]:
    return pipe.process(DATA)


@pytest.fixture(scope="module")
def other_shards(pipe) -> list[bytes]:
    return pipe.process(OTHER)  # same key and layout, another dataset


def written(pipe: wgt.CESPipeline, data: bytes, where: Path) -> Path:
    """A shard set of ``data`` written by ``process_file`` under ``where``/set."""
    where.mkdir(parents=True, exist_ok=True)
    src = where / "input.bin"
    src.write_bytes(data)
    pipe.process_file(src, where / "set")
    return where / "set"


def states(report: wgt.ces.ShardSetReport) -> list[str]:
    return [s.state for s in report.shards]


# --- a stray shard of another dataset ------------------------------------------------------------


def test_one_stray_shard_among_eleven_good_ones_is_set_aside(pipe, shards, other_shards):
    mixed = [*shards[:11], other_shards[11]]
    assert pipe.reconstruct(mixed) == DATA
    report = pipe.inspect(mixed)
    assert report.recoverable and not report.problem
    assert states(report) == ["ok"] * 11 + ["foreign"]
    assert report.dataset_id == wgt.ces.ShardHeader.parse(shards[0][:68]).dataset_id.hex()
    assert "another shard set" in report.shards[11].reason


def test_stray_shards_at_the_same_index_as_good_ones_are_set_aside(pipe, shards, other_shards):
    """The strays claim indices the good set already has (and one it lacks); order is mixed."""
    mixed = [other_shards[0], *shards[:10], other_shards[3], other_shards[11]]
    assert pipe.reconstruct(mixed) == DATA
    report = pipe.inspect(mixed)
    assert report.recoverable
    assert states(report) == ["foreign"] + ["ok"] * 10 + ["foreign"] * 2


def test_a_stray_shard_file_in_a_shard_set_directory_is_set_aside(pipe, tmp_path):
    good = written(pipe, DATA, tmp_path / "a")
    stray = written(pipe, OTHER, tmp_path / "b")
    shutil.copyfile(stray / "shard-011.ces", good / "shard-011.ces")
    out = tmp_path / "rebuilt.bin"
    assert pipe.reconstruct_file(good, out) == len(DATA)
    assert out.read_bytes() == DATA
    report = wgt.ces.inspect(good, key=KEY)
    assert report.recoverable and report.shards[11].state == "foreign"
    assert wgt.ces.inspect(good).shards[11].state == "foreign"  # no key: majority by dataset


def test_without_a_key_the_majority_dataset_is_reported(shards, other_shards):
    report = wgt.ces.inspect([*other_shards[:2], *shards[2:]])
    assert report.dataset_id == wgt.ces.inspect(shards).dataset_id
    assert states(report) == ["foreign"] * 2 + ["ok"] * 10
    assert report.recoverable and not report.key_checked


def test_strays_and_losses_together_beyond_parity_are_not_enough(pipe, shards, other_shards):
    mixed = [*shards[:7], other_shards[7], None, None, None, None]
    with pytest.raises(NotEnoughShardsError, match="1 foreign") as caught:
        pipe.reconstruct(mixed)
    assert (caught.value.usable, caught.value.needed) == (7, K)
    report = pipe.inspect(mixed)
    assert not report.recoverable and report.shards[7].state == "foreign"


def test_two_equally_large_shard_sets_are_ambiguous(pipe, shards, other_shards):
    # Neither rebuildable (6 + 6 of 8 needed), or both (12 + 12): never a guess.
    for mixed in ([*shards[:6], *other_shards[6:]], [*shards, *other_shards]):
        with pytest.raises(ShardFormatError, match="2 different shard sets"):
            pipe.reconstruct(mixed)
        report = pipe.inspect(mixed)
        assert not report.recoverable and "2 different shard sets" in report.problem


def test_two_rebuildable_shard_sets_are_ambiguous_even_if_one_is_larger(pipe, shards, other_shards):
    """Twelve shards of one dataset and eight of another are two whole datasets, not strays:
    which one the caller meant is not for the library to guess."""
    mixed = [*shards, *other_shards[:8]]
    with pytest.raises(ShardFormatError, match="2 different shard sets"):
        pipe.reconstruct(mixed)
    assert not pipe.inspect(mixed).recoverable


def test_a_stray_shard_sealed_under_another_key_is_still_foreign(pipe, shards):
    theirs = wgt.CESPipeline(os.urandom(32), data_shards=K, parity_shards=M).process(OTHER)
    assert pipe.reconstruct([*shards[:11], theirs[11]]) == DATA
