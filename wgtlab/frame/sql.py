"""``wgt.sql``: one SELECT over one table, in DuckDB's dialect, run as a verified frame query.

sqlglot parses the text once and the statement becomes the parts of a ``Query``: WHERE one typed
condition, GROUP BY the group keys, every aggregate call one ``Agg``. SQL's three-valued logic
is made two-valued where it meets the generated code: each condition is compiled for "is TRUE"
(or, under NOT, "is FALSE"), so a NULL operand never passes a filter, as in SQL.

Everything after aggregation (SELECT expressions over aggregates and group keys, HAVING, ORDER
BY, LIMIT/OFFSET) runs on the trusted side over the small table of groups, in pandas' nullable
dtypes, which carry SQL's NULL propagation and Kleene logic. That stage is also run once on an
empty table of the right dtypes when the query is built, so a type error there is a FrameError
before anything runs, like every unsupported construct.

Semantics follow DuckDB (2.0): NULL group keys form a group; SUM of no values is NULL; COUNT is
int64; ``/`` is float division (x/0 is inf, 0/0 NaN); ``%`` truncates (the sign of the
dividend); ORDER BY puts NULLs last unless NULLS FIRST is written; output columns are named as
DuckDB names them for the common cases (``count_star()``, ``avg(x)``, ``(sum(x) / 2)``),
repeated names suffixed ``_1``, ``_2`` (DuckDB also quotes a column named by one of its
keywords, ``max("distance")``; here only names that are not plain identifiers are quoted: give
such columns an alias). Where DuckDB differs: ``x % 0`` is NULL (DuckDB raises; this is its
``TRY``), and a float NaN is a missing value, as in every frame (DuckDB reads a pandas NaN as
NULL too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from wgtlab.errors import FrameError
from wgtlab.frame import expr as ex
from wgtlab.frame.api import Frame, Query, Series, group_index, typed_values
from wgtlab.frame.api import frame as open_frame
from wgtlab.frame.expr import Expr
from wgtlab.frame.query import Agg, Execution, Table

__all__ = ["sql", "table_name"]

_COMPARISONS: dict[type[exp.Expr], tuple[str, str]] = {
    exp.EQ: ("eq", "="), exp.NEQ: ("ne", "!="), exp.GT: ("gt", ">"), exp.GTE: ("ge", ">="),
    exp.LT: ("lt", "<"), exp.LTE: ("le", "<="),
}  # fmt: skip
_ARITHMETIC: dict[type[exp.Expr], tuple[str, str]] = {
    exp.Add: ("add", "+"), exp.Sub: ("sub", "-"), exp.Mul: ("mul", "*"), exp.Div: ("div", "/"),
    exp.Mod: ("mod", "%"),
}  # fmt: skip
_NEGATED = {"eq": "ne", "ne": "eq", "lt": "ge", "ge": "lt", "le": "gt", "gt": "le"}
# aggregate node -> (frame aggregation, DuckDB's name for it)
_AGGREGATES: dict[type[exp.Expr], tuple[str, str]] = {
    exp.Sum: ("sum", "sum"), exp.Avg: ("mean", "avg"), exp.Min: ("min", "min"),
    exp.Max: ("max", "max"), exp.Stddev: ("std", "stddev"), exp.StddevSamp: ("std", "stddev_samp"),
    exp.Variance: ("var", "variance"), exp.Median: ("median", "median"),
}  # fmt: skip
_NAMED_AGGREGATES = {"mean": "mean"}  # DuckDB spellings sqlglot leaves as plain functions
_SELECT_CLAUSES = {"expressions", "from_", "where", "group", "having", "order", "limit", "offset"}
_CLAUSE_NAMES = {
    "with_": "WITH (common table expressions)", "distinct": "SELECT DISTINCT",
    "joins": "JOIN", "qualify": "QUALIFY", "windows": "WINDOW", "sample": "SAMPLE",
    "pivots": "PIVOT", "laterals": "LATERAL", "into": "SELECT INTO", "exclude": "EXCLUDE",
}  # fmt: skip
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SNIPPET = 60


def sql(text: str, **tables: Any) -> Query:
    """A lazy query from one SELECT over one of ``tables`` (each a pandas DataFrame, a Parquet
    path or URL, or a ``wgt.frame``), in DuckDB's dialect: ``.compute(on=cluster)`` gives a
    DataFrame, ``.run(...)`` its verified ``JobResult``.

    Supported: SELECT expressions and aliases, WHERE, GROUP BY columns, HAVING, ORDER BY,
    LIMIT/OFFSET; COUNT(*) COUNT(x) COUNT(DISTINCT x) SUM AVG MIN MAX STDDEV VARIANCE MEDIAN
    PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY x) / quantile_cont(x, q); arithmetic,
    comparisons, AND OR NOT, IN, BETWEEN, IS [NOT] NULL, CASE, ABS, SQRT. Anything else is a
    FrameError naming it, raised here."""
    if not isinstance(text, str) or not text.strip():
        raise FrameError("wgt.sql takes a SELECT statement as a string")
    statement = _parse(text)
    select = _single_select(statement)
    table, frame, qualifiers = _from_table(select, tables)
    return _Compiler(text, select, table, frame, qualifiers).query()


def table_name(text: str) -> str:
    """The one table a query reads (its FROM), as written: what ``%%wgt sql`` looks up among
    the notebook's variables. FrameError for text ``sql`` would refuse anyway."""
    if not isinstance(text, str) or not text.strip():
        raise FrameError("wgt.sql takes a SELECT statement as a string")
    select = _single_select(_parse(text))
    source = select.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table):
        raise _unsupported("a SELECT without a named table in FROM", select)
    return str(source.this.name)


# --- the statement ---------------------------------------------------------------------------


def _parse(text: str) -> exp.Expr:
    try:
        statement = sqlglot.parse_one(text, read="duckdb")
    except SqlglotError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise FrameError(f"wgt.sql cannot parse the query: {lines[0]}") from None
    return statement


def _snippet(node: exp.Expr) -> str:
    text = " ".join(node.sql(dialect="duckdb").split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _unsupported(construct: str, node: exp.Expr) -> FrameError:
    return FrameError(f"wgt.sql does not support {construct}: {_snippet(node)}")


def _single_select(statement: exp.Expr) -> exp.Select:
    """The statement as one plain SELECT (FrameError naming what else it holds)."""
    if isinstance(statement, exp.SetOperation):
        raise _unsupported(type(statement).__name__.upper(), statement)
    if not isinstance(statement, exp.Select):
        kind = (
            "several statements"
            if statement.key == "block"
            else f"{statement.key.upper()} statements"
        )
        raise _unsupported(f"{kind} (only one SELECT)", statement)
    for clause, value in statement.args.items():
        if value and clause not in _SELECT_CLAUSES:
            if clause == "joins" and all(_is_comma_join(join) for join in value):
                raise _unsupported("more than one table in FROM", statement)
            shown = value[0] if isinstance(value, list) else value
            node = shown if isinstance(shown, exp.Expr) else statement
            raise _unsupported(_CLAUSE_NAMES.get(clause, clause.upper()), node)
    for node in statement.walk():
        if node is statement:
            continue
        if isinstance(node, exp.Window):
            raise _unsupported("window functions (OVER)", node)
        if isinstance(node, (exp.Subquery, exp.Exists, exp.Select)) or (
            isinstance(node, exp.In) and node.args.get("query") is not None
        ):
            raise _unsupported("subqueries", node)
    for item in statement.expressions:
        target = item.this if isinstance(item, exp.Alias) else item
        if isinstance(target, exp.Star) or (
            isinstance(target, exp.Column) and isinstance(target.this, exp.Star)
        ):
            raise _unsupported("SELECT *; name the columns and aggregates", item)
    return statement


def _is_comma_join(join: exp.Expr) -> bool:
    return isinstance(join, exp.Join) and not any(
        join.args.get(part) for part in ("on", "using", "kind", "side", "method")
    )


def _from_table(select: exp.Select, tables: dict[str, Any]) -> tuple[str, Frame, set[str]]:
    """The FROM table's name, its frame, and the names a column may be qualified with."""
    source = select.args.get("from_")
    if source is None:
        raise _unsupported("a SELECT without FROM", select)
    table = source.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise _unsupported("FROM anything but a named table", table)
    if table.args.get("db") or table.args.get("catalog"):
        raise _unsupported("qualified table names", table)
    alias = table.args.get("alias")
    if alias is not None and alias.args.get("columns"):
        raise _unsupported("column aliases on a table", table)
    name = table.name
    key = _lookup(name, list(tables))
    if key is None:
        given = ", ".join(tables) or "none"
        raise FrameError(
            f"wgt.sql: no table {name!r}; the tables given: {given} (pass it as "
            f"wgt.sql(text, {name}=df))"
        )
    value = tables[key]
    frame = value if isinstance(value, Frame) else open_frame(value)
    qualifiers = {name.lower(), key.lower()}
    if table.alias:
        qualifiers.add(table.alias.lower())
    return key, frame, qualifiers


def _lookup(name: str, names: Sequence[str]) -> str | None:
    """``name`` among ``names``: exactly, else case-insensitively when that is unambiguous (as
    DuckDB matches identifiers)."""
    if name in names:
        return name
    folded = [n for n in names if n.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


# --- values after aggregation ------------------------------------------------------------------


@dataclass
class _Groups:
    """The table of groups: each group key column and each aggregate's values, as pandas
    nullable Series (Int64, Float64, boolean, string) over the same ``rows`` groups."""

    rows: int
    keys: dict[str, pd.Series]
    aggs: list[pd.Series]


Values = Callable[[_Groups], pd.Series]

_NULLABLE = {"i64": "Int64", "f64": "Float64", "bool": "boolean", "str": "string"}


def _kind(values: pd.Series) -> str:
    """number, string, bool, or null (an untyped NULL literal, held as objects)."""
    dtype = values.dtype
    if isinstance(dtype, pd.BooleanDtype):
        return "bool"
    if isinstance(dtype, pd.StringDtype):
        return "string"
    if isinstance(dtype, (pd.Int64Dtype, pd.Float64Dtype)):
        return "number"
    return "null"


def _nulls(rows: int, dtype: str) -> pd.Series:
    return pd.Series(pd.array([None] * rows, dtype=dtype))


def _constant(value: Any, rows: int) -> pd.Series:
    if value is None:
        return pd.Series([None] * rows, dtype=object)
    if isinstance(value, bool):
        dtype = "boolean"
    elif isinstance(value, int):
        dtype = "Int64"
    elif isinstance(value, float):
        dtype = "Float64"
    else:
        dtype = "string"
    return pd.Series(pd.array([value] * rows, dtype=dtype))


def _typed_like(values: pd.Series, other: pd.Series) -> pd.Series:
    """``values``, an untyped NULL, as missing values of ``other``'s dtype."""
    if _kind(values) == "null" and _kind(other) != "null":
        return _nulls(len(values), str(other.dtype))
    return values


def _operands(
    left: pd.Series, right: pd.Series, kinds: tuple[str, ...], text: str
) -> tuple[pd.Series, pd.Series]:
    left, right = _typed_like(left, right), _typed_like(right, left)
    if _kind(left) == "null":  # NULL op NULL
        left = right = _nulls(len(left), "Float64" if "number" in kinds else "boolean")
    for side in (left, right):
        if _kind(side) not in kinds:
            raise FrameError(
                f"wgt.sql: {text} needs {' or '.join(kinds)} operands, not {_kind(side)}"
            )
    return left, right


def _numbers(values: pd.Series, text: str) -> pd.Series:
    if _kind(values) == "null":
        return _nulls(len(values), "Float64")
    if _kind(values) != "number":
        raise FrameError(f"wgt.sql: {text} needs a number, not {_kind(values)}")
    return values


def _arithmetic(op: str, left: pd.Series, right: pd.Series, text: str) -> pd.Series:
    a, b = _operands(left, right, ("number",), text)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a.astype("Float64") / b.astype("Float64")
    # mod: truncated (the dividend's sign), NULL for a zero divisor
    integers = isinstance(a.dtype, pd.Int64Dtype) and isinstance(b.dtype, pd.Int64Dtype)
    numpy_type = np.int64 if integers else np.float64
    missing = (a.isna() | b.isna() | (b == 0).fillna(False)).to_numpy(dtype=bool)
    dividend = a.to_numpy(dtype=numpy_type, na_value=0)
    divisor = b.to_numpy(dtype=numpy_type, na_value=1)
    remainder = np.fmod(dividend, np.where(missing, 1, divisor))
    if integers:
        return pd.Series(pd.arrays.IntegerArray(remainder.astype(np.int64), missing))
    return pd.Series(pd.arrays.FloatingArray(remainder.astype(np.float64), missing))


def _compare(op: str, left: pd.Series, right: pd.Series, text: str) -> pd.Series:
    left, right = _typed_like(left, right), _typed_like(right, left)
    kinds = {_kind(left), _kind(right)} - {"null"}
    if not kinds:
        return _nulls(len(left), "boolean")
    if len(kinds) > 1:
        raise FrameError(f"wgt.sql: {text} compares {' with '.join(sorted(kinds))}")
    result = {
        "eq": lambda: left == right, "ne": lambda: left != right, "lt": lambda: left < right,
        "le": lambda: left <= right, "gt": lambda: left > right, "ge": lambda: left >= right,
    }[op]()  # fmt: skip
    return result.astype("boolean")


def _condition(values: pd.Series, text: str) -> pd.Series:
    if _kind(values) == "null":
        return _nulls(len(values), "boolean")
    if _kind(values) != "bool":
        raise FrameError(f"wgt.sql: {text} is not a condition (it is a {_kind(values)})")
    return values


def _holds(values: pd.Series) -> np.ndarray:
    """Where a condition is TRUE (NULL is not)."""
    return values.fillna(False).to_numpy(dtype=bool)


def _common(values: list[pd.Series], text: str) -> str:
    """The dtype CASE results share (FrameError when they mix kinds)."""
    kinds = {_kind(v) for v in values} - {"null"}
    if len(kinds) > 1:
        raise FrameError(f"wgt.sql: {text} mixes {' and '.join(sorted(kinds))} results")
    kind = kinds.pop() if kinds else "null"
    if kind == "number":
        return "Float64" if any(isinstance(v.dtype, pd.Float64Dtype) for v in values) else "Int64"
    return {"string": "string", "bool": "boolean", "null": "object"}[kind]


def _output(values: pd.Series) -> Any:
    """A result column in the dtype DuckDB's ``.df()`` gives: int64/bool without NULLs,
    Int64/boolean with them, float64 (NaN), pandas' str, objects for an untyped NULL or a
    string column without a value (also when empty)."""
    kind = _kind(values)
    missing = bool(values.isna().any())
    if kind == "number":
        if isinstance(values.dtype, pd.Float64Dtype):
            return values.to_numpy(dtype=np.float64, na_value=np.nan)
        return values.array if missing else values.to_numpy(dtype=np.int64)
    if kind == "bool":
        return values.array if missing else values.to_numpy(dtype=bool)
    if kind == "string":
        if bool(values.isna().all()):
            return np.full(len(values), None, dtype=object)
        return values.astype("str").array
    return np.full(len(values), None, dtype=object)


@dataclass(frozen=True)
class _Order:
    values: Values
    descending: bool
    nulls_first: bool


@dataclass
class _Finish:
    """SELECT, HAVING, ORDER BY and LIMIT over the table of groups."""

    names: list[str]
    outputs: list[Values]
    having: Values | None
    order: list[_Order]
    limit: int | None
    offset: int

    def result(self, groups: _Groups) -> pd.DataFrame:
        with np.errstate(all="ignore"):
            columns = [output(groups) for output in self.outputs]
            rows = np.arange(groups.rows)
            if self.having is not None:
                rows = rows[_holds(_condition(self.having(groups), "HAVING"))]
            if self.order:
                ranks = [
                    _rank(o.values(groups), o.descending, o.nulls_first)[rows] for o in self.order
                ]
                rows = rows[np.lexsort(ranks[::-1])]  # stable: ties keep the groups' order
        end = None if self.limit is None else self.offset + self.limit
        rows = rows[self.offset : end]
        data = {
            name: _output(column.iloc[rows].reset_index(drop=True))
            for name, column in zip(self.names, columns, strict=True)
        }
        return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _rank(values: pd.Series, descending: bool, nulls_first: bool) -> np.ndarray:
    """Sort keys for one ORDER BY item: ranks of the values, NULLs first or last."""
    codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=True)
    codes = np.asarray(codes, dtype=np.int64)
    size = len(uniques)
    ranks = size - 1 - codes if descending else codes
    return np.where(codes < 0, -1 if nulls_first else size, ranks)


# --- the compiler ----------------------------------------------------------------------------


class _Compiler:
    """One SELECT -> the Query: the WHERE condition and aggregates for the generated code, the
    rest for ``_Finish``."""

    def __init__(
        self, text: str, select: exp.Select, table: str, frame: Frame, qualifiers: set[str]
    ) -> None:
        self.text = text
        self.select = select
        self.table = table
        self.frame = frame
        self.qualifiers = qualifiers
        self.items: list[tuple[exp.Expr, str | None]] = [
            (item.this, item.alias) if isinstance(item, exp.Alias) else (item, None)
            for item in select.expressions
        ]
        self.keys: tuple[str, ...] = ()
        self.aggs: list[Agg] = []
        self.positions: dict[tuple[str, str | None, float | None], int] = {}
        self.sum_counts: dict[int, int] = {}  # SUM's position -> its COUNT's (no values: NULL)

    def query(self) -> Query:
        select = self.select
        grouped = select.args.get("group") is not None
        if not grouped and not self._has_aggregate():
            raise _unsupported(
                "a SELECT without aggregates or GROUP BY (row-level results)", select
            )
        self.keys = self._group_keys()
        condition = self._where()
        outputs = [self._post(node, index) for index, (node, _) in enumerate(self.items)]
        names = _deduplicated([self._output_name(node, alias) for node, alias in self.items])
        having = select.args.get("having")
        finish = _Finish(
            names,
            outputs,
            self._post(having.this, len(self.items)) if having is not None else None,
            self._order(outputs),
            self._count(select.args.get("limit"), "LIMIT"),
            self._count(select.args.get("offset"), "OFFSET") or 0,
        )
        finish.result(self._prototype())  # type errors after aggregation: now, not after the run
        frame = self.frame
        if condition is not None:
            frame = frame[Series(frame, condition, None)]
        if self.keys:
            frame.groupby(list(self.keys), dropna=False)  # checks the keys can group
        aggs = tuple(self.aggs)
        return Query(
            frame, self.keys, False, True, aggs, self._finisher(finish, frame, aggs), "sql"
        )

    def _has_aggregate(self) -> bool:
        nodes: list[exp.Expr] = [node for node, _ in self.items]
        for clause in ("having", "order"):
            if self.select.args.get(clause) is not None:
                nodes.append(self.select.args[clause])
        return any(_is_aggregate(n) for node in nodes for n in node.walk())

    # --- columns --------------------------------------------------------------------------

    def _find_column(self, node: exp.Column) -> str | None:
        """The table column ``node`` names, or None if it names none (it may be an alias)."""
        if node.args.get("db") or node.args.get("catalog"):
            raise _unsupported("qualified column names", node)
        if node.table and node.table.lower() not in self.qualifiers:
            raise FrameError(
                f"wgt.sql: {node.sql(dialect='duckdb')} names the table {node.table!r}; the "
                f"query reads {self.table!r}"
            )
        return _lookup(node.name, self.frame.columns)

    def _column(self, node: exp.Column) -> str:
        found = self._find_column(node)
        if found is None:
            raise self._no_column(node)
        return found

    def _no_column(self, node: exp.Column) -> FrameError:
        columns = self.frame.columns
        more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
        return FrameError(
            f"wgt.sql: table {self.table!r} has no column {node.name!r}; its columns: "
            f"{', '.join(columns[:20])}{more}"
        )

    def _alias(self, name: str, visible: int) -> tuple[exp.Expr, int] | None:
        """The SELECT item aliased ``name`` among the first ``visible``, and its index."""
        for index, (node, alias) in enumerate(self.items[:visible]):
            if alias is not None and alias.lower() == name.lower():
                return node, index
        return None

    # --- GROUP BY and WHERE -------------------------------------------------------------

    def _group_keys(self) -> tuple[str, ...]:
        group = self.select.args.get("group")
        if group is None:
            return ()
        if group.args.get("all"):
            raise _unsupported("GROUP BY ALL; name the group columns", group)
        for part in ("grouping_sets", "cube", "rollup", "totals"):
            if group.args.get(part):
                raise _unsupported("GROUPING SETS, CUBE or ROLLUP", group)
        keys: list[str] = []
        for item in group.expressions:
            node = item.unnest()
            if isinstance(node, exp.Literal) and not node.is_string:
                node = self._position(node, "GROUP BY").unnest()
            elif (
                isinstance(node, exp.Column) and not node.table and self._find_column(node) is None
            ):
                aliased = self._alias(node.name, len(self.items))
                node = aliased[0].unnest() if aliased is not None else node
            if not isinstance(node, exp.Column):
                raise FrameError(
                    f"wgt.sql groups by columns of the table; GROUP BY {_snippet(item)} is not "
                    "supported"
                )
            key = self._column(node)
            if key not in keys:
                keys.append(key)
        return tuple(keys)

    def _position(self, node: exp.Literal, clause: str) -> exp.Expr:
        index = _literal(node)
        if not isinstance(index, int) or not 1 <= index <= len(self.items):
            raise FrameError(
                f"wgt.sql: {clause} {node.sql()} is not a position in the SELECT list "
                f"(1..{len(self.items)})"
            )
        return self.items[index - 1][0]

    def _where(self) -> Expr | None:
        where = self.select.args.get("where")
        if where is None:
            return None
        return self._truth(where.this, True)

    # --- per row: the generated code ---------------------------------------------------

    def _truth(self, node: exp.Expr, want: bool) -> Expr:
        """A per-row condition: the rows where ``node`` is TRUE (``want``) or FALSE; NULL is
        neither."""
        if isinstance(node, exp.Paren):
            return self._truth(node.this, want)
        if isinstance(node, exp.Not):
            return self._truth(node.this, not want)
        if isinstance(node, (exp.And, exp.Or)):
            both = isinstance(node, exp.And) == want  # TRUE AND TRUE; FALSE OR FALSE
            left, right = self._truth(node.this, want), self._truth(node.expression, want)
            return ex.binary("and" if both else "or", left, right)
        if type(node) in _COMPARISONS:
            return self._comparison(_COMPARISONS[type(node)][0], node.this, node.expression, want)
        if isinstance(node, exp.Between):
            low = exp.GTE(this=node.this.copy(), expression=node.args["low"].copy())
            high = exp.LTE(this=node.this.copy(), expression=node.args["high"].copy())
            return self._truth(exp.And(this=low, expression=high), want)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise _unsupported("IS other than IS [NOT] NULL", node)
            return ex.unary("isna" if want else "notna", self._value(node.this, "WHERE"))
        if isinstance(node, exp.In):
            return self._membership(node, want)
        if isinstance(node, exp.Null):
            return ex.literal(False)
        if isinstance(node, exp.Boolean):
            return ex.literal(bool(node.this) == want)
        value = self._value(node, "WHERE")
        if value.dtype != "bool":
            raise FrameError(
                f"wgt.sql: {_snippet(node)} is not a condition (it is {value.dtype}); compare it, "
                "e.g. x > 0"
            )
        return value if want else ex.unary("not", value)

    def _comparison(self, op: str, left: exp.Expr, right: exp.Expr, want: bool) -> Expr:
        if isinstance(left.unnest(), exp.Null) or isinstance(right.unnest(), exp.Null):
            return ex.literal(False)  # x = NULL is NULL: never TRUE, never FALSE
        a, b = self._value(left, "WHERE"), self._value(right, "WHERE")
        op = op if want else _NEGATED[op]
        condition: Expr = ex.binary(op, a, b)
        if op == "ne":  # a missing value is unequal to everything in the generated code
            for side in (a, b):
                if _may_miss(side):
                    condition = ex.binary("and", condition, ex.unary("notna", side))
        return condition

    def _membership(self, node: exp.In, want: bool) -> Expr:
        operand = self._value(node.this, "WHERE")
        values = [_constant_value(item) for item in node.expressions]
        present = [v for v in values if v is not None]
        found = ex.is_in(operand, present)  # a missing operand is in no list
        if want:
            return found
        if len(present) < len(values):  # x NOT IN (..., NULL) is never TRUE
            return ex.literal(False)
        outside: Expr = ex.unary("not", found)
        if _may_miss(operand):
            outside = ex.binary("and", outside, ex.unary("notna", operand))
        return outside

    def _value(self, node: exp.Expr, where: str) -> Expr:
        """A per-row value (``where`` names the clause, for messages)."""
        if isinstance(node, exp.Paren):
            return self._value(node.this, where)
        if isinstance(node, exp.Column):
            return self.frame._expr(self._column(node))
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
            return ex.literal(_constant_value(node))
        if isinstance(node, exp.Neg):
            if isinstance(node.this, exp.Literal) and not node.this.is_string:
                return ex.literal(_constant_value(node))
            return ex.unary("neg", self._value(node.this, where))
        if type(node) in _ARITHMETIC:
            op = _ARITHMETIC[type(node)][0]
            left, right = self._value(node.this, where), self._value(node.expression, where)
            return _row_mod(left, right) if op == "mod" else ex.binary(op, left, right)
        if isinstance(node, (exp.Abs, exp.Sqrt)):
            return ex.unary(
                "abs" if isinstance(node, exp.Abs) else "sqrt", self._value(node.this, where)
            )
        if isinstance(node, exp.Case):
            whens = [
                (self._truth(_arm_condition(node, arm), True), self._value(arm.args["true"], where))
                for arm in node.args["ifs"]
            ]
            default = node.args.get("default")
            return ex.case(whens, self._value(default, where) if default is not None else None)
        if _is_aggregate(node):
            raise FrameError(
                f"wgt.sql: {where} cannot hold the aggregate {_snippet(node)} (aggregates go in "
                "SELECT, HAVING and ORDER BY, and do not nest)"
            )
        if _is_condition(node):
            raise _unsupported(
                f"a condition as a value in {where} (use CASE WHEN ... THEN 1 ELSE 0 END)", node
            )
        raise _unsupported(_construct(node), node)

    # --- aggregates -------------------------------------------------------------------------

    def _aggregate(self, node: exp.Expr) -> int:
        """The position of the Agg that computes ``node`` (one per distinct aggregate)."""
        func, argument, q = _aggregate_parts(node)
        expr = (
            None if argument is None else self._value(argument, f"the argument of {_snippet(node)}")
        )
        position = self._register(_duckdb_name(node, self.text), func, expr, q)
        if func == "sum" and argument is not None and expr is not None:
            self.sum_counts[position] = self._register(
                f"count({_duckdb_name(argument, self.text)})", "count", expr, 0.5
            )
        return position

    def _register(self, label: str, func: str, expr: Expr | None, q: float) -> int:
        key = (func, expr.key if expr is not None else None, q if func == "quantile" else None)
        if key not in self.positions:
            self.aggs.append(Agg(label, func, expr, q))
            self.positions[key] = len(self.aggs) - 1
        return self.positions[key]

    # --- after aggregation ------------------------------------------------------------------

    def _post(self, node: exp.Expr, visible: int) -> Values:
        """A value per group; aliases of the first ``visible`` SELECT items may be named."""
        text = _snippet(node)
        if isinstance(node, exp.Paren):
            return self._post(node.this, visible)
        if _is_aggregate(node):
            position = self._aggregate(node)
            return lambda g: g.aggs[position]
        if isinstance(node, exp.Column):
            return self._post_column(node, visible)
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
            value = _constant_value(node)
            return lambda g: _constant(value, g.rows)
        if isinstance(node, exp.Neg):
            inner = self._post(node.this, visible)
            return lambda g: -_numbers(inner(g), text)
        if type(node) in _ARITHMETIC:
            op = _ARITHMETIC[type(node)][0]
            left, right = self._post(node.this, visible), self._post(node.expression, visible)
            return lambda g: _arithmetic(op, left(g), right(g), text)
        if type(node) in _COMPARISONS:
            op = _COMPARISONS[type(node)][0]
            left, right = self._post(node.this, visible), self._post(node.expression, visible)
            return lambda g: _compare(op, left(g), right(g), text)
        if isinstance(node, (exp.And, exp.Or)):
            both = isinstance(node, exp.And)
            left, right = self._post(node.this, visible), self._post(node.expression, visible)

            def logic(g: _Groups) -> pd.Series:
                a, b = _condition(left(g), text), _condition(right(g), text)
                return a & b if both else a | b

            return logic
        if isinstance(node, exp.Not):
            inner = self._post(node.this, visible)
            return lambda g: ~_condition(inner(g), text)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise _unsupported("IS other than IS [NOT] NULL", node)
            inner = self._post(node.this, visible)
            return lambda g: inner(g).isna().astype("boolean")
        if isinstance(node, exp.Between):
            low = exp.GTE(this=node.this.copy(), expression=node.args["low"].copy())
            high = exp.LTE(this=node.this.copy(), expression=node.args["high"].copy())
            return self._post(exp.And(this=low, expression=high), visible)
        if isinstance(node, exp.In):
            tests = [
                exp.EQ(this=node.this.copy(), expression=item.copy()) for item in node.expressions
            ]
            if not tests:
                raise _unsupported("an empty IN list", node)
            combined: exp.Expr = tests[0]
            for test in tests[1:]:
                combined = exp.Or(this=combined, expression=test)
            return self._post(combined, visible)  # SQL's IN: the OR of equalities
        if isinstance(node, exp.Case):
            return self._post_case(node, visible, text)
        if isinstance(node, (exp.Abs, exp.Sqrt)):
            inner = self._post(node.this, visible)
            if isinstance(node, exp.Abs):
                return lambda g: _numbers(inner(g), text).abs()
            return lambda g: np.sqrt(_numbers(inner(g), text).astype("Float64"))
        raise _unsupported(_construct(node), node)

    def _post_column(self, node: exp.Column, visible: int) -> Values:
        column = self._find_column(node)
        if column is not None:
            if column in self.keys:
                return lambda g: g.keys[column]
            raise FrameError(
                f"wgt.sql: column {column!r} must appear in GROUP BY or be used in an aggregate "
                "function"
            )
        aliased = self._alias(node.name, visible) if not node.table else None
        if aliased is None:
            raise self._no_column(node)
        return self._post(*aliased)

    def _post_case(self, node: exp.Case, visible: int, text: str) -> Values:
        arms = [
            (self._post(_arm_condition(node, arm), visible), self._post(arm.args["true"], visible))
            for arm in node.args["ifs"]
        ]
        default_node = node.args.get("default")
        default = self._post(default_node, visible) if default_node is not None else None

        def choose(g: _Groups) -> pd.Series:
            conditions = [_holds(_condition(test(g), text)) for test, _ in arms]
            values = [value(g) for _, value in arms]
            values.append(default(g) if default is not None else _constant(None, g.rows))
            dtype = _common(values, text)
            if dtype == "object":
                return _constant(None, g.rows)
            typed = [
                _nulls(g.rows, dtype) if _kind(v) == "null" else v.astype(dtype) for v in values
            ]
            result = typed[-1]
            for holds, value in zip(reversed(conditions), reversed(typed[:-1]), strict=True):
                result = value.where(holds, result)
            return result

        return choose

    def _order(self, outputs: list[Values]) -> list[_Order]:
        order = self.select.args.get("order")
        if order is None:
            return []
        keys: list[_Order] = []
        for item in order.expressions:
            node = item.this.unnest()
            values: Values | None = None
            if isinstance(node, exp.Literal) and not node.is_string:
                self._position(node, "ORDER BY")
                values = outputs[int(_literal(node)) - 1]
            elif isinstance(node, exp.Column) and not node.table:
                aliased = [
                    outputs[i] for i, (_, alias) in enumerate(self.items)
                    if alias is not None and alias.lower() == node.name.lower()
                ]  # fmt: skip
                values = aliased[0] if aliased else None  # an output's alias before a column
            if values is None:
                values = self._post(item.this, len(self.items))
            keys.append(
                _Order(values, bool(item.args.get("desc")), bool(item.args.get("nulls_first")))
            )
        return keys

    def _count(self, clause: exp.Expr | None, name: str) -> int | None:
        """LIMIT's or OFFSET's row count."""
        if clause is None:
            return None
        if clause.args.get("limit_options") is not None or clause.args.get("offset") is not None:
            raise _unsupported(f"this form of {name}", clause)
        value = _constant_value(clause.expression) if clause.expression is not None else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FrameError(
                f"wgt.sql: {name} takes a non-negative integer, got {_snippet(clause)}"
            )
        return value

    def _output_name(self, node: exp.Expr, alias: str | None) -> str:
        if alias is not None:
            return alias
        target = node.unnest()
        if isinstance(target, exp.Column):
            column = self._find_column(target)
            if column is not None:
                return column  # DuckDB names a bare column by the table's spelling
        return _duckdb_name(node, self.text)

    # --- running --------------------------------------------------------------------------

    def _prototype(self) -> _Groups:
        """No groups, in the dtypes a run gives."""
        keys = {k: _nulls(0, _NULLABLE[self.frame._expr(k).dtype]) for k in self.keys}
        return _Groups(0, keys, [_nulls(0, _agg_dtype(agg)) for agg in self.aggs])

    def _finisher(
        self, finish: _Finish, frame: Frame, aggs: tuple[Agg, ...]
    ) -> Callable[[Table, Execution], pd.DataFrame]:
        keys = self.keys
        sum_counts = dict(self.sum_counts)
        key_dtypes = {k: _NULLABLE[frame._expr(k).dtype] for k in keys}

        def done(table: Table, execution: Execution) -> pd.DataFrame:
            rows = len(table.keys)
            key_values: dict[str, pd.Series] = {}
            if keys:
                index = group_index(table, frame, keys)
                for level, key in enumerate(keys):
                    values = np.asarray(index.get_level_values(level), dtype=object)
                    key_values[key] = pd.Series(pd.array(values, dtype=key_dtypes[key]))
            agg_values = [
                _agg_values(table, position, agg, frame, sum_counts.get(position))
                for position, agg in enumerate(aggs)
            ]
            return finish.result(_Groups(rows, key_values, agg_values))

        return done


# --- aggregates' values ----------------------------------------------------------------------


def _agg_dtype(agg: Agg) -> str:
    if agg.func in ("size", "count", "nunique"):
        return "Int64"
    if agg.func in ("sum", "min", "max"):
        assert agg.expr is not None
        dtype = agg.expr.dtype
        if agg.func == "sum":
            return "Float64" if dtype == "f64" else "Int64"
        return _NULLABLE[dtype]
    return "Float64"


def _agg_values(
    table: Table, position: int, agg: Agg, frame: Frame, count: int | None
) -> pd.Series:
    """Agg ``position``'s values per group in SQL's terms: NULL where no value was aggregated
    (``count``: the position of SUM's COUNT)."""
    dtype = _agg_dtype(agg)
    if agg.func in ("min", "max") and dtype in ("Int64", "boolean"):
        values = np.asarray(table.values[position], dtype=np.int64)  # exact, not via float
        missing = np.asarray(table.values[("count", position)]) == 0
        if dtype == "boolean":
            return pd.Series(pd.arrays.BooleanArray(values != 0, missing))
        return pd.Series(pd.arrays.IntegerArray(values, missing))
    values = typed_values(table, position, agg, frame)
    if count is not None:
        missing = np.asarray(table.values[count]) == 0
        if dtype == "Int64":
            return pd.Series(pd.arrays.IntegerArray(np.asarray(values, dtype=np.int64), missing))
        values = np.where(missing, np.nan, np.asarray(values, dtype=np.float64))
    if dtype == "string":
        return pd.Series(pd.array(np.asarray(values, dtype=object), dtype="string"))
    return pd.Series(
        pd.array(
            np.asarray(values, dtype=np.float64 if dtype == "Float64" else np.int64), dtype=dtype
        )
    )


# --- sqlglot nodes ---------------------------------------------------------------------------


def _is_aggregate(node: exp.Expr) -> bool:
    return isinstance(node, (exp.AggFunc, exp.WithinGroup, exp.Filter)) or (
        isinstance(node, exp.Anonymous) and node.name.lower() in _NAMED_AGGREGATES
    )


def _is_condition(node: exp.Expr) -> bool:
    return type(node) in _COMPARISONS or isinstance(
        node, (exp.And, exp.Or, exp.Not, exp.Is, exp.In, exp.Between)
    )


def _aggregate_parts(node: exp.Expr) -> tuple[str, exp.Expr | None, float]:
    """An aggregate call -> (frame aggregation, its argument, q)."""
    if isinstance(node, exp.Filter):
        raise _unsupported("FILTER (WHERE ...) on aggregates; use CASE inside the aggregate", node)
    if isinstance(node, exp.Count):
        argument = node.this
        if argument is None or isinstance(argument, exp.Star):
            return "size", None, 0.5
        if isinstance(argument, exp.Distinct):
            if len(argument.expressions) != 1:
                raise _unsupported("COUNT(DISTINCT ...) of several columns", node)
            if not isinstance(argument.expressions[0].unnest(), exp.Column):
                raise _unsupported("COUNT(DISTINCT ...) of an expression; name a column", node)
            return "nunique", argument.expressions[0], 0.5
        return "count", argument, 0.5
    if type(node) in _AGGREGATES:
        if isinstance(node.this, exp.Distinct):
            raise _unsupported(f"DISTINCT in {_AGGREGATES[type(node)][1].upper()}", node)
        if node.args.get("expressions"):
            raise _unsupported(f"{_AGGREGATES[type(node)][1].upper()} of several arguments", node)
        return _AGGREGATES[type(node)][0], node.this, 0.5
    if isinstance(node, exp.Anonymous) and node.name.lower() in _NAMED_AGGREGATES:
        if len(node.expressions) != 1:
            raise _unsupported(f"{node.name.upper()} of several arguments", node)
        return _NAMED_AGGREGATES[node.name.lower()], node.expressions[0], 0.5
    if isinstance(node, exp.PercentileCont) and node.expression is not None:  # quantile_cont(x, q)
        return "quantile", node.this, _quantile(node.expression, node)
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        order = node.expression
        items = order.expressions if isinstance(order, exp.Order) else []
        if node.this.expression is not None or len(items) != 1:
            raise _unsupported("this form of PERCENTILE_CONT", node)
        q = _quantile(node.this.this, node)
        return "quantile", items[0].this, 1.0 - q if items[0].args.get("desc") else q
    raise _unsupported(_construct(node), node)


def _quantile(node: exp.Expr, call: exp.Expr) -> float:
    q = _constant_value(node) if isinstance(node.unnest(), (exp.Literal, exp.Neg)) else None
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
        raise FrameError(
            f"wgt.sql: the quantile in {_snippet(call)} must be a number between 0 and 1"
        )
    return float(q)


def _literal(node: exp.Literal) -> int | float | str:
    if node.is_string:
        return str(node.this)
    text = str(node.this)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise _unsupported("this literal", node) from None


def _constant_value(node: exp.Expr) -> int | float | str | bool | None:
    """A literal's value: numbers (also negated), strings, TRUE/FALSE, NULL (None)."""
    node = node.unnest()
    if isinstance(node, exp.Literal):
        return _literal(node)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg) and isinstance(node.this.unnest(), exp.Literal):
        value = _literal(node.this.unnest())
        if not isinstance(value, str):
            return -value
    raise FrameError(f"wgt.sql: {_snippet(node)} must be a literal value here")


def _arm_condition(case: exp.Case, arm: exp.Expr) -> exp.Expr:
    """A CASE arm's condition (``CASE x WHEN v`` is ``x = v``)."""
    operand = case.this
    if operand is None:
        return arm.this
    return exp.EQ(this=operand.copy(), expression=arm.this.copy())


def _row_mod(left: Expr, right: Expr) -> Expr:
    """SQL's ``%`` per row: truncated (the dividend's sign), NULL for a zero divisor."""
    magnitude = ex.binary("mod", ex.unary("abs", left), ex.unary("abs", right))
    negative = ex.binary("lt", left, ex.literal(0))
    result: Expr = ex.case([(negative, ex.unary("neg", magnitude))], magnitude)
    if isinstance(right, ex.Literal) and isinstance(right.value, (int, float)) and right.value != 0:
        return result
    return ex.case([(ex.binary("eq", right, ex.literal(0)), ex.literal(None))], result)


def _may_miss(value: Expr) -> bool:
    """Whether ``value`` can be missing (NaN floats, -1 string codes); literals are known."""
    return value.dtype in ("f64", "str") and not isinstance(value, ex.Literal)


def _construct(node: exp.Expr) -> str:
    """How an error names an unsupported node."""
    special = {
        exp.Cast: "CAST", exp.TryCast: "TRY_CAST", exp.IntDiv: "integer division (//)",
        exp.Like: "LIKE", exp.ILike: "ILIKE", exp.DPipe: "string concatenation (||)",
        exp.NullSafeEQ: "IS NOT DISTINCT FROM", exp.NullSafeNEQ: "IS DISTINCT FROM",
    }  # fmt: skip
    for kind, name in special.items():
        if isinstance(node, kind):
            return name
    if isinstance(node, exp.Anonymous):
        return f"the function {node.name.upper()}"
    if isinstance(node, exp.AggFunc):
        return f"the aggregate {node.sql_name()}"
    if isinstance(node, exp.Func):
        return f"the function {node.sql_name()}"
    return node.key.upper()


# --- DuckDB's column names -------------------------------------------------------------------


def _duckdb_name(node: exp.Expr, text: str) -> str:
    """The name DuckDB gives an unaliased SELECT item (its expression's text), for the common
    cases; sqlglot's text otherwise. ``text`` is the query, for functions' written names."""

    def name(part: exp.Expr) -> str:
        return _duckdb_name(part, text)

    if isinstance(node, exp.Paren):
        return name(node.this)
    if isinstance(node, exp.Column):
        identifier = node.name if _IDENTIFIER.fullmatch(node.name) else f'"{node.name}"'
        return f"{node.table}.{identifier}" if node.table else identifier
    if isinstance(node, exp.Literal):
        return "'" + str(node.this).replace("'", "''") + "'" if node.is_string else str(node.this)
    if isinstance(node, exp.Boolean):
        return "true" if node.this else "false"
    if isinstance(node, exp.Null):
        return "NULL"
    if isinstance(node, exp.Neg):
        if isinstance(node.this, exp.Literal) and not node.this.is_string:
            return f"-{node.this.this}"  # DuckDB folds a negative number
        return f"(-({name(node.this)}))"
    symbol = (_ARITHMETIC.get(type(node)) or _COMPARISONS.get(type(node)) or (None, None))[1]
    if symbol is not None:
        return f"({name(node.this)} {symbol} {name(node.expression)})"
    if isinstance(node, (exp.And, exp.Or)):
        word = " AND " if isinstance(node, exp.And) else " OR "
        parts = [name(part) for part in node.flatten()]
        return f"({word.join(parts)})"
    if isinstance(node, exp.Not):
        inner = node.this  # x IS NOT NULL; NOT (x IS NULL) keeps its NOT
        if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
            return f"({name(inner.this)} IS NOT NULL)"
        return f"(NOT {name(node.this)})"
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return f"({name(node.this)} IS NULL)"
    if isinstance(node, exp.In):
        return f"({name(node.this)} IN ({', '.join(name(e) for e in node.expressions)}))"
    if isinstance(node, exp.Between):
        return f"({name(node.this)} BETWEEN {name(node.args['low'])} AND {name(node.args['high'])})"
    if isinstance(node, exp.Case):
        arms = "".join(
            f" WHEN ({name(_arm_condition(node, arm))}) THEN ({name(arm.args['true'])})"
            for arm in node.args["ifs"]
        )
        default = node.args.get("default")
        return f"CASE {arms} ELSE {name(default) if default is not None else 'NULL'} END"
    if isinstance(node, exp.Count):
        argument = node.this
        if argument is None or isinstance(argument, exp.Star):
            return "count_star()"
        if isinstance(argument, exp.Distinct):
            return f"count(DISTINCT {', '.join(name(e) for e in argument.expressions)})"
        return f"count({name(argument)})"
    if type(node) in _AGGREGATES:
        return f"{_spelling(node, text, _AGGREGATES[type(node)][1])}({name(node.this)})"
    if isinstance(node, exp.Anonymous):
        return f"{node.name.lower()}({', '.join(name(e) for e in node.expressions)})"
    if isinstance(node, (exp.Abs, exp.Sqrt)):
        return f"{_spelling(node, text, node.sql_name().lower())}({name(node.this)})"
    if isinstance(node, exp.PercentileCont) and node.expression is not None:
        return f"quantile_cont({name(node.this)}, {name(node.expression)})"
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        order = node.expression
        item = order.expressions[0] if isinstance(order, exp.Order) and order.expressions else None
        if item is not None:
            direction = " DESC" if item.args.get("desc") else ""
            return f"quantile_cont({name(node.this.this)} ORDER BY {name(item.this)}{direction})"
    return node.sql(dialect="duckdb")


def _spelling(node: exp.Expr, text: str, default: str) -> str:
    """A function's name as the query spells it, lower-cased (VAR_SAMP and VARIANCE are one
    node to sqlglot, two names to DuckDB)."""
    start, end = node.meta.get("start"), node.meta.get("end")
    if isinstance(start, int) and isinstance(end, int):
        written = text[start : end + 1]
        if _IDENTIFIER.fullmatch(written):
            return written.lower()
    return default


def _deduplicated(names: list[str]) -> list[str]:
    """Repeated names suffixed ``_1``, ``_2``, ... (as DuckDB's ``.df()``)."""
    seen: set[str] = set()
    out: list[str] = []
    for original in names:
        candidate, suffix = original, 0
        while candidate in seen:
            suffix += 1
            candidate = f"{original}_{suffix}"
        seen.add(candidate)
        out.append(candidate)
    return out
