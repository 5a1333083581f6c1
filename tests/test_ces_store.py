"""Shard sets at rest (local directories, memory://), streaming files, key rotation, DataFrames."""

from __future__ import annotations

import io
import json
import os
import uuid

import fsspec
import numpy as np
import pandas as pd
import pytest

import wgtlab as wgt
from wgtlab.errors import (
    ConfigError,
    IntegrityError,
    KeyConfigError,
    KeyMismatchError,
    NotEnoughShardsError,
    ShardFormatError,
)

KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
SEGMENT = 1024


@pytest.fixture
def pipe() -> wgt.CESPipeline:
    return wgt.CESPipeline(KEY, data_shards=4, parity_shards=2, segment_size=SEGMENT)


@pytest.fixture
def memory_url():
    url = f"memory://wgtlab-tests/{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def payload(n: int = 20_000) -> bytes:
    rng = np.random.default_rng(3)
    rows = [f"{i},{x:.4f},{'abc'[i % 3]}\n" for i, x in enumerate(rng.normal(size=n // 8 + 1))]
    return "".join(rows).encode()[:n]


# --- save / load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_save_and_load_round_trip(pipe, tmp_path, memory_url, where):
    url = str(tmp_path / "set") if where == "local" else memory_url
    data = payload()
    shards = pipe.process(data)
    manifest = wgt.ces.save(shards, url)
    assert manifest.files == tuple(f"shard-{i:03d}.ces" for i in range(6))
    assert (manifest.data_shards, manifest.parity_shards, manifest.original_size) == (
        4,
        2,
        len(data),
    )
    assert wgt.ces.load(url) == shards
    assert pipe.reconstruct(wgt.ces.load(url)) == data


def test_manifest_holds_no_secret(pipe, tmp_path):
    wgt.ces.save(pipe.process(b"secret payload"), tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    doc = json.loads(text)
    assert doc["format"] == "wgtlab-ces-shards" and doc["version"] == 1
    assert KEY.hex() not in text and "secret payload" not in text


@pytest.mark.parametrize("where", ["local", "memory"])
def test_missing_shard_files_are_missing_shards(pipe, tmp_path, memory_url, where):
    url = str(tmp_path) if where == "local" else memory_url
    data = payload()
    wgt.ces.save(pipe.process(data), url)
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm_file(f"{root}/shard-001.ces")
    fs.rm_file(f"{root}/shard-004.ces")
    loaded = wgt.ces.load(url)
    assert [s is None for s in loaded] == [False, True, False, False, True, False]
    assert pipe.reconstruct(loaded) == data
    report = wgt.ces.inspect(url, key=KEY)
    assert report.recoverable and report.counts() == {"ok": 4, "missing": 2}
    assert report.shards[1].reason == "file not found"
    fs.rm_file(f"{root}/shard-000.ces")
    with pytest.raises(NotEnoughShardsError) as caught:
        pipe.reconstruct(wgt.ces.load(url))
    assert (caught.value.usable, caught.value.needed) == (3, 4)
    assert not wgt.ces.inspect(url).recoverable


def test_lost_manifest_falls_back_to_the_shard_files(pipe, tmp_path):
    data = payload()
    wgt.ces.save(pipe.process(data), tmp_path)
    (tmp_path / "manifest.json").write_text("{ not json")
    assert pipe.reconstruct(wgt.ces.load(tmp_path)) == data
    (tmp_path / "manifest.json").unlink()
    assert pipe.reconstruct(wgt.ces.load(tmp_path)) == data


def test_location_without_a_shard_set_is_a_format_error(tmp_path):
    with pytest.raises(ShardFormatError, match="no CES shard set"):
        wgt.ces.load(tmp_path)
    with pytest.raises(ShardFormatError):
        wgt.ces.load(tmp_path / "does-not-exist")


def test_manifest_naming_files_outside_the_set_is_refused(pipe, tmp_path):
    wgt.ces.save(pipe.process(b"x"), tmp_path / "set")
    (tmp_path / "set" / "manifest.json").write_text(
        json.dumps({"format": "wgtlab-ces-shards", "version": 1, "shards": ["../../etc/passwd"]})
    )
    # A manifest that escapes its directory is ignored; the shard files there still load.
    assert pipe.reconstruct(wgt.ces.load(tmp_path / "set")) == b"x"


def test_existing_shard_set_is_not_overwritten_by_accident(pipe, tmp_path):
    wgt.ces.save(pipe.process(b"first"), tmp_path)
    with pytest.raises(ConfigError, match="overwrite=True"):
        wgt.ces.save(pipe.process(b"second"), tmp_path)
    small = wgt.CESPipeline(KEY, data_shards=2, parity_shards=1)
    wgt.ces.save(small.process(b"second"), tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "shard-000.ces",
        "shard-001.ces",
        "shard-002.ces",
    ]
    assert small.reconstruct(wgt.ces.load(tmp_path)) == b"second"


def test_save_skips_missing_entries(pipe, tmp_path):
    shards = pipe.process(b"abc" * 1000)
    wgt.ces.save([None, *shards[1:]], tmp_path)
    assert not (tmp_path / "shard-000.ces").exists()
    assert wgt.ces.load(tmp_path)[0] is None
    assert pipe.reconstruct(wgt.ces.load(tmp_path)) == b"abc" * 1000


# --- streaming files -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("size", [0, 1, SEGMENT, 37 * SEGMENT + 5])
def test_process_file_and_reconstruct_file(pipe, tmp_path, memory_url, where, size):
    data = payload(size)
    src = tmp_path / "input.csv"
    src.write_bytes(data)
    dest = str(tmp_path / "shards") if where == "local" else memory_url
    seen: list[int] = []
    manifest = pipe.process_file(src, dest, progress=seen.append)
    assert sum(seen) == size and manifest.original_size == size
    # Files and in-memory shards are the same format.
    assert pipe.reconstruct(wgt.ces.load(dest)) == data
    fs, root = fsspec.core.url_to_fs(dest)
    fs.rm_file(f"{root}/shard-002.ces")
    out = tmp_path / "rebuilt.csv"
    assert pipe.reconstruct_file(dest, out) == size
    assert out.read_bytes() == data
    sink = io.BytesIO()
    assert pipe.reconstruct_file(dest, sink) == size and sink.getvalue() == data


def test_reconstruct_file_leaves_nothing_on_failure(pipe, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(10 * SEGMENT))
    pipe.process_file(src, tmp_path / "shards")
    for name in ("shard-000.ces", "shard-001.ces", "shard-002.ces"):
        (tmp_path / "shards" / name).unlink()
    with pytest.raises(NotEnoughShardsError):
        pipe.reconstruct_file(tmp_path / "shards", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "out.bin.partial").exists()


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("relative", [False, True])
def test_reconstruct_file_into_a_missing_directory_is_a_config_error(
    pipe, tmp_path, monkeypatch, relative
):
    data = payload()
    pipe.process_file(_write(tmp_path / "in.csv", data), tmp_path / "shards")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = "missing/dir/file.csv" if relative else str(tmp_path / "missing" / "dir" / "file.csv")
    parent = out.rsplit("/", 1)[0]
    with pytest.raises(ConfigError) as caught:
        pipe.reconstruct_file(tmp_path / "shards", out)
    assert str(caught.value) == (
        f"cannot write the rebuilt data to {out!r}: its directory {parent!r} does not exist; "
        "create that directory first, or choose an output path in an existing one"
    )
    assert not isinstance(caught.value, FileNotFoundError)
    assert _tree(tmp_path) == before  # no directory, no .partial, nothing else

    (tmp_path / "missing" / "dir").mkdir(parents=True)  # doing what it says works
    assert pipe.reconstruct_file(tmp_path / "shards", out) == len(data)
    assert (tmp_path / "missing" / "dir" / "file.csv").read_bytes() == data


def test_reconstruct_file_under_a_file_is_a_config_error(pipe, tmp_path):
    pipe.process_file(_write(tmp_path / "in.csv", payload()), tmp_path / "shards")
    (tmp_path / "plain").write_bytes(b"not a directory")
    before = _tree(tmp_path)
    out = str(tmp_path / "plain" / "file.csv")
    with pytest.raises(ConfigError, match=r"its directory '.*/plain' is not a directory; create"):
        pipe.reconstruct_file(tmp_path / "shards", out)
    assert _tree(tmp_path) == before
    assert (tmp_path / "plain").read_bytes() == b"not a directory"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_process_file_missing_source(pipe, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        pipe.process_file(tmp_path / "nope.csv", tmp_path / "shards")


def test_process_file_refuses_a_directory_as_its_source(pipe, tmp_path):
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "in.csv", payload())
    before = _tree(tmp_path)
    with pytest.raises(ConfigError) as caught:
        pipe.process_file(tmp_path / "data", tmp_path / "shards")
    assert str(caught.value) == f"{str(tmp_path / 'data')!r} is a directory, not a file to shard"
    assert not isinstance(caught.value, IsADirectoryError)
    assert _tree(tmp_path) == before  # no shard directory, no shard files


@pytest.mark.parametrize("trailing_slash", [False, True])
def test_reconstruct_file_into_a_directory_is_refused(pipe, tmp_path, trailing_slash):
    data = payload()
    pipe.process_file(_write(tmp_path / "in.csv", data), tmp_path / "shards")
    (tmp_path / "outdir").mkdir()
    before = _tree(tmp_path)
    out = str(tmp_path / "outdir") + ("/" if trailing_slash else "")
    with pytest.raises(ConfigError) as caught:
        pipe.reconstruct_file(tmp_path / "shards", out)
    assert str(caught.value) == (
        f"cannot write the rebuilt data to {out!r}: it is a directory; give a file path (e.g. "
        "a file inside that directory)"
    )
    assert _tree(tmp_path) == before  # above all no outdir/outdir.partial


def test_reconstruct_file_refuses_an_existing_file_unless_overwrite(pipe, tmp_path):
    data = payload()
    pipe.process_file(_write(tmp_path / "in.csv", data), tmp_path / "shards")
    out = _write(tmp_path / "precious.csv", b"keep me")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError) as caught:
        pipe.reconstruct_file(tmp_path / "shards", out)
    assert str(caught.value) == (
        f"cannot write the rebuilt data to {str(out)!r}: the file already exists; pass "
        "overwrite=True (CLI: --force) to replace it, or choose another path"
    )
    assert out.read_bytes() == b"keep me" and _tree(tmp_path) == before

    assert pipe.reconstruct_file(tmp_path / "shards", out, overwrite=True) == len(data)
    assert out.read_bytes() == data and _tree(tmp_path) == before  # replaced, no .partial


def test_damaged_fragments_in_files_are_survived(pipe, tmp_path):
    data = payload(30 * SEGMENT)
    (tmp_path / "in").write_bytes(data)
    pipe.process_file(tmp_path / "in", tmp_path / "s")
    for i in (0, 3):  # rot inside the body of two shards (parity is 2)
        path = tmp_path / "s" / f"shard-{i:03d}.ces"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        path.write_bytes(bytes(raw))
    assert pipe.reconstruct_file(tmp_path / "s", tmp_path / "out") == len(data)
    assert (tmp_path / "out").read_bytes() == data
    report = wgt.ces.inspect(tmp_path / "s")  # no key: checksums still find the rot
    assert not report.key_checked and report.recoverable
    assert [s.state for s in report.shards] == ["damaged", "ok", "ok", "damaged", "ok", "ok"]


# --- key rotation --------------------------------------------------------------------------------


def test_rotate_in_memory(pipe):
    data = payload()
    old = pipe.process(data)
    new = wgt.ces.rotate([None, *old[1:]], KEY, NEW_KEY)
    assert len(new) == 6 and all(s is not None for s in new)  # a complete set again
    new_pipe = wgt.CESPipeline(NEW_KEY)
    assert new_pipe.reconstruct(new) == data
    assert new_pipe.reconstruct([None, None, *new[2:]]) == data
    with pytest.raises(KeyMismatchError):
        pipe.reconstruct(new)
    report = wgt.ces.inspect(new, key=NEW_KEY)
    assert report.header.dataset_id == wgt.ces.inspect(old).header.dataset_id
    assert report.header.key_id.hex() == new_pipe.key_id


def test_rotate_can_change_shard_counts(pipe):
    data = payload()
    new = wgt.ces.rotate(
        pipe.process(data), pipe, wgt.CESPipeline(NEW_KEY), data_shards=3, parity_shards=3
    )
    assert len(new) == 6
    assert wgt.CESPipeline(NEW_KEY).reconstruct([None, None, None, *new[3:]]) == data


def test_rotate_store_writes_only_shards(pipe, tmp_path):
    data = b"patient-id,diagnosis\n" + b"12345,confidential\n" * 5000
    (tmp_path / "plain.csv").write_bytes(data)
    pipe.process_file(tmp_path / "plain.csv", tmp_path / "old")
    (tmp_path / "plain.csv").unlink()
    manifest = wgt.ces.rotate_store(tmp_path / "old", tmp_path / "new", KEY, NEW_KEY)
    assert len(manifest.files) == 6
    written = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert written == ["manifest.json", *manifest.files]
    for path in (tmp_path / "new").iterdir():
        assert b"confidential" not in path.read_bytes()
    assert wgt.CESPipeline(NEW_KEY).reconstruct(wgt.ces.load(tmp_path / "new")) == data
    with pytest.raises(KeyMismatchError):
        wgt.ces.rotate_store(tmp_path / "new", tmp_path / "again", KEY, NEW_KEY)


def test_rotate_needs_both_keys(pipe):
    shards = pipe.process(b"abc")
    with pytest.raises(KeyConfigError):
        wgt.ces.rotate(shards, None, NEW_KEY)
    with pytest.raises(KeyConfigError):
        wgt.ces.rotate(shards, KEY, None)


# --- DataFrames ----------------------------------------------------------------------------------


def test_dataframe_round_trip_keeps_dtypes_and_index(pipe):
    n = 500
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "count": np.arange(n, dtype=np.int64),
            "small": np.arange(n, dtype=np.int16),
            "fare": rng.normal(20, 5, n),
            "carrier": pd.Categorical(rng.choice(["UA", "AA", "B6"], n)),
            "when": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
            "delay": pd.array([None if i % 7 == 0 else i for i in range(n)], dtype="Int64"),
            "cancelled": rng.random(n) < 0.1,
            "note": [f"flight {i}" for i in range(n)],
        },
        index=pd.Index([f"row-{i}" for i in range(n)], name="row_id"),
    )
    shards = wgt.ces.shard_dataframe(df, pipe)
    back = wgt.ces.dataframe_from_shards([None, *shards[1:5], None], pipe)
    pd.testing.assert_frame_equal(back, df)
    assert list(back.dtypes) == list(df.dtypes) and back.index.name == "row_id"


def test_dataframe_helpers_take_a_key_a_pipeline_or_nothing(pipe, monkeypatch, recwarn):
    df = pd.DataFrame({"x": np.arange(50, dtype=np.int64), "y": ["a", "b"] * 25})
    for key in (KEY, KEY.hex(), pipe):
        shards = wgt.ces.shard_dataframe(df, key)
        for reader in (KEY, KEY.hex(), pipe):
            pd.testing.assert_frame_equal(wgt.ces.dataframe_from_shards(shards, reader), df)
    monkeypatch.setenv("CES_ENCRYPTION_KEY", KEY.hex())  # None: CESPipeline() reads it
    shards = wgt.ces.shard_dataframe(df)
    pd.testing.assert_frame_equal(wgt.ces.dataframe_from_shards(shards), df)
    pd.testing.assert_frame_equal(wgt.ces.dataframe_from_shards(shards, pipe), df)
    assert not recwarn.list

    monkeypatch.delenv("CES_ENCRYPTION_KEY")
    with pytest.warns(wgt.EphemeralKeyWarning) as record:
        wgt.ces.shard_dataframe(df)
    assert record[0].filename == __file__  # points at the caller, not at wgtlab

    with pytest.raises(KeyConfigError) as caught:
        wgt.ces.shard_dataframe(df, bytes(31))
    assert str(caught.value) == (
        "the key is 31 bytes long; a CES key is exactly 32 bytes (or 64 hex characters). "
        "Generate one with `wgtlab keygen`."
    )
    with pytest.raises(KeyConfigError) as caught:
        wgt.ces.dataframe_from_shards(shards, 12345)
    assert str(caught.value) == (
        "expected a CESPipeline, a key (32 bytes or 64 hex characters) or None; got int"
    )


def test_dataframe_helpers_refuse_other_things(pipe):
    with pytest.raises(ConfigError, match="DataFrame"):
        wgt.ces.shard_dataframe([1, 2, 3], pipe)
    with pytest.raises(IntegrityError, match="do not hold a DataFrame"):
        wgt.ces.dataframe_from_shards(pipe.process(b"not parquet"), pipe)
