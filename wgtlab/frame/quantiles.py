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

The bookkeeping between passes is vectorised over every wanted rank of every group at once, so
a million groups cost numpy operations, not a million Python steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wgtlab.errors import FrameError
from wgtlab.frame.expr import Expr
from wgtlab.frame.plan import Accumulator, Histogram, PassPlan

if TYPE_CHECKING:
    from wgtlab.frame.query import Execution

__all__ = ["MAX_GROUP_SPACE", "quantile_values"]

MAX_GROUP_SPACE = 1 << 22  # the windows' table has an entry per possible group
BUCKET_BITS = 16
MIN_FIRST_BITS = 8  # the sign and most of the exponent: a first window still splits by scale
MIN_NEXT_BITS = 4  # later windows are clipped to their values' own range
VALUES_A_BUCKET = 4
SIGN = np.uint64(1 << 63)
FULL = np.uint64((1 << 64) - 1)
Wanted = tuple[str, float]  # ("median", 0.5) or ("q", q)


def quantile_values(
    execution: Execution,
    group_keys: np.ndarray,
    expr: Expr,
    wanted: list[Wanted],
    rows: np.ndarray | None = None,
) -> dict[Wanted, np.ndarray]:
    """For each group of ``group_keys`` (composite keys, sorted), each wanted ``("median",
    0.5)`` or ``("q", q)`` of ``expr``: a float64 array (NaN for groups without values).
    ``rows``, each group's rows (an upper bound on its values), sizes the first buckets: a small
    group's values would otherwise fall one to a bucket, and a bucket is a record to merge."""
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
    gids = np.asarray(group_keys, dtype=np.int64)
    groups = len(gids)
    # windows: one per group at first, covering every key
    first_bits = None if rows is None else _bits_for(np.asarray(rows), MIN_FIRST_BITS)
    windows = _Windows(
        np.arange(groups, dtype=np.int64),
        np.zeros(groups, dtype=np.uint64),
        np.full(groups, FULL, dtype=np.uint64),
        np.zeros(groups, dtype=np.int64),
        first_bits,
    )
    counts = np.zeros(groups, dtype=np.int64)
    targets: _Targets | None = None
    passes = 0
    while len(windows):
        passes += 1
        params, bases, total = _params(windows, gids, space)
        found = execution.run(
            plan, purpose=f"quantile pass {passes}", params=params, key_bound=total
        )
        buckets = _Buckets.of(found, bases, len(windows))
        if targets is None:  # the first pass counts every value of every group
            counts = buckets.window_total.astype(np.int64)
            targets = _Targets.wanted(counts, wanted, grouped)
            targets.window = targets.group.copy()  # first windows are the groups themselves
        windows = targets.narrow(windows, buckets)
    if targets is None:  # no groups at all
        targets = _Targets(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return _interpolate(counts, targets, expr, wanted, grouped)


class _Windows:
    """Windows of order keys, one row each: the group (an index into the groups), the keys
    ``lo..hi``, and how many of the group's values rank below ``lo``. Sorted by group, then lo."""

    def __init__(
        self,
        group: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        below: np.ndarray,
        bits: np.ndarray | None = None,
    ) -> None:
        self.group, self.lo, self.hi, self.below = group, lo, hi, below
        # bucket bits per window: BUCKET_BITS, or fewer for a small group's first window
        self.bits = np.full(len(group), BUCKET_BITS, np.int64) if bits is None else bits

    def __len__(self) -> int:
        return len(self.group)


class _Buckets:
    """A pass's merged records: per bucket (sorted ids) its count and least and greatest key,
    each bucket's window, and per window the values counted before it and in it."""

    def __init__(
        self, size: np.ndarray, least: np.ndarray, greatest: np.ndarray, window: np.ndarray, n: int
    ) -> None:
        self.size, self.least, self.greatest = size, least, greatest
        self.cumulative = np.cumsum(size)
        first = np.searchsorted(window, np.arange(n), side="left")
        padded = np.concatenate([[0], self.cumulative])  # values counted before bucket i: [i]
        self.before = padded[first]
        totals = np.zeros(n, dtype=np.int64)
        np.add.at(totals, window, size)
        self.window_total = totals

    @classmethod
    def of(cls, found: object, bases: np.ndarray, n: int) -> _Buckets:
        from wgtlab.frame.kernel import Groups

        assert isinstance(found, Groups)
        size, least, greatest = (f[0] for f in found.fields)
        window = np.searchsorted(bases, found.keys, side="right") - 1
        return cls(size.astype(np.int64), least, greatest, window, n)


class _Targets:
    """Every wanted rank of every group (deduplicated), its window in the pass being run, and
    its order key once known."""

    def __init__(self, group: np.ndarray, rank: np.ndarray) -> None:
        self.group, self.rank = group, rank
        self.window = np.zeros(len(group), dtype=np.int64)
        self.key = np.zeros(len(group), dtype=np.uint64)
        self.open = np.ones(len(group), dtype=bool)

    @classmethod
    def wanted(cls, counts: np.ndarray, wanted: list[Wanted], grouped: bool) -> _Targets:
        """The ranks ``wanted`` needs in each group with values: sorted by group, then rank,
        each once."""
        groups = np.flatnonzero(counts > 0)
        n = counts[groups]
        ranks = np.stack([r for spec in wanted for r in _ranks(n, spec, grouped)], axis=1)
        ranks.sort(axis=1)
        fresh = np.ones(ranks.shape, dtype=bool)
        fresh[:, 1:] = ranks[:, 1:] != ranks[:, :-1]
        group = np.repeat(groups, ranks.shape[1])[fresh.ravel()]
        return cls(group.astype(np.int64), ranks.ravel()[fresh.ravel()].astype(np.int64))

    def narrow(self, windows: _Windows, buckets: _Buckets) -> _Windows:
        """Resolve what this pass's buckets tell; the windows of the next pass."""
        live = np.flatnonzero(self.open)
        w = self.window[live]
        local = self.rank[live] - windows.below[w]
        target = buckets.before[w] + local  # position among all this pass's counted values
        j = np.searchsorted(buckets.cumulative, target, side="right")
        if len(target) and (j.max() >= len(buckets.size) or local.min() < 0):
            raise FrameError(
                "the quantile passes' counts do not add up (a worker answered one pass "
                "inconsistently with another); run with verify('redundancy') to outvote it"
            )
        start = buckets.cumulative[j] - buckets.size[j]
        at = target - start
        least, greatest = buckets.least[j], buckets.greatest[j]
        first = (least == greatest) | (at == 0)
        last = ~first & (at == buckets.size[j] - 1)
        self.key[live[first]] = least[first]
        self.key[live[last]] = greatest[last]
        narrower = ~(first | last)
        self.open[live[~narrower]] = False
        if not narrower.any():
            return _Windows(*(np.zeros(0, t) for t in (np.int64, np.uint64, np.uint64, np.int64)))
        group = windows.group[w[narrower]]
        lo, hi = least[narrower], greatest[narrower]
        below = windows.below[w[narrower]] + (start[narrower] - buckets.before[w[narrower]])
        # one window per (group, bucket): targets in the same bucket share it; sorted by group
        # and lo (a bucket's lo fixes its hi and below)
        order = np.lexsort((lo, group))
        fresh = np.r_[
            True, (group[order][1:] != group[order][:-1]) | (lo[order][1:] != lo[order][:-1])
        ]
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[order] = np.cumsum(fresh) - 1
        self.window[live[narrower]] = inverse
        keep = order[fresh]
        values = buckets.size[j[narrower]][keep]  # how many values the next window holds
        return _Windows(group[keep], lo[keep], hi[keep], below[keep], _bits_for(values))

    def lookup(self, group: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The order keys of (group, rank) pairs, all among the targets."""
        stride = int(self.rank.max(initial=0)) + 1
        combined = self.group * stride + self.rank
        return self.key[np.searchsorted(combined, group * stride + rank)]


def _ranks(n: np.ndarray, spec: Wanted, grouped: bool) -> list[np.ndarray]:
    kind, q = spec
    if kind == "median":
        return [(n - 1) // 2, n // 2]
    low = np.floor(_positions(n, q, grouped)).astype(np.int64)
    return [np.minimum(low, n - 1), np.minimum(low + 1, n - 1)]


def _positions(n: np.ndarray, q: float, grouped: bool) -> np.ndarray:
    if grouped:  # pandas' group_quantile: q * (n - 1)
        return np.float64(q) * (n - 1).astype(np.float64)
    return (n - 1).astype(np.float64) * np.float64(q)  # Series.quantile: np.quantile's linear


def _bits_for(values: np.ndarray, least: int = MIN_NEXT_BITS) -> np.ndarray:
    """Bucket bits for windows holding ``values`` values: about one bucket for every
    VALUES_A_BUCKET of them (a bucket is a record to merge; one value a bucket would make the
    records as many as the rows), between ``least`` and BUCKET_BITS."""
    sized = _bit_length(np.maximum(values, 1).astype(np.uint64) // VALUES_A_BUCKET)
    return np.clip(sized, least, BUCKET_BITS).astype(np.int64)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bits needed for each uint64 of ``x`` (0 for 0)."""
    x = x.copy()
    length = np.zeros(len(x), dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = x >= (np.uint64(1) << np.uint64(step))
        length[big] += step
        x[big] >>= np.uint64(step)
    return length + (x > 0)


def _params(windows: _Windows, gids: np.ndarray, space: int) -> tuple[bytes, np.ndarray, int]:
    """The pass's parameters: per possible group ``u32 first, u32 count`` (first counts 32-byte
    units from the start of the parameters), then windows ``lo, hi, shift, base`` (u64 each);
    each window's first bucket id, and the number of bucket ids."""
    units = -(-space * 8 // 32)
    table = np.zeros(space * 2, dtype="<u4")
    group_of = gids[windows.group]
    if len(windows):  # each group's windows are consecutive
        starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
        counts = np.diff(np.r_[starts, len(windows)])
        table[2 * group_of[starts]] = units + starts
        table[2 * group_of[starts] + 1] = counts
    span = windows.hi - windows.lo
    shift = np.maximum(_bit_length(span) - windows.bits, 0).astype(np.uint64)
    buckets = (span >> shift) + np.uint64(1)
    bases = np.concatenate([[0], np.cumsum(buckets.astype(np.int64))])
    total = int(bases[-1])
    if total >= 1 << 62:  # pragma: no cover - at most 2**16 buckets a window
        raise FrameError("too many quantile windows in one pass")
    rows = np.stack([windows.lo, windows.hi, shift, bases[:-1].astype(np.uint64)], axis=1)
    head = table.tobytes().ljust(units * 32, b"\0")
    return head + rows.astype("<u8").tobytes(), bases[:-1], max(total, 1)


def _interpolate(
    counts: np.ndarray, targets: _Targets, expr: Expr, wanted: list[Wanted], grouped: bool
) -> dict[Wanted, np.ndarray]:
    out: dict[Wanted, np.ndarray] = {}
    groups = np.flatnonzero(counts > 0)
    n = counts[groups]
    for spec in wanted:
        values = np.full(len(counts), np.nan)
        if len(groups):
            low, high = _ranks(n, spec, grouped)
            a = _values(targets.lookup(groups, low), expr)
            b = _values(targets.lookup(groups, high), expr)
            if spec[0] == "median":
                values[groups] = np.where(
                    n % 2 == 1, a.astype(np.float64), (a.astype(np.float64) + b) / 2.0
                )
            elif grouped:  # pandas' group_quantile: val + (next - val) * frac, unless frac == 0
                frac = np.mod(_positions(n, spec[1], grouped), 1.0)
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                with np.errstate(invalid="ignore"):
                    values[groups] = np.where(frac == 0.0, a64, a64 + (b64 - a64) * frac)
            else:  # one group: numpy's _lerp, on the column's own dtype
                position = float(_positions(n, spec[1], grouped)[0])
                values[groups] = _numpy_lerp(
                    a[0], b[0], position, int(np.floor(position)), int(n[0])
                )
        out[spec] = values
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


def _values(keys: np.ndarray, expr: Expr) -> np.ndarray:
    """Order keys -> the values they rank (the expression's numpy type)."""
    keys = keys.astype(np.uint64)
    if expr.dtype == "f64":
        bits = np.where(keys & SIGN, keys ^ SIGN, ~keys)
        return bits.view(np.float64)
    return (keys ^ SIGN).view(np.int64)
