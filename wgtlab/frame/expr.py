"""Typed expression trees over a frame's columns, checked when they are built.

Every node knows its dtype, one of ``f64`` (float64; NaN is missing, as in pandas), ``i64``
(int64, never missing), ``bool`` (never missing) and ``str`` (string or categorical values,
carried as dictionary codes; -1 is missing). Those four are exactly pandas' missing-value rules
for numpy dtypes, so no validity bitmap is needed: a float's NaN and a code of -1 are the
missing values. Anything that cannot be computed (a string in arithmetic, an unknown operator,
comparing a string with a number) is a ``FrameError`` here, before any chunk runs.

``key`` is a canonical text of the node; plans hash it, so the same query always generates the
same module.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Literal as TypingLiteral

import numpy as np

from wgtlab.errors import FrameError

__all__ = [
    "ARITHMETIC",
    "COMPARISONS",
    "Binary",
    "Case",
    "Column",
    "Dtype",
    "Expr",
    "IsIn",
    "Literal",
    "Unary",
    "binary",
    "case",
    "coded_column",
    "columns_of",
    "holds",
    "is_in",
    "literal",
    "unary",
]

Dtype = TypingLiteral["f64", "i64", "bool", "str"]

ARITHMETIC = ("add", "sub", "mul", "div", "floordiv", "mod", "pow")
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
LOGIC = ("and", "or")
SYMBOLS = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%", "pow": "**",
    "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "and": "&", "or": "|",
}  # fmt: skip
NUMERIC: tuple[Dtype, ...] = ("f64", "i64", "bool")
MAX_POWER = 64


@dataclass(frozen=True)
class Expr:
    """A node; subclasses below. ``key`` is its canonical text."""

    dtype: Dtype

    @property
    def key(self) -> str:
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        return ()

    def describe(self) -> str:
        """How an error message names this expression."""
        return self.key


@dataclass(frozen=True)
class Column(Expr):
    name: str
    # strings only: "text" (ordered as text), "categories" (a pandas categorical: equality
    # only) or "ordered" (an ordered categorical: ordered as its categories)
    kind: str = "text"

    @property
    def key(self) -> str:
        kind = "" if self.kind == "text" else f",{self.kind}"
        return f"col({self.name!r}{kind})"

    def describe(self) -> str:
        return f"column {self.name!r}"


@dataclass(frozen=True)
class Literal(Expr):
    value: float | int | bool | str | None

    @property
    def key(self) -> str:
        value = self.value
        if isinstance(value, float):
            return f"lit({value.hex()})"  # exact, and NaN/inf spelled the same way every time
        return f"lit({value!r})"


@dataclass(frozen=True)
class Binary(Expr):
    op: str
    left: Expr
    right: Expr

    @property
    def key(self) -> str:
        return f"{self.op}({self.left.key},{self.right.key})"

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Unary(Expr):
    """``neg``, ``not``, ``abs``, ``isna``, ``notna``, ``sqrt``, ``float`` (to float64), and
    ``fillna`` (``fill`` is the value)."""

    op: str
    operand: Expr
    fill: Literal | None = None

    @property
    def key(self) -> str:
        fill = f",{self.fill.key}" if self.fill is not None else ""
        return f"{self.op}({self.operand.key}{fill})"

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class IsIn(Expr):
    operand: Expr
    values: tuple[Literal, ...]
    missing: bool  # the list held None/NaN: missing values match, as in pandas

    @property
    def key(self) -> str:
        return f"isin({self.operand.key},[{','.join(v.key for v in self.values)}],{self.missing})"

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Case(Expr):
    """SQL's ``CASE WHEN c1 THEN v1 ... ELSE d END``; without ELSE the default is missing."""

    whens: tuple[tuple[Expr, Expr], ...]
    default: Expr

    @property
    def key(self) -> str:
        arms = ",".join(f"{c.key}->{v.key}" for c, v in self.whens)
        return f"case({arms};{self.default.key})"

    def children(self) -> tuple[Expr, ...]:
        return (*[e for pair in self.whens for e in pair], self.default)


# --- building nodes, with pandas' typing rules ---------------------------------------------------


def literal(value: object) -> Literal:
    """A Python value as a literal node (FrameError for anything else)."""
    if isinstance(value, bool):
        return Literal("bool", value)
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise FrameError(f"the integer {value} does not fit in int64")
        return Literal("i64", value)
    if isinstance(value, float):
        return Literal("f64", value)
    if isinstance(value, str):
        return Literal("str", value)
    if isinstance(value, (datetime.date, datetime.timedelta, np.datetime64, np.timedelta64)):
        return Literal("str", str(value))  # compared with a date column, as pandas parses it
    if value is None:
        return Literal("f64", math.nan)
    if isinstance(value, np.generic):
        return literal(value.item())
    raise FrameError(
        f"cannot use a {type(value).__name__} value ({value!r}) in a frame expression; use a "
        "number, a bool or a string"
    )


def binary(op: str, left: Expr, right: Expr) -> Binary:
    """``left op right`` typed as pandas types it; FrameError if it cannot be computed."""
    symbol = SYMBOLS.get(op, op)
    if op in LOGIC:
        for side in (left, right):
            if side.dtype != "bool":
                raise FrameError(
                    f"{symbol!r} combines conditions (bool); {side.describe()} is {side.dtype}. "
                    "Compare it first, e.g. (f.x > 0) & (f.y < 5)"
                )
        return Binary("bool", op, left, right)
    if op in COMPARISONS:
        return _comparison(op, left, right)
    if op not in ARITHMETIC:
        raise FrameError(f"the operator {symbol!r} is not supported in frame expressions")
    for side in (left, right):
        if side.dtype == "str":
            raise FrameError(
                f"{side.describe()} holds {holds(side)} and cannot take part in arithmetic "
                f"({symbol!r}); only numeric and bool columns can"
            )
    if left.dtype == "bool" and right.dtype == "bool" and op != "div":
        # numpy's bool arithmetic: + is "or", * is "and"; the rest it refuses
        if op in _BOOL_ARITHMETIC:
            return Binary("bool", _BOOL_ARITHMETIC[op], left, right)
        raise FrameError(
            f"{symbol!r} of two bool operands is not supported (numpy refuses it); convert one "
            "first, e.g. f.flag.astype('float64')"
        )
    if op == "pow":
        return _power(left, right)
    if op == "div":
        return Binary("f64", op, left, right)
    # integers // and % integers stay int64, as pandas keeps them; a row that divides by 0
    # (where pandas would turn the whole column into float64) fails the query: see codegen
    both_int = left.dtype in ("i64", "bool") and right.dtype in ("i64", "bool")
    return Binary("i64" if both_int else "f64", op, left, right)


_BOOL_ARITHMETIC = {"add": "or", "mul": "and"}


def _comparison(op: str, left: Expr, right: Expr) -> Binary:
    strings = [side.dtype == "str" for side in (left, right)]
    if any(strings):
        if not all(strings):
            numeric = right if strings[0] else left
            text = left if strings[0] else right
            raise FrameError(
                f"cannot compare {text.describe()} ({holds(text)}) with {numeric.describe()} "
                f"({numeric.dtype})"
            )
        if isinstance(left, Literal) and coded_column(right) is not None:  # 'UA' == f.carrier
            return _comparison(_MIRROR[op], right, left)
        column = coded_column(left)
        if column is None or not isinstance(right, Literal):
            raise FrameError(
                f"strings are compared column against a literal (f.carrier == 'UA'); comparing "
                f"{left.describe()} with {right.describe()} is not supported"
            )
        if op not in ("eq", "ne") and column.kind == "categories":
            raise FrameError(
                f"{column.describe()} is an unordered categorical: it compares with == and != "
                "(and isin) only, as in pandas; make it ordered to use < and >"
            )
    return Binary("bool", op, left, right)


def holds(e: Expr) -> str:
    """What a coded expression holds, for messages: strings, or dates and times."""
    column = coded_column(e)
    return "dates or times" if column is not None and column.kind == "temporal" else "strings"


def coded_column(e: Expr) -> Column | None:
    """The string column whose dictionary codes ``e`` carries (a string column, or one with
    its missing values filled), or None."""
    if isinstance(e, Column) and e.dtype == "str":
        return e
    if isinstance(e, Unary) and e.op == "fillna" and e.dtype == "str":
        return coded_column(e.operand)
    return None


_MIRROR = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def _power(base: Expr, exponent: Expr) -> Binary:
    value = exponent.value if isinstance(exponent, Literal) else None
    if isinstance(value, bool) or not (
        (isinstance(value, int) and 0 <= value <= MAX_POWER) or value == 0.5
    ):
        raise FrameError(
            f"'**' takes a literal exponent: an integer 0..{MAX_POWER}, or 0.5 (square root); "
            f"got {exponent.describe()}"
        )
    dtype: Dtype = "i64" if base.dtype in ("i64", "bool") and isinstance(value, int) else "f64"
    return Binary(dtype, "pow", base, exponent)


def unary(op: str, operand: Expr, fill: Expr | None = None) -> Expr:
    if op in ("isna", "notna"):
        return Unary("bool", op, operand)
    if op == "not":
        if operand.dtype != "bool":
            raise FrameError(
                f"'~' negates a condition (bool); {operand.describe()} is {operand.dtype}"
            )
        return Unary("bool", op, operand)
    if op == "fillna":
        if not isinstance(fill, Literal):
            raise FrameError("fillna takes one literal value, e.g. f.x.fillna(0)")
        if operand.dtype == "str" and fill.dtype != "str":
            raise FrameError(f"{operand.describe()} holds strings: fill it with a string")
        if operand.dtype != "str" and fill.dtype == "str":
            raise FrameError(f"{operand.describe()} is numeric: fill it with a number")
        if operand.dtype in ("i64", "bool"):
            return Unary(operand.dtype, op, operand, fill)  # nothing is missing: no-op
        return Unary(operand.dtype, op, operand, fill)
    if op not in ("neg", "abs", "sqrt", "float"):
        raise FrameError(f"the operation {op!r} is not supported in frame expressions")
    if operand.dtype == "str":
        raise FrameError(f"{operand.describe()} holds {holds(operand)} and cannot take {op!r}")
    if op in ("sqrt", "float"):
        return Unary("f64", op, operand)
    if operand.dtype == "bool":  # numpy: -b is "not b", abs(b) is b
        return Unary("bool", "not", operand) if op == "neg" else operand
    return Unary(operand.dtype, op, operand)


def is_in(operand: Expr, values: object) -> IsIn:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise FrameError(
            f"isin takes a list of values, e.g. f.carrier.isin(['UA', 'AA']); got {values!r}"
        )
    items = [literal(v) for v in values]
    missing = any(_is_missing(v) for v in items)
    present = tuple(v for v in items if not _is_missing(v))
    for value in present:
        if (value.dtype == "str") != (operand.dtype == "str"):
            raise FrameError(
                f"isin: cannot compare {operand.describe()} ({operand.dtype}) with {value.value!r}"
            )
    return IsIn("bool", operand, present, missing)


def _is_missing(value: Literal) -> bool:
    return isinstance(value.value, float) and math.isnan(value.value)


def case(whens: list[tuple[Expr, Expr]], default: Expr | None) -> Case:
    """CASE WHEN: conditions are bool; the values are numeric (the result is float64 when any
    is float or missing, else int64)."""
    if not whens:
        raise FrameError("CASE needs at least one WHEN")
    for condition, _ in whens:
        if condition.dtype != "bool":
            raise FrameError(
                f"CASE WHEN needs a condition; {condition.describe()} is {condition.dtype}"
            )
    values = [v for _, v in whens] + ([default] if default is not None else [])
    for value in values:
        if value.dtype == "str":
            raise FrameError(
                "CASE results must be numbers or bools here; strings are not supported"
            )
    all_int = default is not None and all(v.dtype in ("i64", "bool") for v in values)
    dtype: Dtype = "i64" if all_int else "f64"
    return Case(dtype, tuple(whens), default if default is not None else literal(None))


def columns_of(*exprs: Expr) -> list[str]:
    """The names of the columns ``exprs`` read, each once, in first-use order."""
    seen: dict[str, None] = {}
    stack = list(reversed(exprs))
    while stack:
        node = stack.pop()
        if isinstance(node, Column):
            seen.setdefault(node.name)
        stack.extend(reversed(node.children()))
    return list(seen)
