"""``wgt.frame``: pandas' habits, lazily. ``Frame`` and ``Series`` build checked expressions;
``GroupBy`` and the reductions make a ``Query``, which runs as verified jobs when asked
(``run``, ``compute``) and answers in pandas' shapes and dtypes.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import sys
import tokenize
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from wgtlab.errors import FrameError, JobDefinitionError, NoSuchColumn
from wgtlab.frame import expr as ex
from wgtlab.frame.expr import Expr
from wgtlab.frame.query import AGGREGATIONS, Agg, Execution, Request, RunPass, Table
from wgtlab.frame.source import Source, open_source
from wgtlab.jobs import runtime
from wgtlab.jobs.job import Job, JobSettings
from wgtlab.jobs.plan import JobPlan, JobRunner
from wgtlab.jobs.result import JobResult

__all__ = ["Frame", "GroupBy", "Query", "QueryJob", "Series", "frame"]

DESCRIBE_INDEX = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]


def frame(data: Any, *, pipeline: Any = None, chunk_rows: int | None = None) -> Frame:
    """A lazy, verified view of ``data``: a pandas DataFrame, a Parquet path or fsspec URL, or a
    CES shard set (a list of shards, or the URL ``wgt.ces.save`` wrote, with its ``pipeline``).

    Nothing runs until a result is asked for (``.compute()``, ``.run(on=...)``); every result is
    computed by generated WebAssembly on the cluster's workers and verified. ``chunk_rows``:
    rows per chunk (default: about 16 MiB of columns a chunk, at most 2,097,152 rows, in an
    even number of chunks).

    The frame takes the data as it is now: columns are read (and strings coded) once, and kept.
    """
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
    ):
        raise FrameError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    source = open_source(data, pipeline)
    source.chunk_rows = chunk_rows
    return Frame(source)


class Frame:
    """Rows of a source, optionally filtered, with derived columns."""

    def __init__(
        self,
        source: Source,
        filter: Expr | None = None,
        derived: Mapping[str, Expr] | None = None,
        selected: Sequence[str] | None = None,
    ) -> None:
        self._source = source
        self._filter = filter
        self._derived = dict(derived or {})
        self._selected = list(selected) if selected is not None else None

    # --- columns --------------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        if self._selected is not None:
            return list(self._selected)
        names = list(self._source.columns)
        return names + [d for d in self._derived if d not in names]

    def _expr(self, name: str) -> Expr:
        if not isinstance(name, str):
            raise FrameError(f"column names are strings, got {name!r}")
        if name in self._derived:
            return self._derived[name]
        if self._selected is not None and name not in self._selected:
            raise FrameError(f"column {name!r} is not among the selected columns {self._selected}")
        dtype = self._source.dtype(name)
        kind = self._source.string_kind(name) if dtype == "str" else "text"
        return ex.Column(dtype, name, kind)

    def __getattr__(self, name: str) -> Series:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.columns:
            return Series(self, self._expr(name), name)
        raise NoSuchColumn(
            f"the frame has no column {name!r}{_guess(name, self.columns)}; its columns: "
            f"{', '.join(self.columns)}"
        )

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {c for c in self.columns if c.isidentifier()})

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return Series(self, self._expr(key), key)
        if isinstance(key, Series):
            return self._where(key)
        if isinstance(key, (list, tuple)) and all(isinstance(k, str) for k in key):
            for name in key:
                self._expr(name)
            return Frame(self._source, self._filter, self._derived, list(key))
        raise FrameError(
            f"frame[...] takes a column name, a list of names, or a condition (f[f.x > 0]); got "
            f"{type(key).__name__}"
        )

    def _where(self, mask: Series) -> Frame:
        self._same(mask)
        if mask.expr.dtype != "bool":
            raise FrameError(
                f"f[...] filters rows with a condition; {mask.expr.describe()} is {mask.expr.dtype}"
            )
        combined = mask.expr if self._filter is None else ex.binary("and", self._filter, mask.expr)
        return Frame(self._source, combined, self._derived, self._selected)

    def _same(self, series: Series) -> None:
        if series.frame._source is not self._source:
            raise FrameError("a condition or column from another frame cannot be used here")

    def assign(self, **columns: Any) -> Frame:
        """New columns from expressions, scalars, or functions of the frame."""
        derived = dict(self._derived)
        current = self
        for name, value in columns.items():
            if callable(value) and not isinstance(value, Series):
                value = value(current)
            if isinstance(value, Series):
                current._same(value)
                derived[name] = value.expr
            else:
                derived[name] = ex.literal(value)
            selected = None if self._selected is None else [*self._selected, name]
            current = Frame(self._source, self._filter, derived, selected)
        return current

    def query(self, text: str, *, local_dict: Mapping[str, Any] | None = None) -> Frame:
        """Rows where ``text`` holds, in pandas' query syntax (``and or not``, comparisons,
        ``in``/``not in`` lists, arithmetic, ``@name`` for a Python variable)."""
        if local_dict is None:
            caller = sys._getframe(1)
            local_dict = {**caller.f_globals, **caller.f_locals}
        condition = parse_condition(self, text, local_dict)
        return self._where(condition)

    # --- results --------------------------------------------------------------------------------

    def groupby(
        self, by: str | Sequence[str], *, dropna: bool = True, sort: bool = True
    ) -> GroupBy:
        keys = [by] if isinstance(by, str) else list(by)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise FrameError(f"groupby takes a column name or a list of names, got {by!r}")
        for key in keys:
            if key in self._derived:
                raise FrameError(
                    f"grouping by the computed column {key!r} is not supported; group by source "
                    "columns"
                )
            self._source.check(key)
            self._source.dtype(key)
        if dropna not in (True, False) or sort not in (True, False):
            raise FrameError("groupby's dropna and sort take True or False")
        return GroupBy(self, tuple(keys), dropna, sort)

    def _value_columns(self, numeric: bool) -> list[str]:
        names = []
        for name in self.columns:
            dtype = self._expr(name).dtype
            if not numeric or dtype in ("f64", "i64"):
                names.append(name)
        return names

    def count(self) -> Query:
        """Non-missing values per column (a Series, as ``DataFrame.count()``)."""
        names = self._value_columns(numeric=False)
        aggs = tuple(Agg(n, "count", self._expr(n)) for n in names)

        def finish(table: Table, run: Execution) -> Any:
            return pd.Series(
                [int(table.values[i][0]) for i in range(len(names))], index=names, dtype="int64"
            )

        return Query(self, (), True, True, aggs, finish, "count")

    def describe(self) -> Query:
        """count, mean, std, min, quartiles, max of every numeric column (as pandas)."""
        names = self._value_columns(numeric=True)
        if not names:
            raise FrameError(
                "describe() needs a numeric column; describe a string column with f.col.describe()"
            )
        aggs = tuple(
            Agg((n, stat), func, self._expr(n), q) for n in names for stat, func, q in _DESCRIBE
        )

        def finish(table: Table, run: Execution) -> Any:
            width = len(_DESCRIBE)
            data = {
                n: [_statistic(table, i * width + j, aggs[i * width + j]) for j in range(width)]
                for i, n in enumerate(names)
            }
            return pd.DataFrame(data, index=DESCRIBE_INDEX, dtype="float64")

        return Query(self, (), True, True, aggs, finish, "describe")

    def __len__(self) -> int:
        raise FrameError("len() would run a job; use f.size().compute() or a column's count()")

    def size(self) -> Query:
        """The number of rows (after filters)."""
        return Query(self, (), True, True, (Agg("size", "size", None),), _scalar(0, None), "size")

    def __repr__(self) -> str:
        where = f", where {self._filter.key}" if self._filter is not None else ""
        columns = ", ".join(self.columns)
        return (
            f"wgt.frame({self._source.name}, {self._source.rows:,} rows{where}; columns: {columns})"
        )


def _statistic(table: Table, position: int, agg: Agg) -> float:
    """One describe() statistic: NaN where there are no values, as pandas."""
    return float(typed_values(table, position, agg, None)[0])


_DESCRIBE = [
    ("count", "count", 0.5), ("mean", "mean", 0.5), ("std", "std", 0.5), ("min", "min", 0.5),
    ("25%", "quantile", 0.25), ("50%", "quantile", 0.5), ("75%", "quantile", 0.75),
    ("max", "max", 0.5),
]  # fmt: skip


def _binary(op: str, reflected: bool = False) -> Callable[[Series, Any], Series]:
    def method(self: Series, other: Any) -> Series:
        right = self._operand(other)
        left = self.expr
        if reflected:
            left, right = right, left
        return Series(self.frame, ex.binary(op, left, right), self.name)

    return method


class _Reductions(ABC):
    """The reductions a column offers by name, each ``_reduce(func)``."""

    @abstractmethod
    def _reduce(self, func: str, q: float = 0.5) -> Query: ...

    def sum(self) -> Query:
        return self._reduce("sum")

    def mean(self) -> Query:
        return self._reduce("mean")

    def count(self) -> Query:
        return self._reduce("count")

    def min(self) -> Query:
        return self._reduce("min")

    def max(self) -> Query:
        return self._reduce("max")

    def var(self) -> Query:
        return self._reduce("var")

    def std(self) -> Query:
        return self._reduce("std")

    def median(self) -> Query:
        return self._reduce("median")

    def nunique(self) -> Query:
        return self._reduce("nunique")


class Series(_Reductions):
    """A column (or an expression of columns) of a frame; reductions make a ``Query``."""

    def __init__(self, frame: Frame, expr: Expr, name: str | None) -> None:
        self.frame = frame
        self.expr = expr
        self.name = name

    def _operand(self, other: Any) -> Expr:
        if isinstance(other, Series):
            self.frame._same(other)
            return other.expr
        return ex.literal(other)

    __add__ = _binary("add")
    __radd__ = _binary("add", True)
    __sub__ = _binary("sub")
    __rsub__ = _binary("sub", True)
    __mul__ = _binary("mul")
    __rmul__ = _binary("mul", True)
    __truediv__ = _binary("div")
    __rtruediv__ = _binary("div", True)
    __floordiv__ = _binary("floordiv")
    __rfloordiv__ = _binary("floordiv", True)
    __mod__ = _binary("mod")
    __rmod__ = _binary("mod", True)
    __pow__ = _binary("pow")
    __eq__ = _binary("eq")  # type: ignore[assignment]
    __ne__ = _binary("ne")  # type: ignore[assignment]
    __lt__ = _binary("lt")
    __le__ = _binary("le")
    __gt__ = _binary("gt")
    __ge__ = _binary("ge")
    __and__ = _binary("and")
    __rand__ = _binary("and", True)
    __or__ = _binary("or")
    __ror__ = _binary("or", True)
    __hash__ = None  # type: ignore[assignment]

    def __invert__(self) -> Series:
        return Series(self.frame, ex.unary("not", self.expr), self.name)

    def __neg__(self) -> Series:
        return Series(self.frame, ex.unary("neg", self.expr), self.name)

    def __abs__(self) -> Series:
        return self.abs()

    def __bool__(self) -> bool:
        raise FrameError(
            "a frame condition has no single truth value; combine conditions with & | ~ (not "
            "and/or/not), each in parentheses: (f.x > 0) & (f.y < 5)"
        )

    def abs(self) -> Series:
        return Series(self.frame, ex.unary("abs", self.expr), self.name)

    def isna(self) -> Series:
        return Series(self.frame, ex.unary("isna", self.expr), self.name)

    isnull = isna

    def notna(self) -> Series:
        return Series(self.frame, ex.unary("notna", self.expr), self.name)

    notnull = notna

    def fillna(self, value: Any) -> Series:
        return Series(self.frame, ex.unary("fillna", self.expr, ex.literal(value)), self.name)

    def isin(self, values: Any) -> Series:
        return Series(self.frame, ex.is_in(self.expr, values), self.name)

    def between(self, left: Any, right: Any, inclusive: str = "both") -> Series:
        ops = {
            "both": ("ge", "le"),
            "neither": ("gt", "lt"),
            "left": ("ge", "lt"),
            "right": ("gt", "le"),
        }
        if inclusive not in ops:
            raise FrameError(f"between's inclusive is one of {', '.join(ops)}, got {inclusive!r}")
        low, high = ops[inclusive]
        lower = ex.binary(low, self.expr, self._operand(left))
        upper = ex.binary(high, self.expr, self._operand(right))
        return Series(self.frame, ex.binary("and", lower, upper), self.name)

    def astype(self, dtype: Any) -> Series:
        if str(dtype) in ("float", "float64"):
            return Series(self.frame, ex.unary("float", self.expr), self.name)
        raise FrameError(f"astype({dtype!r}) is not supported in frames; astype('float64') is")

    # --- reductions -------------------------------------------------------------------------------

    def _reduce(self, func: str, q: float = 0.5) -> Query:
        agg = Agg(self.name, func, None if func == "size" else self.expr, q)
        return Query(self.frame, (), True, True, (agg,), _scalar(0, self), func)

    def size(self) -> Query:
        return self._reduce("size")

    def quantile(self, q: float | Sequence[float] = 0.5) -> Query:
        if isinstance(q, (list, tuple, np.ndarray)):
            qs = [float(v) for v in q]
            aggs = tuple(Agg(v, "quantile", self.expr, v) for v in qs)

            def finish(table: Table, run: Execution) -> Any:
                return pd.Series(
                    [float(table.values[i][0]) for i in range(len(qs))],
                    index=pd.Index(qs),
                    name=self.name,
                    dtype="float64",
                )

            return Query(self.frame, (), True, True, aggs, finish, "quantile")
        return self._reduce("quantile", q)  # type: ignore[arg-type]

    def agg(self, func: str | Sequence[str]) -> Query:
        """One reduction by name, or several (a Series indexed by their names, as pandas)."""
        if isinstance(func, str):
            return self._reduce(func)
        funcs = list(func)
        aggs = tuple(Agg(name, name, None if name == "size" else self.expr) for name in funcs)

        def finish(table: Table, run: Execution) -> Any:
            values = [typed_values(table, i, a, self.frame)[0] for i, a in enumerate(aggs)]
            return pd.Series(values, index=funcs, name=self.name)

        return Query(self.frame, (), True, True, aggs, finish, "agg")

    def value_counts(self) -> Query:
        """Counts of each distinct value, most frequent first (as pandas: ties in order of first
        appearance; missing values left out)."""
        if not isinstance(self.expr, ex.Column):
            raise FrameError("value_counts counts the values of a column, not of an expression")
        column = self.expr.name
        frame = self.frame

        def finish(table: Table, run: Execution) -> Any:
            return _value_counts(table, frame, column)

        return Query(
            frame,
            (column,),
            True,
            False,
            (Agg("count", "size", None),),
            finish,
            "value_counts",
            order_by_first=True,
        )

    def describe(self) -> Query:
        coded = ex.coded_column(self.expr)
        if coded is not None and coded.kind == "temporal":
            raise FrameError(
                f"describe() of {coded.describe()} (dates or times) is not supported; count(), "
                "min(), max() and nunique() are"
            )
        if self.expr.dtype in ("str", "bool"):  # pandas describes bools as it does strings
            if not isinstance(self.expr, ex.Column):
                raise FrameError("describe() of strings needs a column")
            column = self.expr.name
            frame = self.frame

            def finish_text(table: Table, run: Execution) -> Any:
                counts = _value_counts(table, frame, column)
                top = counts.index[0] if len(counts) else np.nan
                freq = counts.iloc[0] if len(counts) else np.nan
                values = [int(counts.sum()), len(counts), top, freq]
                return pd.Series(
                    values, index=["count", "unique", "top", "freq"], name=self.name, dtype=object
                )

            return Query(
                frame,
                (column,),
                True,
                False,
                (Agg("count", "size", None),),
                finish_text,
                "describe",
                order_by_first=True,
            )
        aggs = tuple(Agg(stat, func, self.expr, q) for stat, func, q in _DESCRIBE)

        def finish(table: Table, run: Execution) -> Any:
            values = [_statistic(table, i, agg) for i, agg in enumerate(aggs)]
            return pd.Series(values, index=DESCRIBE_INDEX, name=self.name, dtype="float64")

        return Query(self.frame, (), True, True, aggs, finish, "describe")

    def __repr__(self) -> str:
        return f"wgt frame column {self.name!r}: {self.expr.key} ({self.expr.dtype})"


class GroupBy:
    """``frame.groupby(keys)``: ``.agg(name=(column, func), ...)``, ``[col].func()``,
    ``.size()``."""

    def __init__(self, frame: Frame, keys: tuple[str, ...], dropna: bool, sort: bool) -> None:
        self.frame = frame
        self.keys = keys
        self.dropna = dropna
        self.sort = sort

    def __getattr__(self, name: str) -> GroupedColumn:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.frame.columns:
            return GroupedColumn(self, name)
        raise NoSuchColumn(
            f"no column {name!r} to aggregate{_guess(name, self.frame.columns)}; columns: "
            f"{', '.join(self.frame.columns)}"
        )

    def __getitem__(self, name: str) -> GroupedColumn:
        if not isinstance(name, str):
            raise FrameError("groupby(...)[...] takes one column name")
        self.frame._expr(name)
        return GroupedColumn(self, name)

    def agg(self, spec: Mapping[str, Any] | None = None, **named: tuple[str, str]) -> Query:
        """Named aggregations ``name=(column, func)`` (func one of sum mean count size min max
        var std nunique median, or ``("quantile", q)`` as ``quantile_0.9``-style tuples), or a
        dict ``{column: func or [funcs]}``."""
        aggs: list[Agg] = []
        multi = False
        if spec is not None:
            if named:
                raise FrameError("give agg() a dict or named aggregations, not both")
            if not isinstance(spec, Mapping):
                raise FrameError("agg() takes a dict {column: func} or name=(column, func)")
            multi = any(isinstance(funcs, (list, tuple)) for funcs in spec.values())
            for column, funcs in spec.items():
                listed = isinstance(funcs, (list, tuple))
                for func in funcs if listed else [funcs]:
                    pair_label = (column, func if isinstance(func, str) else "quantile")
                    aggs.append(self._agg(pair_label if multi else column, column, func))
        for label, pair in named.items():
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise FrameError(
                    f"{label}=... takes a (column, func) pair, e.g. {label}=('delay', 'mean')"
                )
            column, func = pair
            aggs.append(self._agg(label, column, func))
        if not aggs:
            raise FrameError("agg() needs at least one aggregation")
        labels = [a.label for a in aggs]

        def finish(table: Table, run: Execution) -> Any:
            data = {i: typed_values(table, i, a, self.frame) for i, a in enumerate(aggs)}
            out = pd.DataFrame(data, index=group_index(table, self.frame, self.keys))
            out.columns = pd.MultiIndex.from_tuples(labels) if multi else pd.Index(labels)
            return out

        return Query(self.frame, self.keys, self.dropna, self.sort, tuple(aggs), finish, "agg")

    def _agg(self, label: Any, column: str, func: Any) -> Agg:
        q = 0.5
        if isinstance(func, tuple) and len(func) == 2 and func[0] == "quantile":
            func, q = "quantile", func[1]
        if not isinstance(func, str):
            raise FrameError(
                f"aggregations are named by strings ({', '.join(AGGREGATIONS)}); got {func!r}"
            )
        expr = None if func == "size" else self.frame._expr(column)
        if func == "size":
            self.frame._expr(column)
        return Agg(label, func, expr, q)

    def size(self) -> Query:
        agg = Agg(None, "size", None)

        def finish(table: Table, run: Execution) -> Any:
            values = typed_values(table, 0, agg, self.frame)
            return pd.Series(values, index=group_index(table, self.frame, self.keys), dtype="int64")

        return Query(self.frame, self.keys, self.dropna, self.sort, (agg,), finish, "size")

    def __repr__(self) -> str:
        return f"wgt frame groupby({list(self.keys)})"


class GroupedColumn(_Reductions):
    def __init__(self, groupby: GroupBy, column: str) -> None:
        self.groupby = groupby
        self.column = column

    def _reduce(self, func: str, q: float = 0.5) -> Query:
        gb = self.groupby
        agg = gb._agg(self.column, self.column, func)
        if func == "quantile":
            agg = dataclasses.replace(agg, q=q)

        def finish(table: Table, run: Execution) -> Any:
            values = typed_values(table, 0, agg, gb.frame)
            return pd.Series(values, index=group_index(table, gb.frame, gb.keys), name=self.column)

        return Query(gb.frame, gb.keys, gb.dropna, gb.sort, (agg,), finish, func)

    def size(self) -> Query:
        gb = self.groupby
        agg = Agg(self.column, "size", None)

        def finish(table: Table, run: Execution) -> Any:
            values = typed_values(table, 0, agg, gb.frame)
            return pd.Series(values, index=group_index(table, gb.frame, gb.keys), name=self.column)

        return Query(gb.frame, gb.keys, gb.dropna, gb.sort, (agg,), finish, "size")

    def quantile(self, q: float = 0.5) -> Query:
        return self._reduce("quantile", q)

    def agg(self, func: str) -> Query:
        return self._reduce(func)


def _guess(name: str, columns: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a likely typo of a column name, else ""."""
    from wgtlab.views.messages import did_you_mean

    guess = did_you_mean(name, list(columns))
    return f" ({guess})" if guess else ""


# --- the lazy result -----------------------------------------------------------------------------

Finish = Callable[[Table, Execution], Any]


class Query:
    """A lazy frame result. ``compute()`` -> the value; ``run(on=...)`` -> the ``JobResult``
    whose ``value`` it is; ``job()`` -> the ``wgt.Job`` that runs it (verification, limits,
    retries and error policy as for any job)."""

    def __init__(
        self,
        frame: Frame,
        keys: tuple[str, ...],
        dropna: bool,
        sort: bool,
        aggs: tuple[Agg, ...],
        finish: Finish,
        what: str,
        *,
        order_by_first: bool = False,
    ) -> None:
        self.frame = frame
        self.request = Request(
            frame._source, frame._filter, keys, dropna, aggs, first=order_by_first or not sort
        )
        self.sort = sort
        self._finish = finish
        self.what = what
        self.passes: list[JobResult] = []

    @property
    def label(self) -> str:
        keys = f" by {', '.join(self.request.keys)}" if self.request.keys else ""
        return f"frame {self.what}{keys}"

    def job(self, name: str | None = None) -> QueryJob:
        return QueryJob(self, name or self.label)

    def run(
        self,
        on: JobRunner | None = None,
        *,
        verify: str | None = None,
        replicas: int | None = None,
        spot_check: float | None = None,
        limits: Any = None,
        retries: int | None = None,
        on_error: str | None = None,
        cache: bool = True,
    ) -> JobResult:
        """Run on ``on`` (default: the session's cluster) -> the ``JobResult`` of the query:
        its ``value`` is the answer (a DataFrame, Series or scalar, as pandas gives it)."""
        job = self.job()
        if verify is not None or replicas is not None:
            job.verify(verify or "redundancy", replicas=replicas, spot_check=spot_check)
        if limits is not None:
            job.limits(limits)
        if retries is not None:
            job.retries(retries)
        if on_error is not None:
            job.on_error(on_error)
        return job.run(on=on, cache=cache)

    def compute(self, on: JobRunner | None = None, **options: Any) -> Any:
        """The answer (``run(...).value``)."""
        return self.run(on, **options).value

    def execute(self, run_pass: RunPass, settings: JobSettings | None, name: str) -> JobResult:
        """Run every pass through ``run_pass``; the result of the first pass (or, under
        ``on_error("continue")``, of the first pass with failed chunks, so ``ok`` tells), carrying
        the answer. Every pass's result is in ``passes``."""
        execution = Execution(self.request, run_pass, settings, name)
        table = execution.table()
        if not self.sort:
            table = _first_seen_order(table)
        value = self._finish(table, execution)
        self.passes = list(execution.results)
        failed = [r for r in execution.results if not r.ok]
        main = failed[0] if failed else execution.results[0]
        note = f"{len(execution.results)} verified passes: " + "; ".join(
            r.name for r in execution.results
        )
        if len(execution.results) == 1:
            return dataclasses.replace(main, name=name, value=value)
        # the answer rests on every pass: their roots go with it (and into its receipt)
        passes = [
            {
                "name": r.name,
                "kernel": r.kernel_digest,
                "merkle_root": r.merkle_root,
                "tree_size": r.tree_size,
                "ok": r.ok,
            }
            for r in execution.results
        ]
        params = {**dict(main.kernel_params), "passes": passes}
        return dataclasses.replace(main, name=name, value=value, note=note, kernel_params=params)

    def __repr__(self) -> str:
        return f"<lazy {self.label}: .compute() or .run(on=cluster)>"


class QueryJob(Job):
    """The job a frame query runs as. Its settings (verify, limits, retries, on_error,
    subscribers) apply to every pass; ``run`` runs them all and returns the answer's
    ``JobResult``."""

    def __init__(self, query: Query, name: str) -> None:
        super().__init__(name)
        self.query = query

    def plan(self) -> JobPlan:
        raise JobDefinitionError(
            f"{self.name!r} is a frame query, which runs as one or more passes: run it with "
            "job.run(on=cluster) (or %wgt run), not cluster.run(job)"
        )

    def run_passes(self, run_pass: RunPass) -> JobResult:
        """Run the query's passes, each through ``run_pass`` (job -> result), with this job's
        settings -> the answer's ``JobResult``."""
        return self.query.execute(run_pass, self, self.name)

    def run(self, on: JobRunner | None = None, *, cache: bool = True) -> JobResult:
        cluster = on if on is not None else runtime.default_cluster()
        if not isinstance(cluster, JobRunner):
            raise JobDefinitionError(
                f"run(on=...) takes a cluster (wgt.LocalCluster, wgt.DaskCluster), got "
                f"{type(cluster).__name__}"
            )
        return self.run_passes(lambda job: job.run(on=cluster, cache=cache))

    def __repr__(self) -> str:
        return f"QueryJob({self.name!r})"


# --- pandas' shapes ------------------------------------------------------------------------------


def _scalar(position: int, series: Series | None) -> Finish:
    def finish(table: Table, run: Execution) -> Any:
        agg = run.request.aggs[position]
        frame = series.frame if series is not None else None
        return scalar_value(table, position, agg, frame)

    return finish


# pandas' types for a reduction's NaN: over no rows (and for a mean, over no values) a Python
# float; else numpy's
_NAN_OF_NO_ROWS = ("mean", "min", "max", "var", "std", "median")


def scalar_value(table: Table, position: int, agg: Agg, frame: Frame | None) -> Any:
    """An ungrouped aggregation's value, of the type pandas returns for it."""
    value = typed_values(table, position, agg, frame)[0]
    if agg.func in ("nunique", "size"):
        return int(value)
    rows = int(table.values["rows"][0]) if "rows" in table.values else 1
    if agg.func in _NAN_OF_NO_ROWS and value != value:
        counted = table.values.get(("count", position))
        nothing = rows == 0 or (agg.func == "mean" and counted is not None and counted[0] == 0)
        if nothing:
            return float("nan")
    return value


def typed_values(table: Table, position: int, agg: Agg, frame: Frame | None) -> Any:
    """The aggregation's values with pandas' dtype."""
    values = table.values[position]
    func, expr = agg.func, agg.expr
    if func in ("size", "count", "nunique"):
        return np.asarray(values, dtype=np.int64)
    if func in ("mean", "var", "std", "median", "quantile"):
        return np.asarray(values, dtype=np.float64)
    assert expr is not None
    count = table.values.get(("count", position))
    if func == "sum":
        return np.asarray(values, dtype=np.float64 if expr.dtype == "f64" else np.int64)
    # min / max
    present = count if count is not None else None
    if expr.dtype == "f64":
        return np.where(present > 0, values, np.nan) if present is not None else np.asarray(values)
    if expr.dtype == "str":
        assert frame is not None and isinstance(expr, ex.Column)
        words = frame._source.dictionary(expr.name).values
        codes = np.asarray(values, dtype=np.int64)
        if present is not None:
            codes = np.where(present > 0, codes, -1)
        return words.take(codes, allow_fill=True, fill_value=None).array
    ints = np.asarray(values, dtype=np.int64)
    if present is not None and (present == 0).any():
        return np.where(present > 0, ints.astype(np.float64), np.nan)
    return ints.astype(bool) if expr.dtype == "bool" else ints


def group_index(table: Table, frame: Frame, keys: tuple[str, ...]) -> pd.Index:
    levels = []
    for name, codes in zip(keys, table.codes, strict=True):
        words = frame._source.dictionary(name).values
        level = words.take(np.asarray(codes, dtype=np.int64), allow_fill=True, fill_value=None)
        dtype = frame._source.pandas_dtype(name)
        if isinstance(dtype, pd.CategoricalDtype):  # pandas keeps the key's categories
            level = pd.CategoricalIndex(level, dtype=dtype)
        elif level.dtype == object and pd.api.types.infer_dtype(level, skipna=True) == "string":
            level = level.astype("str")  # pandas' group keys of an object column of strings
        levels.append(level.rename(name))
    if len(levels) == 1:
        return levels[0]
    return pd.MultiIndex.from_arrays(levels, names=list(keys))


def _first_seen_order(table: Table) -> Table:
    first = table.values.get("first")
    if first is None:  # pragma: no cover
        return table
    order = np.argsort(first, kind="stable")
    values = {
        k: (np.asarray(v)[order] if isinstance(v, np.ndarray) else v)
        for k, v in table.values.items()
    }
    return Table(table.keys[order], [c[order] for c in table.codes], values)


def _value_counts(table: Table, frame: Frame, column: str) -> pd.Series:
    """Counts in order of first appearance, then most frequent first, ties kept in that order
    (a stable sort, as pandas); a categorical lists every category, unused ones with 0."""
    ordered = _first_seen_order(table)
    words = frame._source.dictionary(column).values
    codes = np.asarray(ordered.codes[0], dtype=np.int64)
    counts = np.asarray(ordered.values[0], dtype=np.int64)
    if isinstance(frame._source.pandas_dtype(column), pd.CategoricalDtype):
        full = np.zeros(len(words), dtype=np.int64)
        full[codes] = counts
        index = pd.CategoricalIndex(words, dtype=frame._source.pandas_dtype(column), name=column)
        result = pd.Series(full, index=index, name="count")
    else:
        result = pd.Series(counts, index=words.take(codes).rename(column), name="count")
    return result.sort_values(ascending=False, kind="stable")


# --- pandas' query syntax ------------------------------------------------------------------------

_COMPARE: dict[type[ast.cmpop], str] = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
}
_ARITH: dict[type[ast.operator], str] = {
    ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.FloorDiv: "floordiv",
    ast.Mod: "mod", ast.Pow: "pow", ast.BitAnd: "and", ast.BitOr: "or",
}  # fmt: skip


def parse_condition(frame: Frame, text: str, names: Mapping[str, Any]) -> Series:
    """A pandas ``query`` string -> a condition on ``frame`` (FrameError for what it cannot
    express)."""
    if not isinstance(text, str) or not text.strip():
        raise FrameError(
            "query() takes a condition as a string, e.g. \"delay > 15 and carrier == 'UA'\""
        )
    try:
        tree = ast.parse(_pandas_syntax(text), mode="eval")
    except (SyntaxError, tokenize.TokenError) as exc:
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc.args[0])
        raise FrameError(f"cannot parse the query {text!r}: {message}") from None
    result = _node(frame, tree.body, names, text)
    if not isinstance(result, Series) or result.expr.dtype != "bool":
        raise FrameError(f"the query {text!r} is not a condition")
    return result


def _pandas_syntax(text: str) -> str:
    """Python source for a pandas ``query`` string, rewritten as pandas rewrites it: backtick
    names become identifiers, ``&`` and ``|`` become ``and`` and ``or`` (with their
    precedence), ``@name`` a local variable; string literals are left alone."""
    source = _backticks(text.strip())
    tokens: list[tuple[int, str]] = []
    local = False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind, value = token.type, token.string
        if kind == tokenize.OP and value == "@":
            local = True
            continue
        if local:
            if kind != tokenize.NAME:
                raise FrameError(f"'@' must be followed by a variable name in {text!r}")
            tokens.append((tokenize.NAME, "__at_" + value))
            local = False
            continue
        if kind == tokenize.OP and value in ("&", "|"):
            tokens.append((tokenize.NAME, "and" if value == "&" else "or"))
            continue
        tokens.append((kind, value))
    return tokenize.untokenize(tokens).strip()


def _backticks(text: str) -> str:
    """```a name``` outside string literals -> an identifier standing for it."""
    out, quote, at = [], "", 0
    while at < len(text):
        char = text[at]
        if quote:
            out.append(char)
            if char == "\\" and at + 1 < len(text):
                out.append(text[at + 1])
                at += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "`":
            end = text.find("`", at + 1)
            if end < 0:
                raise FrameError(f"unbalanced backtick in the query {text!r}")
            out.append(f"__bt_{text[at + 1 : end].encode().hex()}")
            at = end
        else:
            out.append(char)
        at += 1
    return "".join(out)


def _node(frame: Frame, node: ast.AST, names: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.BoolOp):
        values = [_node(frame, v, names, text) for v in node.values]
        op = "and" if isinstance(node.op, ast.And) else "or"
        result = values[0]
        for value in values[1:]:
            result = Series(frame, ex.binary(op, result.expr, value.expr), None)
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _node(frame, node.operand, names, text)
        if isinstance(node.op, (ast.Not, ast.Invert)):
            return ~operand
        if isinstance(node.op, ast.USub):
            return -operand
        return operand
    if isinstance(node, ast.BinOp):
        operator = _ARITH.get(type(node.op))
        if operator is None:
            raise FrameError(f"the operator in {ast.unparse(node)!r} is not supported in query()")
        left, right = _node(frame, node.left, names, text), _node(frame, node.right, names, text)
        return _combine(frame, operator, left, right)
    if isinstance(node, ast.Compare):
        combined: Series | None = None
        left = _node(frame, node.left, names, text)
        for op_node, right_node in zip(node.ops, node.comparators, strict=True):
            right = _node(frame, right_node, names, text)
            as_list = isinstance(right, list) and isinstance(op_node, (ast.Eq, ast.NotEq))
            if isinstance(op_node, (ast.In, ast.NotIn)) or as_list:  # pandas: == [..] is in
                if not isinstance(left, Series):
                    raise FrameError(f"'in' needs a column on its left in {text!r}")
                part = left.isin(right)
                if isinstance(op_node, (ast.NotIn, ast.NotEq)):
                    part = ~part
            else:
                comparison = _COMPARE.get(type(op_node))
                if comparison is None:
                    raise FrameError(f"the comparison in {ast.unparse(node)!r} is not supported")
                part = _combine(frame, comparison, left, right)
            combined = part if combined is None else combined & part
            left = right
        return combined
    if isinstance(node, ast.Name):
        name = node.id
        if name.startswith("__at_"):
            variable = name[len("__at_") :]
            if variable not in names:
                raise FrameError(f"the query {text!r} uses @{variable}, which is not defined")
            return names[variable]
        if name.startswith("__bt_"):
            name = bytes.fromhex(name[len("__bt_") :]).decode()
        if name in frame.columns:
            return frame[name]
        if name in ("True", "False"):  # pragma: no cover
            return name == "True"
        raise FrameError(f"the query {text!r} names {name!r}, which is not a column of the frame")
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_node(frame, e, names, text) for e in node.elts]
    if isinstance(node, (ast.Attribute, ast.Call)):
        return _call(frame, node, names, text)
    raise FrameError(f"{ast.unparse(node)!r} is not supported in query()")


def _call(frame: Frame, node: ast.AST, names: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        target = _node(frame, node.func.value, names, text)
        method = node.func.attr
        if isinstance(target, Series) and method in (
            "isna",
            "notna",
            "isnull",
            "notnull",
            "isin",
            "between",
            "abs",
            "fillna",
        ):
            args = [_node(frame, a, names, text) for a in node.args]
            return getattr(target, method)(*args)
    raise FrameError(f"{ast.unparse(node)!r} is not supported in query()")


def _combine(frame: Frame, op: str, left: Any, right: Any) -> Series:
    if isinstance(left, Series):
        return Series(frame, ex.binary(op, left.expr, left._operand(right)), left.name)
    if isinstance(right, Series):
        return Series(frame, ex.binary(op, ex.literal(left), right.expr), right.name)
    raise FrameError("a query condition must involve a column")
