"""Built-in kernels (``wgt.kernels``): WAT modules in this package, each with its trusted-side spec.

``wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0)`` and friends return Kernel objects that a
job runs chunk by chunk; ``WasmKernel`` turns any ABI v1 module into one.
"""

from __future__ import annotations

from wgtlab.sandbox.kernels.base import BuiltinKernel, Kernel, WasmKernel, builtin_module
from wgtlab.sandbox.kernels.numeric import (
    CountWhere,
    Histogram,
    HistogramCounts,
    MinMax,
    PartialSum,
    Sum,
)
from wgtlab.sandbox.kernels.text import Checksum, WordCount

__all__ = [
    "BuiltinKernel",
    "Checksum",
    "CountWhere",
    "Histogram",
    "HistogramCounts",
    "Kernel",
    "MinMax",
    "PartialSum",
    "Sum",
    "WasmKernel",
    "WordCount",
    "builtin_module",
    "checksum",
    "count_where",
    "histogram",
    "min_max",
    "sum",
    "word_count",
]


def sum() -> Sum:  # shadows the builtin inside this module only: wgt.kernels.sum
    """The sum of float64 values, NaN dropped; correctly rounded for all but ill-conditioned
    data (see ``Sum``)."""
    return Sum()


def min_max() -> MinMax:
    """``(min, max)`` of float64 values, NaN dropped; ``(nan, nan)`` for no values."""
    return MinMax()


def histogram(bins: int | str = 10, lo: float | None = None, hi: float | None = None) -> Histogram:
    """Counts in ``bins`` equal bins over ``[lo, hi]``, equal to ``numpy.histogram``'s; without
    a range, the data's min and max; ``bins="auto"`` (or another numpy estimator) as numpy.
    Values outside an explicit range are counted apart: ``value.below``, ``value.above``."""
    return Histogram(bins=bins, lo=lo, hi=hi)


def count_where(op: str, threshold: float) -> CountWhere:
    """How many values satisfy ``value <op> threshold``; op is <, <=, >, >=, == or !=."""
    return CountWhere(op=op, threshold=threshold)


def word_count() -> WordCount:
    """Words in UTF-8 text, split at ASCII whitespace like ``bytes.split()``."""
    return WordCount()


def checksum() -> Checksum:
    """Adler-32 of the input bytes, equal to ``zlib.adler32``."""
    return Checksum()


#: every built-in kernel factory, by name
BUILTINS = {
    "sum": sum,
    "min_max": min_max,
    "histogram": histogram,
    "count_where": count_where,
    "word_count": word_count,
    "checksum": checksum,
}
