"""A frame pass as an ordinary ``Kernel``: columnar payloads in, accumulator records out, merged
exactly on the trusted side.

The job's input is the frame's row table (a RangeIndex and no columns); the job layer cuts it
into row chunks as it cuts any table. ``encode`` lays a chunk's rows of the pass's columns
(typed arrays and dictionary codes, made once per frame) out as the generated module reads them
(one copy); ``payload`` serves repeated chunks, and their digests, from the frame's cache;
``decode`` checks a worker's records (untrusted bytes: lengths, counts, flags, key range); and
``combine`` merges them exactly.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from wgtlab.errors import FrameError
from wgtlab.frame.codegen import LANES, OUTPUT_HEADER
from wgtlab.frame.plan import FIELDS, WIDTH, PassPlan
from wgtlab.sandbox.kernels.base import ModuleKernel
from wgtlab.sandbox.module import WasmModule

__all__ = ["DIVIDED_BY_ZERO", "FrameKernel", "Groups", "Part", "PayloadCache"]

DIVIDED_BY_ZERO = 1  # an integer was divided by 0 (// or %) in some row


@dataclass(frozen=True)
class Part:
    """One chunk's records, and its flags (``DIVIDED_BY_ZERO``)."""

    records: np.ndarray
    flags: int = 0


@dataclass(frozen=True)
class Groups:
    """Merged records: ``keys`` (sorted composite group keys) and, per accumulator of the pass,
    its merged fields (``fields[i]`` is a tuple of arrays, one per field); ``flags`` of any
    chunk."""

    keys: np.ndarray
    fields: tuple[tuple[np.ndarray, ...], ...]
    flags: int = 0

    def __len__(self) -> int:
        return len(self.keys)


class PayloadCache:
    """Encoded chunk payloads and their digests, least recently used dropped past ``budget``
    bytes. A frame owns one: its columns do not change (pandas' copy-on-write keeps the
    arrays a frame took), so a chunk of the same columns is the same bytes every time."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._held = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[bytes, bytes]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bytes, bytes] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, payload: bytes, digest: bytes) -> None:
        if len(payload) > self.budget:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (payload, digest)
            self._held += len(payload)
            while self._held > self.budget:
                _, (dropped, _) = self._entries.popitem(last=False)
                self._held -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held = 0


def _rows(chunk: Any) -> tuple[int, int]:
    """The row range of a chunk of a pass's row table."""
    if not isinstance(chunk, pd.DataFrame):
        raise FrameError(f"a frame pass reads table chunks, got {type(chunk).__name__}")
    if not len(chunk):
        return 0, 0
    start = int(chunk.index[0])
    return start, start + len(chunk)


@functools.lru_cache(maxsize=256)
def _module(wat: str, name: str) -> WasmModule:
    return WasmModule.from_wat(wat, name=name)


class FrameKernel(ModuleKernel):
    """One pass of a frame query. ``wat`` is its generated module; ``arrays`` the pass's
    columns as they travel (one per ``plan.columns``); ``params`` the bytes every chunk carries
    before its columns (quantile windows), or empty; ``payloads`` the frame's payload cache."""

    input_kind = "records"

    def __init__(
        self,
        plan: PassPlan,
        wat: str,
        arrays: Sequence[np.ndarray],
        *,
        label: str,
        params: bytes = b"",
        payloads: PayloadCache | None = None,
        key_bound: int | None = None,
    ) -> None:
        if len(params) % 8:
            raise FrameError("pass parameters must be a multiple of 8 bytes")  # pragma: no cover
        if len(arrays) != len(plan.columns):  # pragma: no cover
            raise FrameError("a frame pass needs one array per column it reads")
        for column, values in zip(plan.columns, arrays, strict=True):
            if values.dtype.itemsize != WIDTH[column.encoding] or not values.flags.c_contiguous:
                raise FrameError(f"column {column.name!r} is not laid out as {column.encoding}")
        self.plan = plan
        self.wat = wat
        self.name = f"frame:{label}"
        self._arrays = list(arrays)
        self._params = params
        self._dtype = plan.record_dtype()
        self._payloads = payloads
        # every record key is below this: the key space, a quantile pass's buckets, the lanes
        self.key_bound = key_bound if key_bound is not None else _key_bound(plan)
        self._counters = [i for i, a in enumerate(plan.accumulators) if a.kind in _COUNTERS]
        self._columns_key = (tuple(c.key for c in plan.columns), hashlib.sha256(params).digest())

    @property
    def module(self) -> WasmModule:
        return _module(self.wat, "wgt.frame." + self.plan.digest[:16])

    @property
    def digest(self) -> str:
        return self.module.digest

    @property
    def params(self) -> Mapping[str, Any]:
        return MappingProxyType({"plan": self.plan.digest, "params_bytes": len(self._params)})

    # --- trusted side: chunks out --------------------------------------------------------------

    def payload(self, chunk: Any) -> tuple[bytes, bytes]:
        return self._payload(*_rows(chunk))

    def _payload(self, start: int, stop: int) -> tuple[bytes, bytes]:
        """The payload of rows ``start..stop`` and its SHA-256, from the frame's cache when it
        holds them."""
        key = (*self._columns_key, start, stop)
        found = self._payloads.get(key) if self._payloads is not None else None
        if found is None:
            payload = self._encode(start, stop)
            found = payload, hashlib.sha256(payload).digest()
            if self._payloads is not None:
                self._payloads.put(key, *found)
        return found

    def prepare(self, rows: int, chunk_rows: int) -> None:
        """Encode and hash the chunks of ``rows`` rows cut every ``chunk_rows`` ahead of the
        run, two at a time (copies and SHA-256 run outside the GIL), into the payload cache the
        run then reads (when they fit in it)."""
        ranges = [(a, min(a + chunk_rows, rows)) for a in range(0, rows, chunk_rows)]
        cache = self._payloads
        if cache is None or len(ranges) < 2:
            return
        if rows * sum(a.itemsize for a in self._arrays) > cache.budget:
            return
        todo = [r for r in ranges if cache.get((*self._columns_key, *r)) is None]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda r: self._payload(*r), todo))

    def encode(self, chunk: Any) -> bytes:
        """The rows ``chunk`` names (a slice of the pass's row table), laid out as the module
        reads them: header, parameters, then each column's slice, padded to 8 bytes."""
        return self._encode(*_rows(chunk))

    def _encode(self, start: int, stop: int) -> bytes:
        rows = stop - start
        head = np.array([rows, start, len(self._params)], dtype="<u8").tobytes()
        parts: list[Any] = [head, self._params]
        for values in self._arrays:
            parts.append(values[start:stop].data.cast("B"))
            parts.append(bytes(-(rows * values.itemsize) % 8))
        return b"".join(parts)  # one copy, straight from the column arrays

    # --- trusted side: records back ------------------------------------------------------------

    def decode(self, output: bytes) -> Part:
        stride = self._dtype.itemsize
        head = OUTPUT_HEADER
        if len(output) < head or (len(output) - head) % stride:
            raise FrameError(
                f"a frame pass returned {len(output)} bytes, not {head} plus whole "
                f"{stride}-byte records"
            )
        count = int.from_bytes(output[:8], "little")
        flags = int.from_bytes(output[8:16], "little")
        if count != (len(output) - head) // stride:
            raise FrameError(
                f"a frame pass said {count} records but returned {(len(output) - head) // stride}"
            )
        if flags not in (0, DIVIDED_BY_ZERO):
            raise FrameError(f"a frame pass returned unknown flags {flags:#x}")
        records = np.frombuffer(output, dtype=self._dtype, offset=head, count=count)
        keys = records["key"]
        if count and (keys.min() < 0 or keys.max() >= self.key_bound):
            raise FrameError(f"a frame pass returned group keys outside 0..{self.key_bound - 1}")
        for index in self._counters:
            if count and records[f"a{index}_0"].min() < 0:
                raise FrameError("a frame pass returned a negative count")
        return Part(records, flags)

    def combine(self, partials: list[Part]) -> Groups:
        return merge(self.plan, partials, self.key_bound)

    def empty(self) -> Groups:
        return merge(self.plan, [], self.key_bound)

    def __repr__(self) -> str:
        return f"FrameKernel({self.name!r}, plan={self.plan.digest[:12]})"


def _key_bound(plan: PassPlan) -> int:
    if plan.histogram is not None:
        return 1 << 62
    return plan.key_space if plan.keys else LANES


_COUNTERS = ("size", "count")
DENSE_KEYS = 1 << 22  # key spaces up to this (or 4 keys a record) merge through a dense table


def group_positions(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys`` (sorted) and each key's position among them. Keys below a small
    ``bound`` go through a dense table (linear time); others through ``np.unique``."""
    if bound <= max(DENSE_KEYS, 4 * len(keys)):
        seen = np.zeros(bound, dtype=bool)
        seen[keys] = True
        distinct = np.flatnonzero(seen)
        position = np.zeros(bound, dtype=np.intp)
        position[distinct] = np.arange(len(distinct))
        return distinct.astype(np.int64), position[keys]
    distinct, inverse = np.unique(keys, return_inverse=True)
    return distinct, inverse


def merge(plan: PassPlan, partials: list[Part], bound: int | None = None) -> Groups:
    """Records of every chunk -> one record per group, exactly (integer sums stay integers;
    Kahan sums add their compensations; Welford moments merge by Chan's formula)."""
    dtype = plan.record_dtype()
    records = (
        np.concatenate([p.records for p in partials]) if partials else np.zeros(0, dtype=dtype)
    )
    flags = 0
    for part in partials:
        flags |= part.flags
    if not plan.keys and plan.histogram is None:  # one group, kept in lanes: add them up
        keys, inverse = np.zeros(1, dtype=np.int64), np.zeros(len(records), dtype=np.intp)
    else:
        keys, inverse = group_positions(records["key"], bound or _key_bound(plan))
    groups = len(keys)
    merged: list[tuple[np.ndarray, ...]] = []
    counts: dict[str, np.ndarray] = {}
    for index, acc in enumerate(plan.accumulators):
        columns = [records[f"a{index}_{part}"] for part in range(len(FIELDS[acc.kind]))]
        kind = acc.kind
        if kind in ("size", "count", "sum_i"):
            total = np.zeros(groups, dtype=np.int64)
            np.add.at(total, inverse, columns[0])
            merged.append((total,))
            if kind == "count" and acc.expr is not None:
                counts[acc.expr.key] = total
        elif kind == "sum_f":
            sums = np.zeros(groups)
            compensation = np.zeros(groups)
            np.add.at(sums, inverse, columns[0])
            np.add.at(compensation, inverse, columns[1])
            merged.append((sums - compensation,))
        elif kind in ("min_f", "min_i", "first", "kmin"):
            start = np.inf if kind == "min_f" else np.iinfo(columns[0].dtype).max
            out = np.full(groups, start, dtype=columns[0].dtype)
            np.minimum.at(out, inverse, columns[0])
            merged.append((out,))
        elif kind in ("max_f", "max_i", "kmax"):
            start = -np.inf if kind == "max_f" else np.iinfo(columns[0].dtype).min
            out = np.full(groups, start, dtype=columns[0].dtype)
            np.maximum.at(out, inverse, columns[0])
            merged.append((out,))
        elif kind == "welford":
            merged.append(_merge_moments(plan, index, records, inverse, groups))
        else:  # pragma: no cover
            raise FrameError(f"unknown accumulator {kind}")
    return Groups(keys, tuple(merged), flags)


def _merge_moments(
    plan: PassPlan, index: int, records: np.ndarray, inverse: np.ndarray, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chan's parallel formula over the parts' (count, shift, mean, M2), each part's mean
    rebased on its group's first shift so every sum stays at the values' own scale: -> per
    group (mean, M2)."""
    acc = plan.accumulators[index]
    assert acc.expr is not None
    n = records[f"a{plan.index_of('count', acc.expr)}_0"].astype(np.float64)
    shift, mean, m2 = (records[f"a{index}_{part}"] for part in range(3))
    present = n > 0
    base = np.full(groups, np.nan)
    first = np.flatnonzero(present)[::-1]  # the earliest part with values wins the assignment
    base[inverse[first]] = shift[first]
    relative = np.where(present, (shift - base[inverse]) + mean, 0.0)
    total = np.zeros(groups)
    np.add.at(total, inverse, n)
    weighted = np.zeros(groups)
    np.add.at(weighted, inverse, n * relative)
    with np.errstate(invalid="ignore", divide="ignore"):
        group_mean = np.where(total > 0, weighted / total, np.nan)
    spread = np.zeros(groups)
    np.add.at(spread, inverse, np.where(present, m2, 0.0))
    deviation = np.where(present, n * (relative - group_mean[inverse]) ** 2, 0.0)
    np.add.at(spread, inverse, deviation)
    return base + group_mean, spread
