"""A frame query, executed: which passes run, and how their verified records become pandas'
answer.

A ``Request`` is a filter, group keys and named aggregations. It runs as at most three kinds of
pass, each an ordinary job: one *aggregate* pass (counts, sums, min/max, moments for every
aggregation that has them), one *distinct* pass per ``nunique`` column (groups of keys plus the
column), and *quantile* passes (exact: windows of order keys narrow down until each wanted rank
is known; see ``quantiles``). Every pass is verified like any job; the values are assembled
from merged records, on the trusted side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wgtlab.errors import FrameError
from wgtlab.frame.codegen import generate
from wgtlab.frame.expr import Column, Expr, holds, unary
from wgtlab.frame.kernel import DIVIDED_BY_ZERO, FrameKernel, Groups
from wgtlab.frame.plan import (
    WIDTH,
    Accumulator,
    AccumulatorKind,
    GroupKey,
    PassPlan,
    PhysicalColumn,
    code_encoding,
)
from wgtlab.frame.source import Source
from wgtlab.jobs.job import Job, JobSettings
from wgtlab.jobs.result import JobResult

__all__ = ["AGGREGATIONS", "Agg", "Execution", "Request", "RunPass"]

AGGREGATIONS = (
    "sum", "mean", "count", "size", "min", "max", "var", "std", "nunique", "median", "quantile",
)  # fmt: skip
NUMERIC_ONLY = ("sum", "mean", "var", "std", "median", "quantile")
CHUNK_BYTES = (
    16 << 20
)  # payload per chunk the planner aims at (fewer, larger chunks: less per-chunk cost)
MIN_CHUNK_ROWS = 1 << 14
MAX_CHUNK_ROWS = 1 << 21
BALANCE = 2  # chunk counts are rounded up to a multiple of this

# runs one pass's job -> its result (q.run: the cluster's run; %wgt run: with a dashboard)
RunPass = Callable[[Job], JobResult]


@dataclass(frozen=True)
class Agg:
    """One output value per group: ``func`` of ``expr`` (None for ``size``), labelled ``label``."""

    label: Any
    func: str
    expr: Expr | None
    q: float = 0.5

    def __post_init__(self) -> None:
        check_aggregation(self.func, self.expr, self.q)


def check_aggregation(func: str, expr: Expr | None, q: float = 0.5) -> None:
    """FrameError unless ``func`` can aggregate ``expr``."""
    if func not in AGGREGATIONS:
        raise FrameError(
            f"the aggregation {func!r} is not supported; use one of {', '.join(AGGREGATIONS)}"
        )
    if expr is None:
        if func != "size":
            raise FrameError(f"{func} needs a column")  # pragma: no cover
        return
    if func in NUMERIC_ONLY and expr.dtype == "str":
        raise FrameError(f"{func} needs numbers; {expr.describe()} holds {holds(expr)}")
    if func == "nunique" and not isinstance(expr, Column):
        raise FrameError("nunique counts the distinct values of a column, not of an expression")
    if func == "quantile" and (
        isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0
    ):
        raise FrameError(f"quantile takes q between 0 and 1, got {q!r}")
    if func == "quantile" and expr.dtype == "bool":
        raise FrameError(
            f"quantile of {expr.describe()}: bools have no quantile in pandas (numpy refuses "
            "to subtract them); use .astype('float64') for one"
        )


@dataclass(frozen=True)
class Request:
    source: Source
    filter: Expr | None
    keys: tuple[str, ...]
    dropna: bool
    aggs: tuple[Agg, ...]
    first: bool = False  # keep each group's first row (order of first appearance)

    def key_columns(self) -> tuple[GroupKey, ...]:
        keys = []
        for name in self.keys:
            radix = len(self.source.dictionary(name))
            keep = not self.dropna
            keys.append(GroupKey(name, radix + (1 if keep else 0), keep_missing=keep))
        return tuple(keys)


@dataclass
class Table:
    """Per group (``codes``: one array of dictionary codes per key, -1 for a missing key) the
    value of each aggregation, as numpy arrays in group order."""

    keys: np.ndarray  # composite group keys, sorted
    codes: list[np.ndarray]
    # agg position -> its values; ("count", position) -> the count min/max rest on; "first" ->
    # each group's first row
    values: dict[Any, Any] = field(default_factory=dict)


class Execution:
    """Runs a request's passes through ``run_pass`` and assembles the table."""

    def __init__(
        self, request: Request, run_pass: RunPass, settings: JobSettings | None, label: str
    ) -> None:
        self.request = request
        self.run_pass = run_pass
        self.settings = settings
        self.label = label
        self.results: list[JobResult] = []
        request.source.prepare([(key, "code") for key in request.keys])  # at once, in parallel
        self.keys = request.key_columns()

    # --- passes ------------------------------------------------------------------------------

    def run(
        self, plan: PassPlan, *, purpose: str, params: bytes = b"", key_bound: int | None = None
    ) -> Groups:
        source = self.request.source
        plan = self._narrow(plan)
        source.prepare([(c.name, c.encoding) for c in plan.columns])
        wat = generate(plan, lambda column: source.dictionary(column).values)
        kernel = FrameKernel(
            plan,
            wat,
            [source.array(c.name, c.encoding) for c in plan.columns],
            label=f"{self.label} ({purpose})",
            params=params,
            payloads=source.payloads,
            key_bound=key_bound,
        )
        chunk_rows = self.chunk_rows(plan)
        kernel.prepare(source.rows, chunk_rows)
        result = self.run_pass(self.job(kernel, purpose, chunk_rows))
        self.results.append(result)
        value = result.value
        if not isinstance(value, Groups):  # pragma: no cover
            raise FrameError("a frame pass returned no records")
        if value.flags & DIVIDED_BY_ZERO:
            raise FrameError(
                "an integer was divided by 0 (// or %) in some row: pandas would make that "
                "column float64 (inf, NaN); divide as floats instead, e.g. "
                "f.x.astype('float64') // f.y"
            )
        return value

    def _narrow(self, plan: PassPlan) -> PassPlan:
        """``plan`` with each code column in the narrowest encoding its dictionary allows."""
        source = self.request.source
        source.prepare([(c.name, "code") for c in plan.columns if c.encoding == "code"])
        columns = tuple(
            PhysicalColumn(c.name, code_encoding(len(source.dictionary(c.name))))
            if c.encoding == "code"
            else c
            for c in plan.columns
        )
        return dataclasses.replace(plan, columns=columns)

    def job(self, kernel: FrameKernel, purpose: str, chunk_rows: int) -> Job:
        job = Job(f"{self.label}: {purpose}")
        job.input(self.request.source.rows_table(), chunk_rows=chunk_rows)
        job.kernel(kernel)
        if self.settings is not None:
            job._settings_from(self.settings)
        return job

    def chunk_rows(self, plan: PassPlan) -> int:
        if self.request.source.chunk_rows is not None:
            return self.request.source.chunk_rows
        width = sum(WIDTH[c.encoding] for c in plan.columns)
        rows = max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(width, 1)))
        total = self.request.source.rows
        if total <= rows:
            return rows
        # a multiple of BALANCE chunks of equal size: two workers finish together
        chunks = -(-total // rows)
        chunks = -(-chunks // BALANCE) * BALANCE
        return max(MIN_CHUNK_ROWS, -(-total // chunks))

    # --- the table ---------------------------------------------------------------------------

    def table(self) -> Table:
        request = self.request
        accumulators = _accumulators(request.aggs)
        if request.first and self.keys:
            accumulators = (*accumulators, Accumulator("first"))
        base: Groups | None = None
        if accumulators:
            plan = PassPlan(request.filter, self.keys, accumulators)
            base = self.run(plan, purpose="aggregate")
        if base is not None and (self.keys or len(base.keys)):
            keys = base.keys
        else:
            keys = np.zeros(1, dtype=np.int64)  # ungrouped: one group, even with no rows
        table = Table(keys, self._codes(keys))
        for position, agg in enumerate(request.aggs):
            if agg.func in ("nunique", "median", "quantile"):
                continue
            assert base is not None
            table.values[position] = self._from_records(agg, base, plan)
            if agg.func in ("min", "max", "mean"):  # whether any value was there
                counted = plan.index_of("count", _measured(agg))
                table.values[("count", position)] = base.fields[counted][0]
        if request.first and self.keys and base is not None:
            table.values["first"] = base.fields[plan.index_of("first")][0]
        if base is not None:  # rows that passed the filter, per group
            table.values["rows"] = base.fields[plan.index_of("size")][0]
        self._distinct(table)
        self._quantiles(table)
        return table

    def _codes(self, keys: np.ndarray) -> list[np.ndarray]:
        codes: list[np.ndarray] = []
        rest = keys.copy()
        for key in reversed(self.keys):
            code = rest % key.radix
            rest //= key.radix
            if key.keep_missing:
                code = np.where(code == key.radix - 1, -1, code)
            codes.append(code)
        return list(reversed(codes))

    def _from_records(self, agg: Agg, groups: Groups, plan: PassPlan) -> np.ndarray:
        def field_of(kind: AccumulatorKind, expr: Expr | None = None, part: int = 0) -> np.ndarray:
            return groups.fields[plan.index_of(kind, expr)][part]

        if agg.func == "size":
            return field_of("size")
        expr = _measured(agg)
        assert expr is not None
        count = field_of("count", expr)
        if agg.func == "count":
            return count
        with np.errstate(invalid="ignore", divide="ignore"):
            if agg.func == "sum":
                return field_of("sum_f" if expr.dtype == "f64" else "sum_i", expr)
            if agg.func == "mean":
                total = field_of("sum_f" if expr.dtype == "f64" else "sum_i", expr)
                return np.where(count > 0, total.astype(np.float64) / count, np.nan)
            if agg.func in ("min", "max"):
                return field_of(_extreme(agg.func, expr), expr)
            m2 = field_of("welford", expr, 1)
            var = np.where(count > 1, m2 / (count - 1), np.nan)
            return var if agg.func == "var" else np.sqrt(var)

    def _distinct(self, table: Table) -> None:
        request = self.request
        done: dict[str, np.ndarray] = {}
        for position, agg in enumerate(request.aggs):
            if agg.func != "nunique":
                continue
            assert isinstance(agg.expr, Column)
            name = agg.expr.name
            if name not in done:
                radix = len(request.source.dictionary(name))
                plan = PassPlan(
                    request.filter,
                    (*self.keys, GroupKey(name, radix)),
                    (Accumulator("size"),),
                )
                groups = self.run(plan, purpose=f"distinct {name}")
                outer = groups.keys // max(radix, 1)
                found, counts = np.unique(outer, return_counts=True)
                per_group = np.zeros(len(table.keys), dtype=np.int64)
                at = np.searchsorted(table.keys, found)
                inside = (at < len(table.keys)) & (
                    table.keys[np.minimum(at, len(table.keys) - 1)] == found
                )
                per_group[at[inside]] = counts[inside]
                done[name] = per_group
            table.values[position] = done[name]

    def _quantiles(self, table: Table) -> None:
        from wgtlab.frame.quantiles import quantile_values

        wanted: dict[str, tuple[Expr, list[tuple[int, tuple[str, float]]]]] = {}
        for position, agg in enumerate(self.request.aggs):
            if agg.func not in ("median", "quantile"):
                continue
            assert agg.expr is not None
            spec = ("median", 0.5) if agg.func == "median" else ("q", float(agg.q))
            wanted.setdefault(agg.expr.key, (agg.expr, []))[1].append((position, spec))
        for expr, positions in wanted.values():
            specs = list(dict.fromkeys(spec for _, spec in positions))
            values = quantile_values(self, table.keys, expr, specs, table.values.get("rows"))
            for position, spec in positions:
                table.values[position] = values[spec]


_EXTREMES: dict[tuple[str, bool], AccumulatorKind] = {
    ("min", True): "min_f", ("max", True): "max_f",
    ("min", False): "min_i", ("max", False): "max_i",
}  # fmt: skip


def _extreme(func: str, expr: Expr) -> AccumulatorKind:
    """The accumulator of ``func`` ("min" | "max") over ``expr``: floats, or integer codes."""
    return _EXTREMES[(func, expr.dtype == "f64")]


def _measured(agg: Agg) -> Expr | None:
    """The expression ``agg`` accumulates: integers and bools as float64 for the moments and
    the mean (pandas sums them in float64 there), else the expression itself."""
    expr = agg.expr
    if expr is not None and expr.dtype in ("i64", "bool") and agg.func in ("var", "std", "mean"):
        return unary("float", expr)
    return expr


def _accumulators(aggs: tuple[Agg, ...]) -> tuple[Accumulator, ...]:
    """What the aggregate pass keeps for ``aggs``, each once; counts before moments."""
    wanted: dict[str, Accumulator] = {}

    def want(kind: AccumulatorKind, expr: Expr | None = None) -> None:
        acc = Accumulator(kind, expr)
        wanted.setdefault(acc.key, acc)

    want("size")  # groups exist by their rows; an ungrouped answer needs to know if any passed
    for agg in aggs:
        if agg.func == "size":
            want("size")
            continue
        if agg.func in ("nunique", "median", "quantile"):
            continue
        expr = _measured(agg)
        assert expr is not None
        want("count", expr)
        if agg.func in ("sum", "mean"):
            want("sum_f" if expr.dtype == "f64" else "sum_i", expr)
        elif agg.func in ("min", "max"):
            want(_extreme(agg.func, expr), expr)
        elif agg.func in ("var", "std"):
            want("welford", expr)
    return tuple(wanted.values())
