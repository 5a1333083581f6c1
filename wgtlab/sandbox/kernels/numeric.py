"""Built-in kernels over float64 values: sum, min_max, histogram, count_where.

Chunks may be numpy arrays, pandas Series (or one-column DataFrames), lists, or raw
little-endian float64 bytes. NaN (and pandas NA) values are dropped before sending, as pandas'
sum/min/max and numpy.histogram's counting of finite ranges do.
"""

from __future__ import annotations

import builtins
import math
import numbers
import struct
from typing import Any

import numpy as np

from wgtlab.errors import ConfigError
from wgtlab.sandbox.kernels.base import BuiltinKernel

__all__ = ["CountWhere", "Histogram", "MinMax", "PartialSum", "Sum", "float64_values"]

MAX_BINS = 1 << 20


def float64_values(chunk: Any) -> np.ndarray:
    """The chunk's values as a contiguous little-endian float64 array, NaN dropped."""
    try:
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            raw = memoryview(chunk).cast("B")
            if raw.nbytes % 8:
                raise ConfigError(
                    f"a float64 chunk of raw bytes must be a multiple of 8 bytes, got {raw.nbytes}"
                )
            values = np.frombuffer(raw, dtype="<f8")
        elif hasattr(chunk, "to_numpy"):  # pandas Series / DataFrame, pyarrow arrays
            try:
                values = chunk.to_numpy(dtype=np.float64, na_value=np.nan)
            except TypeError:
                values = chunk.to_numpy(dtype=np.float64)
        else:
            values = np.asarray(chunk, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"a float64 kernel needs numbers, and this {type(chunk).__name__} chunk does not "
            f"convert to float64 ({exc})"
        ) from None
    if values.ndim != 1:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        elif values.ndim == 0:
            values = values.reshape(1)
        else:
            raise ConfigError(
                f"a float64 kernel needs one column of values, got an array of shape "
                f"{values.shape}; pick a column (df['fare'])"
            )
    nan = np.isnan(values)
    if nan.any():
        values = values[~nan]
    return np.ascontiguousarray(values, dtype="<f8")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


class PartialSum(float):
    """One chunk's sum (a float), carrying the exact terms that make it up for ``combine``."""

    components: tuple[float, ...]

    def __new__(cls, components: tuple[float, ...]) -> PartialSum:
        self = super().__new__(cls, _exact_sum(components))
        self.components = components
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (PartialSum, (self.components,))


def _exact_sum(components: Any) -> float:
    terms = list(components)
    if all(math.isfinite(t) for t in terms):
        try:
            return math.fsum(terms)
        except OverflowError:  # finite terms whose exact total is beyond float64
            pass
    return builtins.sum(terms)  # IEEE: inf, -inf or nan, as numpy.sum would give


class Sum(BuiltinKernel):
    """The sum of float64 values (NaN dropped).

    The result is the correctly rounded sum (equal to ``math.fsum`` of all values) except for
    the rounding of the in-kernel error terms: at most ~n * 2**-106 * sum(|x|) off, so it is
    exact for all but extremely ill-conditioned data (cancellation by ~10 orders of magnitude).
    """

    name = "sum"
    wat = "sum.wat"
    input_kind = "float64"

    def encode(self, chunk: Any) -> bytes:
        return float64_values(chunk).tobytes()

    def decode(self, output: bytes) -> PartialSum:
        return PartialSum(struct.unpack("<18d", output))

    def combine(self, partials: list[Any]) -> float:
        return _exact_sum(
            term
            for partial in partials
            for term in getattr(partial, "components", (float(partial),))
        )

    def empty(self) -> float:
        return 0.0


class MinMax(BuiltinKernel):
    """``(min, max)`` of float64 values (NaN dropped); ``(nan, nan)`` when there are none."""

    name = "min_max"
    wat = "min_max.wat"
    input_kind = "float64"

    def encode(self, chunk: Any) -> bytes:
        return float64_values(chunk).tobytes()

    def decode(self, output: bytes) -> tuple[float, float] | None:
        low, high, count = struct.unpack("<ddQ", output)
        return (low, high) if count else None

    def combine(self, partials: list[Any]) -> tuple[float, float]:
        present = [p for p in partials if p is not None]
        if not present:
            return self.empty()
        return (min(p[0] for p in present), max(p[1] for p in present))

    def empty(self) -> tuple[float, float]:
        return (math.nan, math.nan)


class Histogram(BuiltinKernel):
    """Counts per equal-width bin over ``[lo, hi]``, equal to ``numpy.histogram(x, bins,
    range=(lo, hi))[0]``: bin i holds edges[i] <= x < edges[i+1], the last bin also x == hi;
    values outside the range (and NaN) are not counted. The value is a numpy int64 array."""

    name = "histogram"
    wat = "histogram.wat"
    input_kind = "float64"

    def __init__(self, bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> None:
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
            raise ConfigError(f"histogram bins must be an int, got {type(bins).__name__}")
        if not 1 <= bins <= MAX_BINS:
            raise ConfigError(f"histogram bins must be between 1 and {MAX_BINS:,}, got {bins}")
        lo, hi = _real("histogram lo", lo), _real("histogram hi", hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(f"histogram range must be finite, got lo={lo}, hi={hi}")
        if lo > hi:
            raise ConfigError(f"histogram lo must not exceed hi, got lo={lo}, hi={hi}")
        super().__init__(bins=int(bins), lo=lo, hi=hi)
        if lo == hi:  # numpy.histogram widens an empty range the same way
            lo, hi = lo - 0.5, hi + 0.5
        if not math.isfinite(hi - lo):
            raise ConfigError(f"histogram range is too wide for float64: lo={lo}, hi={hi}")
        self.edges = np.linspace(lo, hi, int(bins) + 1, endpoint=True)
        header = struct.pack("<Q", int(bins)) + self.edges.astype("<f8").tobytes()
        self._header = header + bytes(-len(header) % 16)

    def encode(self, chunk: Any) -> bytes:
        return self._header + float64_values(chunk).tobytes()

    def decode(self, output: bytes) -> np.ndarray:
        return np.frombuffer(output, dtype="<i8").astype(np.int64)

    def combine(self, partials: list[Any]) -> np.ndarray:
        total = self.empty()
        for partial in partials:
            total += partial
        return total

    def empty(self) -> np.ndarray:
        return np.zeros(self._params["bins"], dtype=np.int64)


_OPS = {"<": 0, "<=": 1, ">": 2, ">=": 3, "==": 4, "!=": 5}


class CountWhere(BuiltinKernel):
    """How many values satisfy ``value <op> threshold`` (IEEE comparisons; NaN dropped)."""

    name = "count_where"
    wat = "count_where.wat"
    input_kind = "float64"

    def __init__(self, op: str = ">", threshold: float = 0.0) -> None:
        if op not in _OPS:
            raise ConfigError(f"count_where op must be one of {', '.join(_OPS)}; got {op!r}")
        threshold = _real("count_where threshold", threshold)
        super().__init__(op=op, threshold=threshold)
        self._header = struct.pack("<Qd", _OPS[op], threshold)

    def encode(self, chunk: Any) -> bytes:
        return self._header + float64_values(chunk).tobytes()

    def decode(self, output: bytes) -> int:
        return struct.unpack("<Q", output)[0]

    def combine(self, partials: list[Any]) -> int:
        return builtins.sum(int(p) for p in partials)

    def empty(self) -> int:
        return 0
