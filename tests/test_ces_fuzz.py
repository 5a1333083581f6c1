"""Bounded fuzzing of the shard and manifest parsers, on mutations of real shards and manifests.

The promise under test (DESIGN.md, "CES"): no input, however malformed, yields wrong plaintext
or an untyped exception. Each property below feeds mutated real inputs to the public entry
points and accepts only the exact original bytes or one of the project's typed errors
(``WgtError``). A few seconds in all, part of the normal run.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from ces_support import KEY, pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wgtlab as wgt
from wgtlab.ces.format import (
    ENTRY_BYTES,
    HEADER_BYTES,
    ShardHeader,
    build_footer,
    footer_bytes,
    parse_layout,
)
from wgtlab.ces.keys import KeySchedule
from wgtlab.ces.store import ShardManifest
from wgtlab.errors import WgtError

K, M = 4, 2
DATA = os.urandom(1500) + b"id,value\n" * 150  # three segments
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def pipe() -> wgt.CESPipeline:
    return pipeline(K, M)


@pytest.fixture(scope="module")
def shards(pipe) -> list[bytes]:
    return pipe.process(DATA)


@pytest.fixture(scope="module")
def other(pipe) -> list[bytes]:
    return pipe.process(DATA[:700])  # another dataset under the same key


@pytest.fixture(scope="module")
def store_dir(pipe, tmp_path_factory) -> Path:
    """A real shard set written by ``process_file``; examples only replace its manifest."""
    root = tmp_path_factory.mktemp("fuzz-store")
    (root / "input.bin").write_bytes(DATA)
    pipe.process_file(root / "input.bin", root / "set")
    return root / "set"


def exact_or_typed(call):
    """The result of ``call()``, or None if it raised one of the project's typed errors."""
    try:
        return call()
    except WgtError:
        return None
    except Exception as exc:  # the property: nothing else ever escapes
        raise AssertionError(f"untyped {type(exc).__name__}: {exc}") from exc


# --- mutations of real shards --------------------------------------------------------------------

HEADER_FIELDS = struct.Struct(">8sHH16s16sBBBBBbHIIQ")


def _reseal(shard: bytes, header: bytes, table: bytes | None, mac_key: bytes | None) -> bytes:
    """``shard`` with ``header`` (and ``table``) in place and a footer whose checksum matches,
    so the parser goes past the checksum; the MAC is valid only if ``mac_key`` is the key's."""
    old = parse_layout(len(shard), lambda o, n: shard[o : o + n])
    count = old.header.segment_count
    body = shard[HEADER_BYTES : len(shard) - footer_bytes(count)]
    table = table if table is not None else old.authenticated[HEADER_BYTES:]
    entries = [
        (int.from_bytes(table[i : i + 4], "big"), table[i + 4 : i + ENTRY_BYTES])
        for i in range(0, len(table) - ENTRY_BYTES + 1, ENTRY_BYTES)
    ]
    try:
        parsed = ShardHeader.parse(header)
    except WgtError:
        parsed = old.header  # an unparseable header: keep the raw bytes, footer of the old
    if len(entries) != parsed.segment_count:
        return header + body + build_footer(old.header, old_entries(old), mac_key or b"")
    footer = build_footer(parsed, entries, mac_key or os.urandom(32))
    return header + body + footer


def old_entries(layout) -> list[tuple[int, bytes]]:
    return list(zip(layout.fragment_lengths, layout.fragment_checksums, strict=True))


@st.composite
def header_rewrite(draw, shard: bytes) -> bytes:
    """The header with one field set to a drawn value (any value its width can hold)."""
    fields = list(HEADER_FIELDS.unpack(shard[:HEADER_BYTES]))
    widths = [None, 16, 16, None, None, 8, 8, 8, 8, 8, -8, 16, 32, 32, 64]
    at = draw(st.sampled_from([i for i, w in enumerate(widths) if w is not None]))
    bits = widths[at]
    assert bits is not None
    if bits < 0:
        fields[at] = draw(st.integers(-(1 << (-bits - 1)), (1 << (-bits - 1)) - 1))
    else:
        fields[at] = draw(
            st.one_of(
                st.integers(0, 16), st.integers(0, (1 << bits) - 1), st.just(fields[at] + 1)
            ).map(lambda v, b=bits: v % (1 << b))
        )
    return HEADER_FIELDS.pack(*fields)


@st.composite
def mutated_shard(draw, shard: bytes, donors: list[bytes], mac_key: bytes) -> bytes | None:
    kind = draw(
        st.sampled_from(
            [
                "flip",
                "overwrite",
                "truncate",
                "extend",
                "splice",
                "garbage",
                "missing",
                "header",
                "header+mac",
                "table",
                "table+mac",
            ]
        )
    )
    n = len(shard)
    if kind == "flip":
        out = bytearray(shard)
        for pos in draw(st.lists(st.integers(0, 8 * n - 1), min_size=1, max_size=8)):
            out[pos // 8] ^= 1 << (pos % 8)
        return bytes(out)
    if kind == "overwrite":
        start = draw(st.integers(0, n - 1))
        data = draw(st.binary(min_size=1, max_size=80))
        return shard[:start] + data + shard[start + len(data) :]
    if kind == "truncate":
        return shard[: draw(st.integers(0, n - 1))]
    if kind == "extend":
        return shard + draw(st.binary(min_size=1, max_size=200))
    if kind == "splice":
        donor = draw(st.sampled_from(donors))
        start = draw(st.integers(0, min(n, len(donor)) - 1))
        length = draw(st.integers(1, 300))
        return shard[:start] + donor[start : start + length] + shard[start + length :]
    if kind == "garbage":
        return draw(st.binary(max_size=400))
    if kind == "missing":
        return None
    key = mac_key if kind.endswith("+mac") else None
    if kind.startswith("header"):
        return _reseal(shard, draw(header_rewrite(shard)), None, key)
    # the fragment table: lengths and checksums rewritten, the footer's checksum made to match
    layout = parse_layout(n, lambda o, length: shard[o : o + length])
    entries = old_entries(layout)
    j = draw(st.integers(0, len(entries) - 1))
    length, digest = entries[j]
    if draw(st.booleans()):
        length = draw(st.one_of(st.integers(0, 4096), st.integers(0, (1 << 32) - 1)))
    else:
        digest = draw(st.binary(min_size=32, max_size=32))
    entries[j] = (length, digest)
    table = b"".join(struct.pack(">I32s", a, b) for a, b in entries)
    return _reseal(shard, shard[:HEADER_BYTES], table, key)


@st.composite
def mutated_set(draw, shards: list[bytes], other: list[bytes]) -> list[bytes | None]:
    mac_key = KeySchedule.from_key(KEY).mac_key
    out: list[bytes | None] = list(shards)
    for i in draw(st.lists(st.integers(0, K + M - 1), min_size=1, max_size=K + M, unique=True)):
        out[i] = draw(mutated_shard(shards[i], [*shards, *other], mac_key))
    if draw(st.booleans()):
        out = draw(st.permutations(out))
    if draw(st.integers(0, 4)) == 0:  # strays and copies of the other dataset's shards
        out += draw(st.lists(st.sampled_from(other), max_size=3))
    return out


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_mutated_shards_rebuild_exactly_or_fail_typed(pipe, shards, other, data):
    mutated = data.draw(mutated_set(shards, other))
    rebuilt = exact_or_typed(lambda: pipe.reconstruct(mutated))
    assert rebuilt is None or rebuilt == DATA, "wrong plaintext"
    report = exact_or_typed(lambda: pipe.inspect(mutated))
    assert report is not None  # inspect reports, it does not raise, for bad shard bytes
    if report.recoverable:
        assert rebuilt == DATA, report.summary()
    assert exact_or_typed(lambda: wgt.ces.inspect(mutated)) is not None  # without the key


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.binary(min_size=HEADER_BYTES, max_size=HEADER_BYTES),
        st.binary(max_size=2 * HEADER_BYTES),
    )
)
def test_any_header_bytes_parse_or_fail_typed(raw):
    exact_or_typed(lambda: ShardHeader.parse(raw))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_header_with_a_matching_checksum_parses_or_fails_typed(shards, data):
    """The header fields past the checksum: what the parser trusts once bit rot is ruled out."""
    shard = shards[0]
    resealed = _reseal(shard, data.draw(header_rewrite(shard)), None, None)
    exact_or_typed(lambda: parse_layout(len(resealed), lambda o, n: resealed[o : o + n]))


# --- mutations of real manifests -----------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**30), 10**30)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "format",
    "version",
    "dataset_id",
    "data_shards",
    "parity_shards",
    "original_size",
    "shards",
]


@st.composite
def mutated_manifest(draw, text: str) -> str | bytes:
    doc = json.loads(text)
    kind = draw(st.sampled_from(["field", "drop", "names", "text", "bytes"]))
    if kind == "field":
        doc[draw(st.sampled_from(FIELDS))] = draw(JSON)
    elif kind == "drop":
        del doc[draw(st.sampled_from(FIELDS))]
    elif kind == "names":
        names = list(doc["shards"])
        names[draw(st.integers(0, len(names) - 1))] = draw(
            st.one_of(
                st.none(),
                st.text(max_size=30),
                st.sampled_from(["..", ".", "", "manifest.json", "shard-000.ces", "../set"]),
                st.sampled_from(names),
                JSON,
            )
        )
        doc["shards"] = draw(st.permutations(names)) if draw(st.booleans()) else names
    elif kind == "text":
        raw = json.dumps(doc)
        start = draw(st.integers(0, len(raw)))
        return raw[:start] + draw(st.text(max_size=20)) + raw[start + draw(st.integers(0, 40)) :]
    else:
        return draw(st.binary(max_size=200))
    return json.dumps(doc, allow_nan=True)


@FUZZ
@given(data=st.data())
def test_mutated_manifests_rebuild_exactly_or_fail_typed(pipe, store_dir, tmp_path_factory, data):
    original = (store_dir / "manifest.json").read_text()
    mutated = data.draw(mutated_manifest(original))
    exact_or_typed(lambda: ShardManifest.from_json(mutated))

    where = store_dir.parent / "mutated"
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(store_dir, where)
    target = where / "manifest.json"
    target.write_bytes(
        mutated if isinstance(mutated, bytes) else mutated.encode("utf-8", "replace")
    )
    # with every shard file gone now and then: the manifest alone decides what is found
    if data.draw(st.integers(0, 5)) == 0:
        for f in where.glob("shard-*.ces"):
            f.unlink()

    loaded = exact_or_typed(lambda: wgt.ces.load(where))
    if loaded is not None:
        rebuilt = exact_or_typed(lambda: pipe.reconstruct(loaded))
        assert rebuilt is None or rebuilt == DATA, "wrong plaintext"
    exact_or_typed(lambda: wgt.ces.inspect(where, key=KEY))
    exact_or_typed(lambda: wgt.ces.inspect(where))
    out = where.parent / "rebuilt.bin"
    written = exact_or_typed(lambda: pipe.reconstruct_file(where, out, overwrite=True))
    if written is not None:
        assert out.read_bytes() == DATA, "wrong plaintext"
        out.unlink()
    else:
        assert not out.exists()
