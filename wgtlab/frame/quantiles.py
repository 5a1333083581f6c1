"""Exact quantiles and medians in a bounded number of verified passes.

Values are ranked by an order key (a 64-bit unsigned integer whose order is the values' order:
for floats, the sign-flipped IEEE bits). Each pass counts the rows of every group whose key falls
inside the group's *windows*, per bucket of 2**shift keys (at most 65,536 buckets per window),
and records each bucket's least and greatest key. A wanted rank then lies in one bucket: if it is
the bucket's first or last row, or the bucket holds one key, its value is known; else the bucket
(clipped to its least and greatest key) is the next pass's window. Each pass narrows a window by
at least 16 bits, so a quantile needs at most five passes, usually one or two; nothing is gathered
back but counts and keys. The interpolation is pandas' own formula (numpy's for a Series, the
group-by kernel's for groups), on the exact order statistics.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from wgtlab.errors import FrameError
from wgtlab.frame.expr import Expr
from wgtlab.frame.kernel import Groups
from wgtlab.frame.plan import Accumulator, Histogram, PassPlan

if TYPE_CHECKING:
    from wgtlab.frame.query import Execution

__all__ = ["MAX_GROUP_SPACE", "quantile_values"]

MAX_GROUP_SPACE = 1 << 22  # the windows' table has an entry per possible group
BUCKET_BITS = 16
FULL = (1 << 64) - 1
SIGN = 1 << 63


@dataclass
class Window:
    lo: int
    hi: int
    below: int  # the group's values ranked before this window
    ranks: set[int] = field(default_factory=set)

    @property
    def shift(self) -> int:
        return max(0, (self.hi - self.lo).bit_length() - BUCKET_BITS)

    @property
    def buckets(self) -> int:
        return ((self.hi - self.lo) >> self.shift) + 1


def quantile_values(
    execution: Execution,
    group_keys: np.ndarray,
    expr: Expr,
    wanted: list[tuple[str, float]],
) -> dict[tuple[str, float], np.ndarray]:
    """For each group of ``group_keys`` (composite keys, sorted), each wanted ``("median",
    0.5)`` or ``("q", q)`` of ``expr``: a float64 array (NaN for groups without values)."""
    keys = execution.keys
    space = 1
    for key in keys:
        space *= max(key.radix, 1)
    if space > MAX_GROUP_SPACE:
        raise FrameError(
            f"quantiles per group need at most {MAX_GROUP_SPACE:,} possible groups; grouping by "
            f"{', '.join(k.column for k in keys)} makes {space:,}"
        )
    plan = PassPlan(
        execution.request.filter,
        keys,
        (Accumulator("size"), Accumulator("kmin"), Accumulator("kmax")),
        histogram=Histogram(expr),
    )
    grouped = bool(keys)
    gids = [int(g) for g in group_keys]
    windows: dict[int, list[Window]] = {g: [Window(0, FULL, 0)] for g in gids}
    counts: dict[int, int] = {}
    known: dict[int, dict[int, int]] = defaultdict(dict)  # gid -> rank -> order key
    passes = 0
    while windows:
        passes += 1
        params, layout, bases = _params(windows, space)
        groups = execution.run(plan, purpose=f"quantile pass {passes}", params=params)
        found = _buckets(groups, layout, bases)
        next_windows: dict[int, list[Window]] = {}
        for gid, group_windows in windows.items():
            if gid not in counts:  # the first pass counts every value of the group
                n = sum(int(c) for c, _, _ in found.get((gid, 0), []))
                counts[gid] = n
                group_windows[0].ranks = _ranks(n, wanted, grouped)
            narrowed: dict[tuple[int, int], Window] = {}
            for index, window in enumerate(group_windows):
                buckets = found.get((gid, index), [])
                at = window.below
                for count, least, greatest in buckets:
                    count = int(count)
                    for rank in [r for r in window.ranks if at <= r < at + count]:
                        if least == greatest or rank == at:
                            known[gid][rank] = least
                        elif rank == at + count - 1:
                            known[gid][rank] = greatest
                        else:
                            inner = narrowed.setdefault(
                                (least, greatest), Window(least, greatest, at)
                            )
                            inner.ranks.add(rank)
                    at += count
            if narrowed:
                next_windows[gid] = sorted(narrowed.values(), key=lambda w: w.lo)
        windows = next_windows
    return _interpolate(gids, counts, known, expr, wanted, grouped)


def _ranks(n: int, wanted: list[tuple[str, float]], grouped: bool) -> set[int]:
    ranks: set[int] = set()
    for kind, q in wanted:
        if n == 0:
            continue
        if kind == "median":
            ranks.update({(n - 1) // 2, n // 2})
            continue
        position = _position(n, q, grouped)
        low = int(np.floor(position))
        ranks.update({min(low, n - 1), min(low + 1, n - 1)})
    return ranks


def _position(n: int, q: float, grouped: bool) -> float:
    if grouped:  # pandas' group_quantile: q * (n - 1)
        return float(q) * float(n - 1)
    return float((n - 1) * np.float64(q))  # Series.quantile -> np.quantile's linear method


def _params(
    windows: dict[int, list[Window]], space: int
) -> tuple[bytes, list[tuple[int, int]], np.ndarray]:
    """The pass's parameters: per possible group ``u32 first, u32 count`` (first counts 32-byte
    units from the start of the parameters), then windows ``lo, hi, shift, base`` (u64 each).
    Also, per window in order, its (gid, index) and its first bucket id (``base``)."""
    table = np.zeros(space * 2, dtype="<u4")
    units = -(-space * 8 // 32)
    rows: list[tuple[int, int, int, int]] = []
    layout: list[tuple[int, int]] = []
    base = 0
    for gid in sorted(windows):
        group_windows = windows[gid]
        table[2 * gid] = units + len(rows)
        table[2 * gid + 1] = len(group_windows)
        for index, window in enumerate(group_windows):
            rows.append((window.lo, window.hi, window.shift, base))
            layout.append((gid, index))
            base += window.buckets
    if base >= 1 << 62:  # pragma: no cover - at most 2**16 buckets per window
        raise FrameError("too many quantile windows in one pass")
    head = table.tobytes().ljust(units * 32, b"\0")
    body = np.array(rows, dtype="<u8").reshape(-1, 4).tobytes() if rows else b""
    bases = np.array([r[3] for r in rows], dtype=np.int64)
    return head + body, layout, bases


def _buckets(
    groups: Groups, layout: list[tuple[int, int]], bases: np.ndarray
) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """Merged records -> per (gid, window index) its buckets in key order: (count, least key,
    greatest key). Bucket ids are sorted, and each window's ids start at its base."""
    found: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    if not len(groups):
        return found
    sizes, least, greatest = (f[0] for f in groups.fields)
    positions = np.searchsorted(bases, groups.keys, side="right") - 1
    for position, count, lo, hi in zip(
        positions.tolist(), sizes.tolist(), least.tolist(), greatest.tolist(), strict=True
    ):
        found[layout[position]].append((count, lo, hi))
    return found


def _interpolate(
    gids: list[int],
    counts: dict[int, int],
    known: dict[int, dict[int, int]],
    expr: Expr,
    wanted: list[tuple[str, float]],
    grouped: bool,
) -> dict[tuple[str, float], np.ndarray]:
    out: dict[tuple[str, float], np.ndarray] = {}
    for kind, q in wanted:
        values = np.full(len(gids), np.nan)
        for row, gid in enumerate(gids):
            n = counts.get(gid, 0)
            if n == 0:
                continue
            ranked = known[gid]

            def value(rank: int, ranked: dict[int, int] = ranked) -> np.generic:
                return _value(ranked[rank], expr)

            if kind == "median":
                a, b = value((n - 1) // 2), value(n // 2)
                values[row] = float(a) if n % 2 else (float(a) + float(b)) / 2.0
                continue
            position = _position(n, q, grouped)
            low = int(np.floor(position))
            a, b = value(min(low, n - 1)), value(min(low + 1, n - 1))
            if grouped:  # pandas' group_quantile
                frac = position % 1
                values[row] = float(a) if frac == 0.0 else float(a) + (float(b) - float(a)) * frac
            else:
                values[row] = _numpy_lerp(a, b, position, low, n)
        out[(kind, q)] = values
    return out


def _numpy_lerp(a: np.generic, b: np.generic, position: float, low: int, n: int) -> float:
    """numpy's linear quantile between the order statistics ``a`` and ``b``, operation for
    operation (on the column's own dtype), so even its edge cases agree: past the last index
    numpy takes the last value with a weight of ``position + 1`` (NaN when that value is
    infinite)."""
    if position >= n - 1:  # numpy's previous index becomes -1: gamma = position - (-1)
        a = b
        low = -1
    gamma = np.float64(position - low)
    left, right = np.asarray(a), np.asarray(b)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = right - left
        result = left + diff * gamma
        if gamma >= 0.5:
            result = right - diff * (1 - gamma)
    return float(result)


def _value(key: int, expr: Expr) -> np.generic:
    """An order key -> the value it ranks (numpy scalar of the expression's type)."""
    if expr.dtype == "f64":
        bits = key ^ SIGN if key & SIGN else key ^ FULL
        return np.array([bits], dtype="<u8").view("<f8")[0]
    return np.int64(np.array([key ^ SIGN], dtype="<u8").view("<i8")[0])
