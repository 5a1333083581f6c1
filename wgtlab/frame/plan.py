"""One pass of a frame query, frozen: which columns travel, the row filter, the group keys and
the accumulators each group keeps. ``codegen`` turns a ``PassPlan`` into one WebAssembly module;
``kernel`` runs it as an ordinary ``Kernel``.

A pass computes, for every group its rows fall in, a record of accumulators (counts, Kahan sums,
min/max, Welford moments). Records come back in a fixed binary layout (``record_dtype``) and
merge exactly on the trusted side. Quantile passes also carry per-group windows of order keys:
rows whose value falls in a window are counted per bucket of that window (``Histogram``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from wgtlab.errors import FrameError
from wgtlab.frame.expr import Column, Expr, columns_of

__all__ = [
    "ACCUMULATOR_KINDS",
    "Accumulator",
    "AccumulatorKind",
    "Encoding",
    "GroupKey",
    "Histogram",
    "PassPlan",
    "PhysicalColumn",
    "code_encoding",
]

# "code": dictionary codes as int32 (-1 missing); "code8"/"code16": code + 1 as uint8/uint16
# (0 missing), for dictionaries that fit: a quarter or half of the bytes to copy and hash
Encoding = Literal["f64", "i64", "u8", "code", "code8", "code16"]
AccumulatorKind = Literal[
    "size", "count", "sum_f", "sum_i", "min_f", "max_f", "min_i", "max_i", "welford", "first",
    "kmin", "kmax",
]  # fmt: skip
ACCUMULATOR_KINDS: tuple[str, ...] = (
    "size", "count", "sum_f", "sum_i", "min_f", "max_f", "min_i", "max_i", "welford", "first",
    "kmin", "kmax",
)  # fmt: skip
# 8-byte fields each accumulator keeps, and their numpy types
FIELDS: dict[str, tuple[str, ...]] = {
    "size": ("<i8",),
    "count": ("<i8",),
    "sum_f": ("<f8", "<f8"),  # Kahan: sum, compensation
    "sum_i": ("<i8",),
    "min_f": ("<f8",),
    "max_f": ("<f8",),
    "min_i": ("<i8",),
    "max_i": ("<i8",),
    # shift (the first value), mean and M2 of the values less the shift (with the count of
    # the same expression): moments of values near their own scale, not near their mean's
    "welford": ("<f8", "<f8", "<f8"),
    "first": ("<i8",),  # the first row (global index) of the group
    "kmin": ("<u8",),  # quantile passes: the least and greatest order key in a bucket
    "kmax": ("<u8",),
}
WIDTH = {"f64": 8, "i64": 8, "u8": 1, "code": 4, "code8": 1, "code16": 2}
CODE_ENCODINGS = ("code", "code8", "code16")


def code_encoding(size: int) -> Encoding:
    """The narrowest code encoding for a dictionary of ``size`` values."""
    if size < 0xFF:
        return "code8"
    if size < 0xFFFF:
        return "code16"
    return "code"


MAX_KEY_SPACE = 1 << 62


@dataclass(frozen=True)
class PhysicalColumn:
    """A column as it travels: ``code`` is a dictionary-coded column (int32, -1 missing)."""

    name: str
    encoding: Encoding

    @property
    def key(self) -> str:
        return f"{self.name!r}:{self.encoding}"


@dataclass(frozen=True)
class Accumulator:
    kind: AccumulatorKind
    expr: Expr | None = None  # None for size and first

    @property
    def key(self) -> str:
        return f"{self.kind}({self.expr.key if self.expr is not None else ''})"


@dataclass(frozen=True)
class GroupKey:
    """A group-by column, carried as dictionary codes; ``radix`` codes, the last of them for
    missing values when they form a group (``keep_missing``: pandas' ``dropna=False``); else
    rows with a missing key are left out."""

    column: str
    radix: int
    keep_missing: bool = False


@dataclass(frozen=True)
class Histogram:
    """Quantile passes: rows are counted per bucket of their value's order key, inside the
    windows the payload's parameters give per group."""

    value: Expr


@dataclass(frozen=True)
class PassPlan:
    filter: Expr | None
    keys: tuple[GroupKey, ...]
    accumulators: tuple[Accumulator, ...]
    histogram: Histogram | None = None
    columns: tuple[PhysicalColumn, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.columns:
            object.__setattr__(self, "columns", self._physical_columns())
        space = 1
        for key in self.keys:
            space *= max(key.radix, 1)
        if space > MAX_KEY_SPACE:
            raise FrameError(
                f"grouping by {', '.join(k.column for k in self.keys)} makes {space:.3g} "
                "possible groups, more than 2**62; group by fewer columns"
            )

    def _physical_columns(self) -> tuple[PhysicalColumn, ...]:
        exprs: list[Expr] = [a.expr for a in self.accumulators if a.expr is not None]
        if self.filter is not None:
            exprs.insert(0, self.filter)
        if self.histogram is not None:
            exprs.append(self.histogram.value)
        out: dict[str, PhysicalColumn] = {}
        for key in self.keys:
            out.setdefault(f"{key.column}:code", PhysicalColumn(key.column, "code"))
        types = _column_types(exprs)
        for name in columns_of(*exprs):
            encoding = _ENCODING_OF[types[name]]
            out.setdefault(f"{name}:{encoding}", PhysicalColumn(name, encoding))
        return tuple(out.values())

    @property
    def key_space(self) -> int:
        space = 1
        for key in self.keys:
            space *= max(key.radix, 1)
        return space

    @property
    def text(self) -> str:
        """The canonical text of this pass; its digest names the generated module."""
        parts = [
            "frame-pass-v1",
            "columns=" + ",".join(c.key for c in self.columns),
            "filter=" + (self.filter.key if self.filter is not None else ""),
            "keys=" + ",".join(f"{k.column!r}/{k.radix}/{k.keep_missing}" for k in self.keys),
            "acc=" + ",".join(a.key for a in self.accumulators),
            "hist=" + (self.histogram.value.key if self.histogram is not None else ""),
        ]
        return "\n".join(parts)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def field_offsets(self) -> list[int]:
        """Byte offset, inside a record, of each accumulator's first field (after the key)."""
        offsets, at = [], 8
        for acc in self.accumulators:
            offsets.append(at)
            at += 8 * len(FIELDS[acc.kind])
        return offsets

    @property
    def record_bytes(self) -> int:
        return 8 + sum(8 * len(FIELDS[a.kind]) for a in self.accumulators)

    def record_dtype(self) -> np.dtype:
        names, formats = ["key"], ["<i8"]
        for index, acc in enumerate(self.accumulators):
            for part, fmt in enumerate(FIELDS[acc.kind]):
                names.append(f"a{index}_{part}")
                formats.append(fmt)
        return np.dtype({"names": names, "formats": formats})

    def index_of(self, kind: AccumulatorKind, expr: Expr | None = None) -> int:
        """The position of an accumulator in this pass."""
        wanted = Accumulator(kind, expr).key
        for index, acc in enumerate(self.accumulators):
            if acc.key == wanted:
                return index
        raise KeyError(wanted)


_ENCODING_OF: dict[str, Encoding] = {"f64": "f64", "i64": "i64", "bool": "u8", "str": "code"}


def _column_types(exprs: list[Expr]) -> dict[str, str]:
    types: dict[str, str] = {}
    stack = list(exprs)
    while stack:
        node = stack.pop()
        if isinstance(node, Column):
            types[node.name] = node.dtype
        stack.extend(node.children())
    return types
