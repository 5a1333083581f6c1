"""Hostile shard sets: a stray shard of another dataset among good ones, mixed complete sets, and
manifest.json files built to break the parser. Real shards, real shard sets in real directories.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from ces_support import KEY, pipeline

import wgtlab as wgt
from wgtlab.ces.store import ShardManifest
from wgtlab.errors import NotEnoughShardsError, ShardFormatError, WgtError

K, M = 8, 4
DATA = os.urandom(2500) + b"x,y\n" * 600  # several segments, incompressible and compressible
OTHER = os.urandom(700) + b"other dataset\n" * 90


@pytest.fixture(scope="module")
def pipe() -> wgt.CESPipeline:
    return pipeline(K, M)


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


# --- hostile manifest.json ---------------------------------------------------------------------

HOSTILE_FIELDS = [
    ("original_size", "9" * 5000),
    ("data_shards", [1]),
    ("parity_shards", {"a": 1}),
    ("original_size", -1),
    ("original_size", 10**400),
    ("data_shards", 1.5),
    ("data_shards", True),
    ("parity_shards", 10**6),
    ("dataset_id", {"x": [1] * 10}),
    ("dataset_id", "zz"),
    ("version", True),
    ("version", 1.0),
    ("shards", ["shard-000.ces\x00x"]),
    ("shards", ["\ud800.ces"]),
    ("shards", ["x" * 5000]),
    ("shards", [7]),
]


def hostile_manifest(set_dir: Path, field: str, value: object) -> None:
    path = set_dir / "manifest.json"
    doc = json.loads(path.read_text())
    doc[field] = value
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("field", "value"), HOSTILE_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE_FIELDS)]
)
def test_hostile_manifest_fields_are_format_errors(pipe, tmp_path, field, value):
    """Every field checked for type and range: a ShardFormatError, never ValueError/TypeError.

    With the shard files beside it, the damaged manifest is set aside and the set still
    rebuilds (from the shard files found); with none, the error is the manifest's."""
    good = written(pipe, DATA, tmp_path)
    hostile_manifest(good, field, value)
    text = (good / "manifest.json").read_text()
    with pytest.raises(ShardFormatError):
        ShardManifest.from_json(text)
    assert pipe.reconstruct(wgt.ces.load(good)) == DATA
    assert wgt.ces.inspect(good, key=KEY).recoverable
    out = tmp_path / "rebuilt.bin"
    assert pipe.reconstruct_file(good, out) == len(DATA) and out.read_bytes() == DATA

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(good / "manifest.json", alone / "manifest.json")
    for call in (
        lambda: wgt.ces.load(alone),
        lambda: wgt.ces.inspect(alone, key=KEY),
        lambda: wgt.ces.inspect(alone),
        lambda: pipe.reconstruct_file(alone, tmp_path / "never.bin"),
    ):
        with pytest.raises(ShardFormatError):
            call()
    assert not (tmp_path / "never.bin").exists()


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # nesting past the recursion limit
        '{"format": "wgtlab-ces-shards", "version": 1, "shards": ' + "[" * 50_000 + "]" * 50_000,
        '{"format": "wgtlab-ces-shards", "version": 1, "shards": [], "original_size": '
        + "9" * 5000
        + "}",
        b"\xff\xfe\x00garbage",
        "",
        "null",
        '"manifest"',
    ],
    ids=["deep", "deep-shards", "huge-int", "not-utf8", "empty", "null", "string"],
)
def test_unparseable_manifests_are_format_errors(text):
    with pytest.raises(ShardFormatError):
        ShardManifest.from_json(text)


def test_a_manifest_that_is_a_directory_is_a_damaged_manifest(pipe, tmp_path):
    good = written(pipe, DATA, tmp_path)
    (good / "manifest.json").unlink()
    (good / "manifest.json").mkdir()
    assert pipe.reconstruct(wgt.ces.load(good)) == DATA
    out = tmp_path / "rebuilt.bin"
    assert pipe.reconstruct_file(good, out) == len(DATA) and out.read_bytes() == DATA
    empty = tmp_path / "empty"
    (empty / "manifest.json").mkdir(parents=True)
    with pytest.raises(ShardFormatError):
        wgt.ces.load(empty)


def test_a_huge_manifest_is_refused_without_reading_it_all(pipe, tmp_path):
    good = written(pipe, DATA, tmp_path)
    doc = json.loads((good / "manifest.json").read_text())
    doc["padding"] = "x" * (8 << 20)
    (good / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(WgtError):
        ShardManifest.from_json((good / "manifest.json").read_text())
    out = tmp_path / "rebuilt.bin"
    assert pipe.reconstruct_file(good, out) == len(DATA) and out.read_bytes() == DATA


# --- things in a shard-set directory that are not files ------------------------------------------


@pytest.mark.timeout(30)
def test_named_pipes_and_devices_in_a_shard_set_are_never_read(pipe, tmp_path):
    """A named pipe blocks whoever opens it and /dev/zero never ends: neither stalls a rebuild."""
    good = written(pipe, DATA, tmp_path)
    (good / "shard-003.ces").unlink()
    os.mkfifo(good / "shard-003.ces")
    (good / "shard-007.ces").unlink()
    (good / "shard-007.ces").symlink_to("/dev/zero")
    assert pipe.reconstruct(wgt.ces.load(good)) == DATA
    out = tmp_path / "rebuilt.bin"
    assert pipe.reconstruct_file(good, out) == len(DATA) and out.read_bytes() == DATA
    report = wgt.ces.inspect(good, key=KEY)
    assert report.recoverable
    assert (report.shards[3].state, report.shards[7].state) == ("missing", "missing")
    assert report.shards[3].reason == "not a regular file"

    (good / "manifest.json").unlink()
    os.mkfifo(good / "manifest.json")
    assert pipe.reconstruct_file(good, out, overwrite=True) == len(DATA)
    assert out.read_bytes() == DATA
