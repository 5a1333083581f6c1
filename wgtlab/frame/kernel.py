"""A frame pass as an ordinary ``Kernel``: columnar payloads in, accumulator records out, merged
exactly on the trusted side.

The job's input is a DataFrame of the pass's physical columns (typed arrays and dictionary codes,
made once per frame); the job layer cuts it into row chunks as it cuts any table; ``encode``
lays a chunk out as the generated module reads it (one copy, vectorised), ``decode`` checks a
worker's records (untrusted bytes: every length and key checked), and ``combine`` merges them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from wgtlab.errors import FrameError
from wgtlab.frame.codegen import HEADER_BYTES
from wgtlab.frame.plan import FIELDS, WIDTH, PassPlan
from wgtlab.sandbox.kernels.base import ModuleKernel
from wgtlab.sandbox.module import WasmModule

__all__ = ["FrameKernel", "Groups"]


@dataclass(frozen=True)
class Groups:
    """Merged records: ``keys`` (sorted composite group keys) and, per accumulator of the pass,
    its merged fields (``fields[i]`` is a tuple of arrays, one per field)."""

    keys: np.ndarray
    fields: tuple[tuple[np.ndarray, ...], ...]

    def __len__(self) -> int:
        return len(self.keys)


@functools.lru_cache(maxsize=256)
def _module(wat: str, name: str) -> WasmModule:
    return WasmModule.from_wat(wat, name=name)


class FrameKernel(ModuleKernel):
    """One pass of a frame query. ``wat`` is its generated module; ``params`` the bytes every
    chunk carries before its columns (quantile windows), or empty."""

    input_kind = "records"

    def __init__(self, plan: PassPlan, wat: str, *, label: str, params: bytes = b"") -> None:
        if len(params) % 8:
            raise FrameError("pass parameters must be a multiple of 8 bytes")  # pragma: no cover
        self.plan = plan
        self.wat = wat
        self.name = f"frame:{label}"
        self._params = params
        self._dtype = plan.record_dtype()

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

    def encode(self, chunk: Any) -> bytes:
        if not isinstance(chunk, pd.DataFrame):
            raise FrameError(f"a frame pass reads table chunks, got {type(chunk).__name__}")
        rows = len(chunk)
        first = int(chunk.index[0]) if rows else 0
        sizes = [-(-rows * WIDTH[c.encoding] // 8) * 8 for c in self.plan.columns]
        head = HEADER_BYTES + len(self._params)
        buffer = bytearray(head + sum(sizes))
        np.frombuffer(buffer, dtype="<u8", count=3)[:] = (rows, first, len(self._params))
        buffer[HEADER_BYTES:head] = self._params
        at = head
        for position, (column, size) in enumerate(zip(self.plan.columns, sizes, strict=True)):
            values = chunk.iloc[:, position].to_numpy()
            width = WIDTH[column.encoding]
            if rows:
                target = np.frombuffer(buffer, dtype=values.dtype, count=rows, offset=at)
                target[:] = values
                assert values.dtype.itemsize == width
            at += size
        return bytes(buffer)

    # --- trusted side: records back ------------------------------------------------------------

    def decode(self, output: bytes) -> np.ndarray:
        stride = self._dtype.itemsize
        if len(output) < 8 or (len(output) - 8) % stride:
            raise FrameError(
                f"a frame pass returned {len(output)} bytes, not 8 plus whole {stride}-byte records"
            )
        count = int.from_bytes(output[:8], "little")
        if count != (len(output) - 8) // stride:
            raise FrameError(f"a frame pass said {count} records but returned {(len(output) - 8) // stride}")
        records = np.frombuffer(output, dtype=self._dtype, offset=8, count=count)
        keys = records["key"]
        if count and (keys.min() < 0 or np.unique(keys).size != count):
            raise FrameError("a frame pass returned negative or repeated group keys")
        return records

    def combine(self, partials: list[np.ndarray]) -> Groups:
        return merge(self.plan, partials)

    def empty(self) -> Groups:
        return merge(self.plan, [])

    def __repr__(self) -> str:
        return f"FrameKernel({self.name!r}, plan={self.plan.digest[:12]})"


def merge(plan: PassPlan, partials: list[np.ndarray]) -> Groups:
    """Records of every chunk -> one record per group, exactly (integer sums stay integers;
    Kahan sums add their compensations; Welford moments merge by Chan's formula)."""
    dtype = plan.record_dtype()
    records = np.concatenate(partials) if partials else np.zeros(0, dtype=dtype)
    keys, inverse = np.unique(records["key"], return_inverse=True)
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
            assert acc.expr is not None
            count_index = plan.index_of("count", acc.expr)
            n = records[f"a{count_index}_0"].astype(np.float64)
            total_n = np.zeros(groups)
            np.add.at(total_n, inverse, n)
            weighted = np.zeros(groups)
            np.add.at(weighted, inverse, n * columns[0])
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(total_n > 0, weighted / total_n, np.nan)
            spread = np.zeros(groups)
            np.add.at(spread, inverse, columns[1])
            deviation = np.where(n > 0, n * (columns[0] - mean[inverse]) ** 2, 0.0)
            np.add.at(spread, inverse, deviation)
            merged.append((mean, spread))
        else:  # pragma: no cover
            raise FrameError(f"unknown accumulator {kind}")
    return Groups(keys, tuple(merged))
