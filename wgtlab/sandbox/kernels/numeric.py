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
from collections.abc import Iterable
from typing import Any

import numpy as np

from wgtlab.errors import ConfigError
from wgtlab.sandbox.kernels.base import BuiltinKernel

__all__ = [
    "CountWhere",
    "Histogram",
    "HistogramCounts",
    "MinMax",
    "PartialSum",
    "Sum",
    "float64_values",
]

MAX_BINS = 1 << 20


# dtype kinds that convert to float64 without an error but not to what the analyst meant:
# complex (the imaginary part is dropped) and datetime64 / timedelta64 (raw integer ticks).
_REFUSED_KINDS = frozenset("cmM")


def _refuse_dtype(chunk: Any, dtype: Any) -> None:
    kind = getattr(dtype, "kind", None)
    if kind not in _REFUSED_KINDS:
        return
    what = f"this {type(chunk).__name__} chunk holds {dtype} values"
    if kind == "c":
        raise ConfigError(
            f"a float64 kernel needs real numbers, and {what}: converting would drop the "
            "imaginary part silently. Pass the real numbers you mean explicitly, e.g. x.real, "
            "x.imag or abs(x)"
        )
    if kind == "M":
        raise ConfigError(
            f"a float64 kernel needs plain numbers, and {what}: its datetimes would be used as "
            "raw integer ticks since 1970. Convert them to numbers deliberately, e.g. "
            "x.astype('int64') for ticks since the epoch, or seconds since a start with "
            "(x - start).dt.total_seconds() (pandas) or (x - start) / np.timedelta64(1, 's')"
        )
    raise ConfigError(
        f"a float64 kernel needs plain numbers, and {what}: its durations would be used as "
        "raw integer ticks. Convert them to numbers deliberately, e.g. x.dt.total_seconds() "
        "(pandas) or x / np.timedelta64(1, 's') (numpy)"
    )


def float64_values(chunk: Any) -> np.ndarray:
    """The chunk's values as a contiguous little-endian float64 array, NaN dropped.

    Complex, datetime64 and timedelta64 values are refused (ConfigError): they would convert to
    something other than what was meant (the real part only, raw integer ticks).
    """
    try:
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            raw = memoryview(chunk).cast("B")
            if raw.nbytes % 8:
                raise ConfigError(
                    f"a float64 chunk of raw bytes must be a multiple of 8 bytes, got {raw.nbytes}"
                )
            values = np.frombuffer(raw, dtype="<f8")
        elif hasattr(chunk, "dtype"):  # numpy arrays and scalars, pandas Series
            _refuse_dtype(chunk, chunk.dtype)
            values = _to_numpy(chunk)
        elif hasattr(chunk, "to_numpy"):  # pandas DataFrame, pyarrow arrays
            dtypes = getattr(chunk, "dtypes", None)
            if dtypes is not None and hasattr(dtypes, "__iter__"):
                for dtype in dtypes:
                    _refuse_dtype(chunk, dtype)
            values = _to_numpy(chunk)
        else:  # lists and other sequences: what numpy makes of them decides
            values = np.asarray(chunk)
            _refuse_dtype(chunk, values.dtype)
            values = values.astype(np.float64, copy=False)
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


def _to_numpy(chunk: Any) -> np.ndarray:
    if not hasattr(chunk, "to_numpy"):
        return np.asarray(chunk, dtype=np.float64)
    try:
        return chunk.to_numpy(dtype=np.float64, na_value=np.nan)
    except TypeError:
        pass
    try:
        return chunk.to_numpy(dtype=np.float64)
    except TypeError:  # pyarrow arrays: no dtype argument; nulls come out as NaN or None
        return np.asarray(chunk.to_numpy(zero_copy_only=False), dtype=np.float64)


def _with_header(header: bytes, values: np.ndarray) -> bytes:
    # one allocation and one copy of the values (not tobytes() and then a concatenation)
    return b"".join((header, memoryview(values.data).cast("B")))


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


class PartialSum(float):
    """One chunk's sum (a float), carrying the running sums and error terms behind it."""

    sums: tuple[float, ...]
    errors: tuple[float, ...]

    def __new__(cls, sums: tuple[float, ...], errors: tuple[float, ...]) -> PartialSum:
        self = super().__new__(cls, _exact_sum([(sums, errors)]))
        self.sums, self.errors = sums, errors
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (PartialSum, (self.sums, self.errors))


def _exact_sum(parts: list[tuple[tuple[float, ...], tuple[float, ...]]]) -> float:
    sums = [x for part, _ in parts for x in part]
    terms = sums + [x for _, errors in parts for x in errors]
    if all(math.isfinite(t) for t in terms):
        try:
            return math.fsum(terms)
        except OverflowError:  # finite terms whose exact total is beyond float64
            pass
    # An infinity met on the way makes its error terms NaN; the running sums alone give the
    # IEEE answer (inf, -inf, or nan for inf - inf), as numpy.sum would.
    return builtins.sum(sums)


class Sum(BuiltinKernel):
    """The sum of float64 values (NaN dropped).

    Each chunk is summed in 8 lanes with error-free additions (Fast2Sum of the addends ordered
    by magnitude), which keep every rounding error; the host adds all lanes' sums and error terms
    with ``math.fsum``. The only error left is the
    rounding of the error terms' own running sums: at most half an ulp of the result plus
    n**2 * 2**-112 * sum(|x|) for a chunk of n values. For data that does not cancel by more than
    ~6 orders of magnitude (sum(|x|) / |sum(x)| < 1e6 at n = 1e6) that is below half an ulp, and
    the result equals ``math.fsum`` of all values, the correctly rounded sum.
    """

    name = "sum"
    wat = "sum.wat"
    input_kind = "float64"

    def encode(self, chunk: Any) -> bytes:
        return float64_values(chunk).tobytes()

    def decode(self, output: bytes) -> PartialSum:
        # 8 lane sums, their 8 error terms, then the scalar tail's sum and error term
        terms = struct.unpack("<18d", output)
        return PartialSum(terms[0:8] + terms[16:17], terms[8:16] + terms[17:18])

    def combine(self, partials: list[Any]) -> float:
        return _exact_sum(
            [
                (p.sums, p.errors) if isinstance(p, PartialSum) else ((float(p),), ())
                for p in partials
            ]
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


class HistogramCounts(np.ndarray):
    """``numpy.histogram``'s counts (an int64 array), carrying the bin ``edges`` and how many
    values fell ``below`` and ``above`` the range, which no bin counts."""

    edges: np.ndarray
    below: int
    above: int

    def __new__(
        cls, counts: np.ndarray, edges: np.ndarray, below: int, above: int
    ) -> HistogramCounts:
        array = np.asarray(counts, dtype=np.int64).view(cls)
        array.edges, array.below, array.above = edges, int(below), int(above)
        return array

    def __array_finalize__(self, obj: Any) -> None:
        self.edges = getattr(obj, "edges", np.empty(0))
        self.below = getattr(obj, "below", 0)
        self.above = getattr(obj, "above", 0)

    def __reduce__(self) -> tuple[Any, ...]:
        return (HistogramCounts, (np.asarray(self), self.edges, self.below, self.above))


class Histogram(BuiltinKernel):
    """Counts per equal-width bin over ``[lo, hi]``, equal to ``numpy.histogram(x, bins,
    range=(lo, hi))[0]``: bin i holds edges[i] <= x < edges[i+1], the last bin also x == hi.
    Values outside the range are counted apart (``value.below``, ``value.above``); NaN is
    dropped. Without ``lo``/``hi`` the range is the data's (min and max, as numpy's default);
    ``bins`` may be a numpy estimator name ("auto", "fd", "sturges", ...). Either is fitted to
    the data on the trusted side when the job is planned. The value is a ``HistogramCounts``."""

    name = "histogram"
    wat = "histogram.wat"
    input_kind = "float64"

    def __init__(
        self, bins: int | str = 10, lo: float | None = None, hi: float | None = None
    ) -> None:
        if isinstance(bins, str):
            if bins not in _BIN_ESTIMATORS:
                raise ConfigError(
                    f"histogram bins must be an int or one of {', '.join(_BIN_ESTIMATORS)} (as "
                    f"numpy.histogram), got {bins!r}"
                )
        elif isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
            raise ConfigError(f"histogram bins must be an int, got {type(bins).__name__}")
        elif not 1 <= bins <= MAX_BINS:
            raise ConfigError(f"histogram bins must be between 1 and {MAX_BINS:,}, got {bins}")
        if (lo is None) != (hi is None):
            raise ConfigError(
                "give both lo and hi for a histogram range, or neither (the data's min and max)"
            )
        if lo is not None and hi is not None:
            lo, hi = _real("histogram lo", lo), _real("histogram hi", hi)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConfigError(f"histogram range must be finite, got lo={lo}, hi={hi}")
            if lo > hi:
                raise ConfigError(f"histogram lo must not exceed hi, got lo={lo}, hi={hi}")
        super().__init__(bins=bins if isinstance(bins, str) else int(bins), lo=lo, hi=hi)
        if isinstance(bins, str) or lo is None or hi is None:
            self.edges = np.empty(0)
            self._header = b""
            return
        if lo == hi:  # numpy.histogram widens an empty range the same way
            lo, hi = lo - 0.5, hi + 0.5
        if not math.isfinite(hi - lo):
            raise ConfigError(f"histogram range is too wide for float64: lo={lo}, hi={hi}")
        self.edges = np.linspace(lo, hi, int(bins) + 1, endpoint=True)
        header = struct.pack("<Q", int(bins)) + self.edges.astype("<f8").tobytes()
        self._header = header + bytes(-len(header) % 16)

    @property
    def fitted(self) -> bool:
        """Whether the bins and range are known (else ``fit`` reads them from the data)."""
        return bool(self._header)

    def fit(self, chunks: Iterable[Any]) -> Histogram:
        if self.fitted:
            return self
        bins, lo, hi = self._params["bins"], self._params["lo"], self._params["hi"]
        if isinstance(bins, str):  # numpy's estimators need every value
            values = np.concatenate([float64_values(c) for c in chunks] or [np.empty(0)])
            span = None if lo is None else (lo, hi)
            edges = np.histogram_bin_edges(values, bins=bins, range=span)
            return Histogram(bins=len(edges) - 1, lo=float(edges[0]), hi=float(edges[-1]))
        low, high = math.inf, -math.inf
        for chunk in chunks:
            values = float64_values(chunk)
            if values.size:
                low, high = min(low, float(values.min())), max(high, float(values.max()))
        if low > high:  # no values: numpy's default range
            low, high = 0.0, 1.0
        return Histogram(bins=bins, lo=low, hi=high)

    def encode(self, chunk: Any) -> bytes:
        if not self.fitted:
            raise ConfigError(
                "this histogram takes its bins or range from the data: run it in a job (which "
                "fits it when planned) or call .fit(chunks) first"
            )
        return _with_header(self._header, float64_values(chunk))

    def decode(self, output: bytes) -> np.ndarray:
        counts = np.frombuffer(output, dtype="<i8").astype(np.int64)
        if counts.size != self._params["bins"] + 2:
            raise ConfigError(
                f"a histogram output holds {counts.size} counts, expected {self._params['bins']}"
                " bins and the two out-of-range counts"
            )
        return counts

    def combine(self, partials: list[Any]) -> HistogramCounts:
        total = np.zeros(self._params["bins"] + 2, dtype=np.int64)
        for partial in partials:
            total += partial
        return HistogramCounts(total[:-2], self.edges, int(total[-2]), int(total[-1]))

    def empty(self) -> HistogramCounts:
        return self.combine([])

    def note(self, value: Any) -> str:
        if isinstance(value, HistogramCounts) and (value.below or value.above):
            return (
                f"{value.below:,} values below the range and {value.above:,} above it were not "
                f"counted (range {value.edges[0]:g} .. {value.edges[-1]:g})"
            )
        return ""


_BIN_ESTIMATORS = ("auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt")


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
        return _with_header(self._header, float64_values(chunk))

    def decode(self, output: bytes) -> int:
        return struct.unpack("<Q", output)[0]

    def combine(self, partials: list[Any]) -> int:
        return builtins.sum(int(p) for p in partials)

    def empty(self) -> int:
        return 0
