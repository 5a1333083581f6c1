"""The buffers CES writes into: bytes built in place (CPython's C API, through ctypes) and the
bytearray fallback give the same bytes, and the whole pipeline round-trips through either."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from ces_support import KEY, SEGMENT, sample

import wgtlab as wgt
from wgtlab.ces import buffers
from wgtlab.ces.buffers import OutputBuffer, scratch
from wgtlab.ces.parallel import ordered_map

CPYTHON = sys.implementation.name == "cpython"
in_place_only = pytest.mark.skipif(not CPYTHON, reason="bytes are built in place on CPython only")


def filled(data: bytes, *, in_place: bool, piece: int = 1000) -> bytes:
    """``data`` copied into an OutputBuffer piece by piece from the CES pool, as ``reconstruct``
    fills its result (disjoint slices, several threads), then taken."""
    out = OutputBuffer(len(data), in_place=in_place)

    def fill(start: int) -> None:
        out.view[start : start + piece] = data[start : start + piece]

    for _ in ordered_map(fill, range(0, len(data), piece)):
        pass
    return out.take()


@pytest.fixture
def fallback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every OutputBuffer takes the bytearray fallback, as off CPython; the C API is forbidden."""

    def forbidden(size: int) -> tuple[bytes, memoryview]:
        raise AssertionError("the in-place path was used with the fallback forced")

    monkeypatch.setattr(buffers, "IN_PLACE", False)
    monkeypatch.setattr(buffers, "_bytes_in_place", forbidden)


@pytest.fixture
def count_in_place(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The sizes of the buffers built in place, to show that path really ran."""
    sizes: list[int] = []
    lock = threading.Lock()
    real: Callable[[int], tuple[bytes, memoryview]] = buffers._bytes_in_place

    def counting(size: int) -> tuple[bytes, memoryview]:
        with lock:
            sizes.append(size)
        return real(size)

    monkeypatch.setattr(buffers, "_bytes_in_place", counting)
    yield sizes


@in_place_only
@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 3 * SEGMENT + 123, 1 << 20])
def test_in_place_and_fallback_give_the_same_bytes(size: int) -> None:
    data = sample(size, seed=size)
    in_place = filled(data, in_place=True)
    fallback = filled(data, in_place=False)
    assert type(in_place) is bytes and type(fallback) is bytes
    assert in_place == fallback == data
    assert hash(in_place) == hash(data)  # a finished bytes object, hash included


@in_place_only
def test_in_place_bytes_are_new_objects_never_shared() -> None:
    # A one-byte bytes may be a cached singleton when built from a value; built empty it is not.
    first, second = OutputBuffer(1, in_place=True), OutputBuffer(1, in_place=True)
    first.view[0], second.view[0] = ord("A"), ord("B")
    a, b = first.take(), second.take()
    assert a is not b and (a, b) == (b"A", b"B")


@in_place_only
def test_process_gives_identical_shards_in_place_and_through_the_fallback(
    monkeypatch: pytest.MonkeyPatch, count_in_place: list[int]
) -> None:
    """With the randomness pinned (dataset id, nonces), the shards are a function of the data:
    sealing into bytes built in place and into the fallback must give every byte the same."""
    monkeypatch.setattr(os, "urandom", lambda n: bytes(n))
    pipe = wgt.CESPipeline(KEY, data_shards=3, parity_shards=2, segment_size=SEGMENT)
    data = sample(7 * SEGMENT + 321, seed=7)

    in_place = pipe.process(data)
    assert count_in_place  # sealed buffers (reused by each thread for equal sizes)
    built = len(count_in_place)
    monkeypatch.setattr(buffers, "IN_PLACE", False)
    fallback = pipe.process(data)
    assert len(count_in_place) == built  # the fallback never touched the C API

    assert [type(s) for s in fallback] == [bytes] * 5
    assert in_place == fallback
    assert pipe.reconstruct(fallback) == data


@pytest.mark.usefixtures("fallback_only")
@pytest.mark.parametrize("size", [0, 1, SEGMENT, 5 * SEGMENT + 77, (1 << 20) + 3])
def test_full_round_trip_through_the_fallback(size: int) -> None:
    pipe = wgt.CESPipeline(KEY, data_shards=4, parity_shards=2, segment_size=SEGMENT)
    data = sample(size, seed=size)
    shards = pipe.process(data)
    for lost in ([], [0], [1, 4], [2, 5]):
        damaged = [None if i in lost else s for i, s in enumerate(shards)]
        rebuilt = pipe.reconstruct(damaged)
        assert type(rebuilt) is bytes
        assert rebuilt == data


@pytest.mark.usefixtures("fallback_only")
def test_files_and_rotation_through_the_fallback(tmp_path) -> None:
    src, out = tmp_path / "data.csv", tmp_path / "rebuilt.csv"
    data = sample(9 * SEGMENT + 5, seed=3)
    src.write_bytes(data)
    old = wgt.CESPipeline(KEY, data_shards=3, parity_shards=2, segment_size=SEGMENT)
    old.process_file(src, tmp_path / "shards")
    new_key = bytes(reversed(range(32)))
    wgt.ces.rotate_store(tmp_path / "shards", tmp_path / "rotated", old, new_key)
    new = wgt.CESPipeline(new_key)
    assert new.reconstruct_file(tmp_path / "rotated", out) == len(data)
    assert out.read_bytes() == data


def test_in_place_is_refused_off_cpython(monkeypatch: pytest.MonkeyPatch) -> None:
    # _c_api is cached once it has run; call the function underneath as a fresh process would.
    monkeypatch.setattr(buffers.sys, "implementation", SimpleNamespace(name="pypy"))
    with pytest.raises(RuntimeError, match=r"in_place=False"):
        buffers._c_api.__wrapped__()


def test_scratch_is_reused_per_thread_and_grows() -> None:
    def in_a_new_thread(work: Callable[[], list[bytearray]]) -> list[bytearray]:
        seen: list[list[bytearray]] = []
        thread = threading.Thread(target=lambda: seen.append(work()))
        thread.start()
        thread.join()
        return seen[0]

    def buffers_seen() -> list[bytearray]:
        sizes = (10, 1 << 20, (1 << 20) + 1, 10)
        return [bytearray_of(scratch(size)) for size in sizes]

    small, full, grown, after = in_a_new_thread(buffers_seen)
    assert small is full and len(small) == 1 << 20  # the first 1 MiB serves any segment up to it
    assert grown is not small and len(grown) == (1 << 20) + 1
    assert after is grown  # the grown buffer is the one kept
    other = in_a_new_thread(lambda: [bytearray_of(scratch(10))])[0]
    assert other is not small and other is not grown  # each thread has its own


def bytearray_of(view: memoryview) -> bytearray:
    assert isinstance(view.obj, bytearray)
    return view.obj


@in_place_only
def test_reusable_bytes_are_reused_only_when_nobody_holds_them() -> None:
    from wgtlab.ces.buffers import reusable_bytes

    held, _ = reusable_bytes(4096)
    other, view = reusable_bytes(4096)
    assert other is not held  # still held by this test: a new one
    view[:3] = b"abc"
    other_id = id(other)
    del other
    again, _ = reusable_bytes(4096)
    assert id(again) == other_id and again[:3] == b"abc"  # free again: the same object
    del again
    bigger, _ = reusable_bytes(4097)
    assert len(bigger) == 4097 and len(held) == 4096
