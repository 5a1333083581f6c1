"""A ``PassPlan`` -> the text of one WebAssembly module (ABI v1), generated from its expressions.

The module reads the columnar payload (``columns.encode_chunk``), keeps one record of
accumulators per group in an open-addressing hash table (groups in first-seen order, so the
output is the same bytes on every worker), and returns the records. Strings are dictionary codes;
a string literal is resolved against the frame's sorted dictionary here, on the trusted side, so
``carrier == 'UA'`` becomes one integer comparison.

Payload: ``u64 rows, u64 first_row, u64 params_len, params, column arrays`` (each padded to 8
bytes). Output: ``u64 groups, u64 flags`` then one record per group: ``i64 key`` and 8-byte
fields.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

from wgtlab.errors import FrameError
from wgtlab.frame.expr import Binary, Case, Column, Expr, IsIn, Literal, Unary, coded_column
from wgtlab.frame.plan import CODE_ENCODINGS, FIELDS, WIDTH, PassPlan

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HEADER_BYTES", "Dictionaries", "generate"]

HEADER_BYTES = 24
OUTPUT_HEADER = 16  # u64 records, u64 flags (1: an integer was divided by 0)
HEAP = 1024
Dictionaries = Callable[[str], "pd.Index"]  # column -> its dictionary (codes index it)

_WASM = {"f64": "f64", "i64": "i64", "bool": "i32", "str": "i32"}
_TEXT_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge,
}  # fmt: skip
_VALUE_TYPE = {"f64": "f64", "i64": "i64", "bool": "i64", "str": "i32"}
_F64_CMP = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}
_I64_CMP = {"eq": "eq", "ne": "ne", "lt": "lt_s", "le": "le_s", "gt": "gt_s", "ge": "ge_s"}


def _f64(value: float) -> str:
    return f"(f64.const {float(value).hex() if math.isfinite(value) else _special(value)})"


def _special(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


class _Emitter:
    """Walks expressions, emitting WAT; each distinct sub-expression used by an accumulator is
    computed once per row into a local."""

    def __init__(self, plan: PassPlan, dictionaries: Dictionaries) -> None:
        self.plan = plan
        self.dictionaries = dictionaries
        # (name, "code" for any code width, else the encoding) -> (local, encoding)
        self.column_local: dict[tuple[str, str], tuple[str, str]] = {
            (c.name, "code" if c.encoding in CODE_ENCODINGS else c.encoding): (f"$c{i}", c.encoding)
            for i, c in enumerate(plan.columns)
        }
        self.locals: list[str] = []
        self._temps = 0

    def temp(self, wasm_type: str) -> str:
        self._temps += 1
        name = f"$t{self._temps}"
        self.locals.append(f"(local {name} {wasm_type})")
        return name

    # --- loads ---------------------------------------------------------------------------------

    def load(self, name: str, kind: str) -> str:
        """Row ``$i`` of column ``name``: ``kind`` is "code" (any width: an i32 code, -1 for
        missing) or the encoding itself."""
        base, encoding = self.column_local[(name, kind)]
        shift = {8: 3, 4: 2, 2: 1, 1: 0}[WIDTH[encoding]]
        address = (
            f"(i32.add (local.get {base}) (i32.shl (local.get $i) (i32.const {shift})))"
            if shift
            else f"(i32.add (local.get {base}) (local.get $i))"
        )
        if encoding in ("code8", "code16"):  # stored as code + 1, 0 for missing
            op = "i32.load8_u" if encoding == "code8" else "i32.load16_u"
            return f"(i32.sub ({op} {address}) (i32.const 1))"
        op = {"f64": "f64.load", "i64": "i64.load", "code": "i32.load", "u8": "i32.load8_u"}[
            encoding
        ]
        return f"({op} {address})"

    # --- expressions ---------------------------------------------------------------------------

    def emit(self, e: Expr) -> str:
        """WAT leaving ``e``'s value on the stack, as f64 / i64 / i32 (bool, code)."""
        if isinstance(e, Column):
            encoding = {"f64": "f64", "i64": "i64", "bool": "u8", "str": "code"}[e.dtype]
            return self.load(e.name, encoding)
        if isinstance(e, Literal):
            return self.literal(e)
        if isinstance(e, Binary):
            return self.binary(e)
        if isinstance(e, Unary):
            return self.unary(e)
        if isinstance(e, IsIn):
            return self.is_in(e)
        if isinstance(e, Case):
            return self.case(e)
        raise FrameError(f"cannot generate code for {e.key}")  # pragma: no cover

    def literal(self, e: Literal) -> str:
        if e.dtype == "str":
            raise FrameError(f"a string literal ({e.value!r}) can only be compared with a column")
        value = e.value
        assert isinstance(value, (int, float)) or value is None
        if e.dtype == "f64":
            return _f64(float("nan") if value is None else float(value))
        if e.dtype == "i64":
            return f"(i64.const {int(value or 0)})"
        return f"(i32.const {int(bool(e.value))})"

    def as_type(self, e: Expr, target: str) -> str:
        """``e`` converted to ``target`` ("f64" | "i64")."""
        code = self.emit(e)
        if e.dtype == target:
            return code
        if target == "f64":
            if e.dtype == "i64":
                return f"(f64.convert_i64_s {code})"
            return f"(f64.convert_i32_u {code})"
        if target == "i64" and e.dtype == "bool":
            return f"(i64.extend_i32_u {code})"
        raise FrameError(f"cannot use {e.describe()} as {target}")  # pragma: no cover

    def binary(self, e: Binary) -> str:
        op, left, right = e.op, e.left, e.right
        if op in ("and", "or"):
            return f"(i32.{op} {self.emit(left)} {self.emit(right)})"
        if op in _F64_CMP:
            return self.compare(op, left, right)
        if op == "pow":
            return self.power(e)
        t = e.dtype
        a, b = self.as_type(left, t), self.as_type(right, t)
        if op in ("add", "sub", "mul"):
            return f"({t}.{op} {a} {b})"
        if op == "div":
            return f"(f64.div {a} {b})"
        if op == "floordiv":
            return f"(call $floordiv_f64 {a} {b})" if t == "f64" else f"(call $floordiv {a} {b})"
        return f"(call $mod_{t} {a} {b})"  # mod

    def compare(self, op: str, left: Expr, right: Expr) -> str:
        column = coded_column(left)
        if column is not None:
            assert isinstance(right, Literal)
            text = str(right.value)
            return self.string_test(
                left,
                lambda code: self.compare_codes(op, code, column, text),
                lambda fill: _TEXT_COMPARE[op](fill, text),
            )
        if left.dtype == "bool" and right.dtype == "bool":
            return f"(i32.{_I64_CMP[op].replace('_s', '_u')} {self.emit(left)} {self.emit(right)})"
        t = "f64" if "f64" in (left.dtype, right.dtype) else "i64"
        ops = _F64_CMP if t == "f64" else _I64_CMP
        return f"({t}.{ops[op]} {self.as_type(left, t)} {self.as_type(right, t)})"

    def code_of(self, column: Column, text: str) -> int | None:
        """``text``'s code in ``column``'s dictionary, or None when the column never holds it."""
        at = int(self.dictionaries(column.name).get_indexer([text])[0])
        return at if at >= 0 else None

    def string_test(
        self, value: Expr, on_code: Callable[[str], str], on_fill: Callable[[str], bool]
    ) -> str:
        """A test of a string expression through its codes (``on_code`` of the code's WAT).
        A missing value filled with text the column never holds has no code: those rows take
        ``on_fill(text)``, decided here."""
        fill = self.absent_fill(value)
        if fill is None:
            return on_code(self.emit(value))
        assert isinstance(value, Unary)
        tmp = self.temp("i32")
        return (
            f"(block (result i32) (local.set {tmp} {self.emit(value.operand)}) "
            f"(select (i32.const {int(on_fill(fill))}) {on_code(f'(local.get {tmp})')} "
            f"(i32.lt_s (local.get {tmp}) (i32.const 0))))"
        )

    def absent_fill(self, value: Expr) -> str | None:
        """The text of ``value``'s ``fillna`` when its column never holds it, else None."""
        if not (isinstance(value, Unary) and value.op == "fillna" and value.fill is not None):
            return None
        column = coded_column(value)
        text = str(value.fill.value)
        if column is None or self.code_of(column, text) is not None:
            return None
        return text

    def compare_codes(self, op: str, code: str, column: Column, text: str) -> str:
        found = self.code_of(column, text)
        if op in ("eq", "ne"):
            wanted = found if found is not None else -2  # -2: no code, so nothing is equal
            return f"(i32.{op} {code} (i32.const {wanted}))"
        # codes are positions in the dictionary (sorted text, or the categories in order);
        # missing values (-1) compare False
        if column.kind == "ordered":
            if found is None:
                raise FrameError(
                    f"{column.describe()} is an ordered categorical without the category "
                    f"{text!r}; compare it with one of its categories"
                )
            at, after = found, found + 1
        else:
            words = self.dictionaries(column.name)
            at = int(words.searchsorted(text, side="left"))
            after = int(words.searchsorted(text, side="right"))
        low, high = {"lt": (0, at), "le": (0, after), "gt": (after, None), "ge": (at, None)}[op]
        if high is None:
            return f"(i32.ge_s {code} (i32.const {low}))"
        return f"(i32.lt_u {code} (i32.const {high}))"  # unsigned: -1 is never below

    def power(self, e: Binary) -> str:
        assert isinstance(e.right, Literal) and isinstance(e.right.value, (int, float))
        exponent = e.right.value
        if exponent == 0.5:
            return f"(f64.sqrt {self.as_type(e.left, 'f64')})"
        t = e.dtype
        if t == "f64" and int(exponent) > 2:  # numpy calls libm's pow: correctly rounded here
            return f"(call $powi {self.as_type(e.left, 'f64')} (i64.const {int(exponent)}))"
        base = self.temp(t)
        result = f"({t}.const 1)"
        factors = []
        n = int(exponent)
        square = f"(local.get {base})"
        # x**n by squaring, unrolled (n <= 64): the same operations on every worker
        power_locals: list[str] = []
        while n:
            if n & 1:
                factors.append(square)
            n >>= 1
            if n:
                nxt = self.temp(t)
                power_locals.append(f"(local.set {nxt} ({t}.mul {square} {square}))")
                square = f"(local.get {nxt})"
        for factor in factors:
            result = f"({t}.mul {result} {factor})" if result != f"({t}.const 1)" else factor
        setup = f"(local.set {base} {self.as_type(e.left, t)}) " + " ".join(power_locals)
        return f"(block (result {t}) {setup} {result})"

    def unary(self, e: Unary) -> str:
        op, x = e.op, e.operand
        if op == "isna" or op == "notna":
            if x.dtype == "f64":
                test = f"(f64.ne {self.emit(x)} {self.emit(x)})" if isinstance(x, Column) else None
                if test is None:
                    tmp = self.temp("f64")
                    test = f"(f64.ne (local.tee {tmp} {self.emit(x)}) (local.get {tmp}))"
            elif x.dtype == "str":
                test = f"(i32.lt_s {self.emit(x)} (i32.const 0))"
            else:
                test = "(i32.const 0)"
            return test if op == "isna" else f"(i32.eqz {test})"
        if op == "not":
            return f"(i32.eqz {self.emit(x)})"
        if op == "float":
            return self.as_type(x, "f64")
        if op == "sqrt":
            return f"(f64.sqrt {self.as_type(x, 'f64')})"
        if op == "neg":
            if e.dtype == "f64":
                return f"(f64.neg {self.emit(x)})"
            return f"(i64.sub (i64.const 0) {self.as_type(x, 'i64')})"
        if op == "abs":
            if e.dtype == "f64":
                return f"(f64.abs {self.emit(x)})"
            tmp = self.temp("i64")
            return (
                f"(select (i64.sub (i64.const 0) (local.tee {tmp} {self.as_type(x, 'i64')})) "
                f"(local.get {tmp}) (i64.lt_s (local.get {tmp}) (i64.const 0)))"
            )
        if op == "fillna":
            assert e.fill is not None
            if x.dtype in ("i64", "bool"):
                return self.emit(x)
            if x.dtype == "str":
                column = coded_column(x)
                assert column is not None
                text = str(e.fill.value)
                fill_code = self.code_of(column, text)
                if fill_code is None:
                    raise FrameError(
                        f"fillna({text!r}): {x.describe()} never holds {text!r}; fill a string "
                        "column with one of its values"
                    )
                tmp = self.temp("i32")
                return (
                    f"(select (i32.const {fill_code}) (local.tee {tmp} "
                    f"{self.emit(x)}) (i32.lt_s (local.get {tmp}) (i32.const 0)))"
                )
            tmp = self.temp("f64")
            number = e.fill.value
            assert isinstance(number, (int, float))
            fill = _f64(float(number))
            return (
                f"(select {fill} (local.tee {tmp} {self.emit(x)}) "
                f"(f64.ne (local.get {tmp}) (local.get {tmp})))"
            )
        raise FrameError(f"cannot generate code for {e.key}")  # pragma: no cover

    def is_in(self, e: IsIn) -> str:
        x = e.operand
        tests: list[str] = []
        if x.dtype == "str":
            column = coded_column(x)
            assert column is not None
            texts = [str(v.value) for v in e.values]
            return self.string_test(
                x,
                lambda code: self.codes_in(code, column, texts, e.missing),
                lambda fill: fill in texts,
            )
        else:
            t = "f64" if x.dtype == "f64" or any(v.dtype == "f64" for v in e.values) else "i64"
            tmp = self.temp(t)
            first = f"(local.tee {tmp} {self.as_type(x, t)})"
            get = f"(local.get {tmp})"
            values = [v for v in e.values]
            for position, value in enumerate(values):
                number = value.value
                assert isinstance(number, (int, float))
                constant = _f64(float(number)) if t == "f64" else f"(i64.const {int(number)})"
                tests.append(f"({t}.eq {first if position == 0 else get} {constant})")
            if e.missing and t == "f64":
                lhs = first if not values else get
                tests.append(f"(f64.ne {lhs} {get})")
            if not tests:
                return f"(block (result i32) (drop {first}) (i32.const 0))"
        code = tests[0]
        for test in tests[1:]:
            code = f"(i32.or {code} {test})"
        return code

    def codes_in(self, code: str, column: Column, texts: list[str], missing: bool) -> str:
        """``code`` is the code of one of ``texts`` (or missing, with ``missing``)."""
        found = (self.code_of(column, text) for text in texts)
        codes = sorted({wanted for wanted in found if wanted is not None})
        if not codes and not missing:
            return f"(block (result i32) (drop {code}) (i32.const 0))"
        tmp = self.temp("i32")
        tests = [f"(i32.eq (local.get {tmp}) (i32.const {wanted}))" for wanted in codes]
        if missing:
            tests.append(f"(i32.lt_s (local.get {tmp}) (i32.const 0))")
        test = tests[0]
        for more in tests[1:]:
            test = f"(i32.or {test} {more})"
        return f"(block (result i32) (local.set {tmp} {code}) {test})"

    def case(self, e: Case) -> str:
        t = _WASM[e.dtype]
        code = self.as_type(e.default, t) if t != "i32" else self.emit(e.default)
        for condition, value in reversed(e.whens):
            v = self.as_type(value, t)
            code = f"(if (result {t}) {self.emit(condition)} (then {v}) (else {code}))"
        return code


# --- the module ----------------------------------------------------------------------------------

_HELPERS = """
  (global $divided_by_zero (mut i64) (i64.const 0))
  (func $floordiv (param $a i64) (param $b i64) (result i64) (local $q i64)
    ;; an integer divided by 0: flagged in the output (pandas would make the column float64)
    (if (i64.eqz (local.get $b)) (then (global.set $divided_by_zero (i64.const 1)) (return (i64.const 0))))
    (if (i64.eq (local.get $b) (i64.const -1)) (then (return (i64.sub (i64.const 0) (local.get $a)))))
    (local.set $q (i64.div_s (local.get $a) (local.get $b)))
    (if (i32.and (i64.ne (i64.rem_s (local.get $a) (local.get $b)) (i64.const 0))
                 (i32.ne (i64.lt_s (local.get $a) (i64.const 0)) (i64.lt_s (local.get $b) (i64.const 0))))
      (then (local.set $q (i64.sub (local.get $q) (i64.const 1)))))
    (local.get $q))
  (func $mod_i64 (param $a i64) (param $b i64) (result i64) (local $r i64)
    (if (i64.eqz (local.get $b)) (then (global.set $divided_by_zero (i64.const 1)) (return (i64.const 0))))
    (if (i64.eq (local.get $b) (i64.const -1)) (then (return (i64.const 0))))
    (local.set $r (i64.rem_s (local.get $a) (local.get $b)))
    (if (i32.and (i64.ne (local.get $r) (i64.const 0))
                 (i32.ne (i64.lt_s (local.get $r) (i64.const 0)) (i64.lt_s (local.get $b) (i64.const 0))))
      (then (local.set $r (i64.add (local.get $r) (local.get $b)))))
    (local.get $r))
  (func $exponent (param $v f64) (result i64) (local $bits i64) (local $e i64)
    ;; floor(log2(v)) of a finite v > 0, subnormals included
    (local.set $bits (i64.reinterpret_f64 (local.get $v)))
    (local.set $e (i64.and (i64.shr_u (local.get $bits) (i64.const 52)) (i64.const 0x7ff)))
    (if (result i64) (i64.eqz (local.get $e))
      (then (i64.sub (i64.sub (i64.const 63) (i64.clz (local.get $bits))) (i64.const 1074)))
      (else (i64.sub (local.get $e) (i64.const 1023)))))
  (func $scale (param $v f64) (param $k i64) (result f64)
    ;; v * 2**k for 0 <= k, exactly while the result is finite (powers of two in steps)
    (block $done (loop $more
      (br_if $done (i64.le_s (local.get $k) (i64.const 1000)))
      (local.set $v (f64.mul (local.get $v) (f64.reinterpret_i64 (i64.shl (i64.const 2023) (i64.const 52)))))
      (local.set $k (i64.sub (local.get $k) (i64.const 1000)))
      (br $more)))
    (f64.mul (local.get $v) (f64.reinterpret_i64 (i64.shl (i64.add (local.get $k) (i64.const 1023)) (i64.const 52)))))
  (func $fmod (param $x f64) (param $y f64) (result f64) (local $r f64) (local $b f64) (local $t f64) (local $k i64)
    ;; C's fmod, exactly: long division by shifted copies of |y| (each step exact by Sterbenz)
    (if (i32.or (i32.or (f64.eq (local.get $y) (f64.const 0)) (f64.ne (local.get $x) (local.get $x)))
                (i32.or (f64.ne (local.get $y) (local.get $y)) (f64.eq (f64.abs (local.get $x)) (f64.const inf))))
      (then (return (f64.const nan))))
    (local.set $r (f64.abs (local.get $x)))
    (local.set $b (f64.abs (local.get $y)))
    (if (f64.lt (local.get $r) (local.get $b)) (then (return (local.get $x))))
    (block $done (loop $step
      (br_if $done (f64.lt (local.get $r) (local.get $b)))
      (local.set $k (i64.sub (call $exponent (local.get $r)) (call $exponent (local.get $b))))
      (local.set $t (call $scale (local.get $b) (local.get $k)))
      (if (f64.gt (local.get $t) (local.get $r))
        (then (local.set $t (call $scale (local.get $b) (i64.sub (local.get $k) (i64.const 1))))))
      (local.set $r (f64.sub (local.get $r) (local.get $t)))
      (br $step)))
    (f64.copysign (local.get $r) (local.get $x)))
  (func $mod_f64 (param $a f64) (param $b f64) (result f64) (local $m f64)
    ;; numpy's remainder (npy_divmod's modulus): the sign of the divisor
    (local.set $m (call $fmod (local.get $a) (local.get $b)))
    (if (f64.eq (local.get $b) (f64.const 0)) (then (return (local.get $m))))
    (if (f64.ne (local.get $m) (f64.const 0))
      (then (if (i32.ne (f64.lt (local.get $b) (f64.const 0)) (f64.lt (local.get $m) (f64.const 0)))
        (then (local.set $m (f64.add (local.get $m) (local.get $b))))))
      (else (local.set $m (f64.copysign (f64.const 0) (local.get $b)))))
    (local.get $m))
  (func $floordiv_f64 (param $a f64) (param $b f64) (result f64) (local $m f64) (local $d f64) (local $f f64)
    ;; numpy's floor_divide (npy_divmod's quotient)
    (if (f64.eq (local.get $b) (f64.const 0)) (then (return (f64.div (local.get $a) (local.get $b)))))
    (local.set $m (call $fmod (local.get $a) (local.get $b)))
    (local.set $d (f64.div (f64.sub (local.get $a) (local.get $m)) (local.get $b)))
    (if (f64.ne (local.get $m) (f64.const 0))
      (then (if (i32.ne (f64.lt (local.get $b) (f64.const 0)) (f64.lt (local.get $m) (f64.const 0)))
        (then (local.set $d (f64.sub (local.get $d) (f64.const 1)))))))
    (if (f64.ne (local.get $d) (f64.const 0))
      (then
        (local.set $f (f64.floor (local.get $d)))
        (if (f64.gt (f64.sub (local.get $d) (local.get $f)) (f64.const 0.5))
          (then (local.set $f (f64.add (local.get $f) (f64.const 1))))))
      (else (local.set $f (f64.copysign (f64.const 0) (f64.div (local.get $a) (local.get $b))))))
    (local.get $f))
  (global $dd_hi (mut f64) (f64.const 0))
  (global $dd_lo (mut f64) (f64.const 0))
  (func $dd_mul (param $xh f64) (param $xl f64) (param $yh f64) (param $yl f64)
    ;; (xh + xl) * (yh + yl) in double-double -> $dd_hi + $dd_lo: Dekker's exact product of
    ;; the high parts (Veltkamp splits), plus the cross terms
    (local $p f64) (local $c f64) (local $ah f64) (local $al f64) (local $bh f64) (local $bl f64)
    (local $e f64)
    (local.set $p (f64.mul (local.get $xh) (local.get $yh)))
    (local.set $c (f64.mul (f64.const 134217729) (local.get $xh)))
    (local.set $ah (f64.sub (local.get $c) (f64.sub (local.get $c) (local.get $xh))))
    (local.set $al (f64.sub (local.get $xh) (local.get $ah)))
    (local.set $c (f64.mul (f64.const 134217729) (local.get $yh)))
    (local.set $bh (f64.sub (local.get $c) (f64.sub (local.get $c) (local.get $yh))))
    (local.set $bl (f64.sub (local.get $yh) (local.get $bh)))
    (local.set $e (f64.add (f64.add (f64.add (f64.sub (f64.mul (local.get $ah) (local.get $bh)) (local.get $p))
                                              (f64.mul (local.get $ah) (local.get $bl)))
                                     (f64.mul (local.get $al) (local.get $bh)))
                            (f64.mul (local.get $al) (local.get $bl))))
    (local.set $e (f64.add (local.get $e) (f64.add (f64.mul (local.get $xh) (local.get $yl)) (f64.mul (local.get $xl) (local.get $yh)))))
    (global.set $dd_hi (f64.add (local.get $p) (local.get $e)))
    (global.set $dd_lo (f64.sub (local.get $e) (f64.sub (global.get $dd_hi) (local.get $p)))))
  (func $powi (param $x f64) (param $n i64) (result f64)
    ;; x**n (n >= 3) correctly rounded, as C's pow: by squaring in double-double (~100 bits),
    ;; rounded once. Extremes (where the low parts would leave the normal range) take the
    ;; plain product.
    (local $plain f64) (local $b f64) (local $m i64) (local $rh f64) (local $rl f64)
    (local $bh f64) (local $bl f64)
    (local.set $plain (f64.const 1)) (local.set $b (local.get $x)) (local.set $m (local.get $n))
    (block $plain_done (loop $plain_step
      (if (i64.ne (i64.and (local.get $m) (i64.const 1)) (i64.const 0))
        (then (local.set $plain (f64.mul (local.get $plain) (local.get $b)))))
      (local.set $m (i64.shr_u (local.get $m) (i64.const 1)))
      (br_if $plain_done (i64.eqz (local.get $m)))
      (local.set $b (f64.mul (local.get $b) (local.get $b)))
      (br $plain_step)))
    (if (i32.eqz (i32.and (f64.lt (f64.abs (local.get $plain)) (f64.const 0x1p+800))
                          (f64.gt (f64.abs (local.get $plain)) (f64.const 0x1p-800))))
      (then (return (local.get $plain))))
    (local.set $rh (f64.const 1)) (local.set $rl (f64.const 0))
    (local.set $bh (local.get $x)) (local.set $bl (f64.const 0)) (local.set $m (local.get $n))
    (block $done (loop $step
      (if (i64.ne (i64.and (local.get $m) (i64.const 1)) (i64.const 0))
        (then
          (call $dd_mul (local.get $rh) (local.get $rl) (local.get $bh) (local.get $bl))
          (local.set $rh (global.get $dd_hi)) (local.set $rl (global.get $dd_lo))))
      (local.set $m (i64.shr_u (local.get $m) (i64.const 1)))
      (br_if $done (i64.eqz (local.get $m)))
      (call $dd_mul (local.get $bh) (local.get $bl) (local.get $bh) (local.get $bl))
      (local.set $bh (global.get $dd_hi)) (local.set $bl (global.get $dd_lo))
      (br $step)))
    (f64.add (local.get $rh) (local.get $rl)))
  (func $ensure (param $end i32)
    (local $have i32)
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have)) (i32.const 16)) (i32.const 16))) (i32.const -1))
        (then unreachable)))))
  (func (export "wgt_alloc") (param $size i32) (result i32)
    (call $ensure (i32.add (i32.const %(heap)d) (local.get $size)))
    (i32.const %(heap)d))
"""


LANES = 4  # ungrouped passes keep accumulators in locals, in this many independent lanes


class _Fields:
    """Where an accumulator's fields live while rows are read: in the group's record in memory
    (grouped passes), or in locals of one lane (ungrouped passes)."""

    def __init__(self, plan: PassPlan, lane: int | None) -> None:
        self.plan = plan
        self.lane = lane
        self.offsets = plan.field_offsets()

    def type(self, index: int, part: int) -> str:
        return "f64" if FIELDS[self.plan.accumulators[index].kind][part] == "<f8" else "i64"

    def local(self, index: int, part: int) -> str:
        return f"$L{self.lane}_{index}_{part}"

    def get(self, index: int, part: int = 0) -> str:
        if self.lane is not None:
            return f"(local.get {self.local(index, part)})"
        off = self.offsets[index] + 8 * part
        return f"({self.type(index, part)}.load offset={off} (local.get $a))"

    def set(self, index: int, value: str, part: int = 0) -> str:
        if self.lane is not None:
            return f"(local.set {self.local(index, part)} {value})"
        off = self.offsets[index] + 8 * part
        return f"({self.type(index, part)}.store offset={off} (local.get $a) {value})"

    def declarations(self) -> list[str]:
        return [
            f"(local {self.local(i, p)} {self.type(i, p)})"
            for i, acc in enumerate(self.plan.accumulators)
            for p in range(len(FIELDS[acc.kind]))
        ]


def generate(plan: PassPlan, dictionaries: Dictionaries) -> str:
    """The WAT text of ``plan``'s module."""
    em = _Emitter(plan, dictionaries)
    stride = plan.record_bytes
    grouped = bool(plan.keys) or plan.histogram is not None

    # per-row values: each accumulator's expression once, in a local
    value_locals: dict[str, tuple[str, str]] = {}  # expr key -> (local, wasm type)
    row_values: list[str] = []
    for acc in plan.accumulators:
        if acc.expr is None or acc.expr.key in value_locals:
            continue
        t = _VALUE_TYPE[acc.expr.dtype]
        name = f"$v{len(value_locals)}"
        value_locals[acc.expr.key] = (name, t)
        em.locals.append(f"(local {name} {t})")
        code = em.as_type(acc.expr, t) if t in ("f64", "i64") else em.emit(acc.expr)
        row_values.append(f"(local.set {name} {code})")

    filter_code = (
        f"(br_if $next (i32.eqz {em.emit(plan.filter)}))" if plan.filter is not None else ""
    )

    def row(fields: _Fields, label: str) -> str:
        """One row's updates (its filter and group lookup come first), leaving by
        ``br $<label>`` when the row is skipped."""
        update = [_update(plan, i, fields, value_locals) for i in range(len(plan.accumulators))]
        code = "\n      ".join([*row_values, *update])
        return code.replace("$next", f"${label}")

    columns_setup = []
    for i, column in enumerate(plan.columns):
        width = WIDTH[column.encoding]
        columns_setup.append(
            f"(local.set $c{i} (local.get $p))"
            f"(local.set $p (i32.and (i32.add (i32.add (local.get $p) "
            f"(i32.mul (local.get $n) (i32.const {width}))) (i32.const 7)) (i32.const -8)))"
        )
    column_locals = " ".join(f"(local $c{i} i32)" for i in range(len(plan.columns)))
    if grouped:
        memory = _Fields(plan, None)
        init = "\n        ".join(_init(plan, i, memory) for i in range(len(plan.accumulators)))
        key_code = _key_code(plan, em)
        hist_code = _histogram_code(plan, em) if plan.histogram is not None else ""
        space = plan.key_space if plan.histogram is None else 1 << 62
        direct = plan.histogram is None and space <= DIRECT_GROUPS
        body = f"""(local.set $i (i32.const 0))
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (block $next
      {filter_code}
      {key_code}
      {hist_code}
      {_slot_lookup(stride, init, direct)}
      {row(memory, "next")}
      )
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows)))"""
        table = _table_code(space, direct)
        finish = ""
    else:
        lanes = [_Fields(plan, lane) for lane in range(LANES)]
        em.locals.extend(d for lane in lanes for d in lane.declarations())
        init = " ".join(
            _init(plan, i, lane) for lane in lanes for i in range(len(plan.accumulators))
        )
        unrolled = "\n      ".join(
            f"(local.set $i (i32.add (local.get $base) (i32.const {k}))) "
            f"(block $next{k} {filter_code.replace('$next', f'$next{k}')} {row(lane, f'next{k}')})"
            for k, lane in enumerate(lanes)
        )
        body = f"""{init}
    (local.set $base (i32.const 0))
    (local.set $whole (i32.and (local.get $n) (i32.const -{LANES})))
    (block $done (loop $rows
      (br_if $done (i32.ge_u (local.get $base) (local.get $whole)))
      {unrolled}
      (local.set $base (i32.add (local.get $base) (i32.const {LANES})))
      (br $rows)))
    (local.set $i (local.get $whole))
    (block $tail_done (loop $tail
      (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
      (block $next0 {filter_code.replace("$next", "$next0")} {row(lanes[0], "next0")})
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $tail)))"""
        table = "(local.set $hdr (local.get $end))"
        memory = _Fields(plan, None)
        stores = []
        for k, lane in enumerate(lanes):  # one record per lane; the merge adds them up
            stores.append(
                f"(local.set $a (i32.add (local.get $rec) (i32.const {k * stride}))) "
                f"(i64.store (local.get $a) (i64.const {k}))"
            )
            for i, acc in enumerate(plan.accumulators):
                for part in range(len(FIELDS[acc.kind])):
                    stores.append(memory.set(i, lane.get(i, part), part))
        finish = "\n    ".join(stores) + f"\n    (local.set $ns (i32.const {LANES}))"
    helpers = _HELPERS % {"heap": HEAP}
    return f"""(module
  (memory (export "memory") 1)
{helpers}
  (func (export "wgt_run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $first i64) (local $params i32) (local $p i32)
    (local $end i32) (local $tab i32) (local $mask i32) (local $shift i64) (local $cap i32)
    (local $hdr i32) (local $rec i32) (local $ns i32) (local $slot i32) (local $k i64)
    (local $h i32) (local $e i32) (local $a i32) (local $key i64) (local $gid i64)
    (local $w i32) (local $wn i32) (local $y f64) (local $s f64) (local $t f64)
    (local $d f64) (local $base i32) (local $whole i32) (local $full i32) (local $limit i32)
    (local $r i32)
    {column_locals}
    {" ".join(em.locals)}
    (if (i32.lt_u (local.get $len) (i32.const {HEADER_BYTES})) (then unreachable))
    (if (i64.gt_u (i64.load (local.get $ptr)) (i64.const 0x10000000)) (then unreachable))
    (local.set $n (i32.wrap_i64 (i64.load (local.get $ptr))))
    (local.set $first (i64.load offset=8 (local.get $ptr)))
    (if (i64.gt_u (i64.load offset=16 (local.get $ptr)) (i64.extend_i32_u (local.get $len))) (then unreachable))
    (local.set $params (i32.add (local.get $ptr) (i32.const {HEADER_BYTES})))
    (local.set $p (i32.add (local.get $params) (i32.wrap_i64 (i64.load offset=16 (local.get $ptr)))))
    {" ".join(columns_setup)}
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (local.get $p) (local.get $end)) (then unreachable))
    (local.set $end (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    {table}
    (local.set $rec (i32.add (local.get $hdr) (i32.const {OUTPUT_HEADER})))
    (call $ensure (i32.add (local.get $rec) (i32.const {stride * LANES})))
    (local.set $ns (i32.const 0))
    {body}
    {finish}
    (i64.store (local.get $hdr) (i64.extend_i32_u (local.get $ns)))
    (i64.store offset=8 (local.get $hdr) (global.get $divided_by_zero))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $hdr)) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const {OUTPUT_HEADER}) (i32.mul (local.get $ns) (i32.const {stride}))))))
)
"""


DIRECT_GROUPS = 1 << 16  # key spaces this small index the table directly: no probing


def _table_code(space: int, direct: bool) -> str:
    """Size the hash table (a power of two at least twice the groups a chunk can have, or the
    whole key space when it is indexed directly) at ``$end``; ``$hdr`` follows it."""
    cap = (
        f"(local.set $cap (i32.const {space}))"
        if direct
        else "(local.set $cap (local.get $n))"
        + (
            f"(if (i32.lt_u (i32.const {space}) (local.get $cap)) (then (local.set $cap (i32.const {space}))))"
            if space < (1 << 30)
            else ""
        )
    )
    target = "(local.get $cap)" if direct else "(i32.shl (local.get $cap) (i32.const 1))"
    return f"""{cap}
    (local.set $mask (i32.const 1)) (local.set $shift (i64.const 64))
    (block $sized (loop $grow
      (br_if $sized (i32.ge_u (local.get $mask) {target}))
      (local.set $mask (i32.shl (local.get $mask) (i32.const 1)))
      (local.set $shift (i64.sub (local.get $shift) (i64.const 1)))
      (br $grow)))
    (local.set $tab (local.get $end))
    (local.set $hdr (i32.add (local.get $tab) (i32.shl (local.get $mask) (i32.const 2))))
    (local.set $mask (i32.sub (local.get $mask) (i32.const 1)))
    {"" if direct else _GROWING_TABLE}"""


# A hashed table starts small and doubles (rehashing the records' keys) whenever it is half
# full, up to the room reserved for it: a few groups stay in a few cache lines.
_START_SLOTS_LOG2 = 12
_GROWING_TABLE = f"""(local.set $full (local.get $mask))
    (if (i32.gt_u (local.get $mask) (i32.const {(1 << _START_SLOTS_LOG2) - 1})) (then
      (local.set $mask (i32.const {(1 << _START_SLOTS_LOG2) - 1}))
      (local.set $shift (i64.const {64 - _START_SLOTS_LOG2}))))
    (local.set $limit (i32.shr_u (i32.add (local.get $mask) (i32.const 1)) (i32.const 1)))"""


def _key_code(plan: PassPlan, em: _Emitter) -> str:
    """Sets ``$k`` to the row's group key (mixed radix of the key columns' codes); a row with a
    missing key is skipped when ``dropna``."""
    if not plan.keys:
        return "(local.set $k (i64.const 0))"
    lines = []
    codes = []
    for position, key in enumerate(plan.keys):
        local = f"$g{position}"
        em.locals.append(f"(local {local} i32)")
        lines.append(f"(local.set {local} {em.load(key.column, 'code')})")
        if key.keep_missing:  # missing values form the last group
            lines.append(
                f"(local.set {local} (select (i32.const {key.radix - 1}) (local.get {local}) "
                f"(i32.lt_s (local.get {local}) (i32.const 0))))"
            )
        else:
            codes.append(f"(local.get {local})")
    if codes:  # one test for every key that drops rows with missing values: a sign bit
        either = codes[0]
        for code in codes[1:]:
            either = f"(i32.or {either} {code})"
        lines.append(f"(br_if $next (i32.lt_s {either} (i32.const 0)))")
    k = "(i64.const 0)"
    for position, key in enumerate(plan.keys):
        code = f"(i64.extend_i32_u (local.get $g{position}))"
        k = code if position == 0 else f"(i64.add (i64.mul {k} (i64.const {key.radix})) {code})"
    lines.append(f"(local.set $k {k})")
    return "\n      ".join(lines)


def _histogram_code(plan: PassPlan, em: _Emitter) -> str:
    """Quantile passes: the row's value -> its order key; the group's windows (params: per
    group ``u32 first, u32 count`` then windows ``lo, hi, shift, base``, u64 each) -> the
    bucket, which becomes the record key. Rows outside every window (and missing values) are
    skipped."""
    assert plan.histogram is not None
    value = plan.histogram.value
    if value.dtype == "f64":
        order = (
            f"(local.set $key (i64.reinterpret_f64 (local.tee $hv {em.emit(value)})))"
            "(br_if $next (f64.ne (local.get $hv) (local.get $hv)))"
            "(local.set $key (i64.xor (local.get $key) (i64.or (i64.shr_s (local.get $key) "
            "(i64.const 63)) (i64.const 0x8000000000000000))))"
        )
        em.locals.append("(local $hv f64)")
    else:
        order = (
            f"(local.set $key (i64.xor {em.as_type(value, 'i64')} (i64.const 0x8000000000000000)))"
        )
    return f"""{order}
      (local.set $gid (local.get $k))
      (local.set $e (i32.add (local.get $params) (i32.shl (i32.wrap_i64 (local.get $gid)) (i32.const 3))))
      (local.set $w (i32.load (local.get $e)))
      (local.set $wn (i32.load offset=4 (local.get $e)))
      (block $found (loop $windows
        (br_if $next (i32.eqz (local.get $wn)))
        (local.set $e (i32.add (local.get $params) (i32.shl (local.get $w) (i32.const 5))))
        (if (i32.and (i64.ge_u (local.get $key) (i64.load (local.get $e)))
                     (i64.le_u (local.get $key) (i64.load offset=8 (local.get $e))))
          (then
            (local.set $k (i64.add (i64.load offset=24 (local.get $e))
              (i64.shr_u (i64.sub (local.get $key) (i64.load (local.get $e))) (i64.load offset=16 (local.get $e)))))
            (br $found)))
        (local.set $w (i32.add (local.get $w) (i32.const 1)))
        (local.set $wn (i32.sub (local.get $wn) (i32.const 1)))
        (br $windows)))"""


def _slot_lookup(stride: int, init: str, direct: bool) -> str:
    """Find (or add) the record of key ``$k``; ``$a`` is its address. A direct table is
    indexed by the key itself; else by a multiplicative hash, probing linearly."""
    new_record = f"""(local.set $a (i32.add (local.get $rec) (i32.mul (local.get $ns) (i32.const {stride}))))
          (call $ensure (i32.add (local.get $a) (i32.const {stride})))
          (i64.store (local.get $a) (local.get $k))
          (local.set $ns (i32.add (local.get $ns) (i32.const 1)))
          (i32.store (i32.add (local.get $tab) (i32.shl (local.get $h) (i32.const 2))) (local.get $ns))
          {init}"""
    if direct:  # the key is the slot: one load, no probing
        return f"""(local.set $h (i32.wrap_i64 (local.get $k)))
      (local.set $e (i32.load (i32.add (local.get $tab) (i32.shl (local.get $h) (i32.const 2)))))
      (if (i32.eqz (local.get $e)) (then {new_record})
        (else (local.set $a (i32.add (local.get $rec) (i32.mul (i32.sub (local.get $e) (i32.const 1)) (i32.const {stride}))))))"""
    hashed = "(i32.wrap_i64 (i64.shr_u (i64.mul (local.get $k) (i64.const -7046029254386353131)) (local.get $shift)))"
    rehashed = hashed.replace(
        "(local.get $k)",
        f"(i64.load (i32.add (local.get $rec) (i32.mul (local.get $r) (i32.const {stride}))))",
    )
    grow = f"""(if (i32.and (i32.gt_u (local.get $ns) (local.get $limit)) (i32.lt_u (local.get $mask) (local.get $full)))
            (then
              (local.set $mask (i32.add (i32.shl (local.get $mask) (i32.const 1)) (i32.const 1)))
              (local.set $shift (i64.sub (local.get $shift) (i64.const 1)))
              (local.set $limit (i32.shr_u (i32.add (local.get $mask) (i32.const 1)) (i32.const 1)))
              (memory.fill (local.get $tab) (i32.const 0) (i32.shl (i32.add (local.get $mask) (i32.const 1)) (i32.const 2)))
              (local.set $r (i32.const 0))
              (block $rehashed (loop $again
                (br_if $rehashed (i32.ge_u (local.get $r) (local.get $ns)))
                (local.set $h {rehashed})
                (block $placed (loop $seek
                  (br_if $placed (i32.eqz (i32.load (i32.add (local.get $tab) (i32.shl (local.get $h) (i32.const 2))))))
                  (local.set $h (i32.and (i32.add (local.get $h) (i32.const 1)) (local.get $mask)))
                  (br $seek)))
                (local.set $r (i32.add (local.get $r) (i32.const 1)))
                (i32.store (i32.add (local.get $tab) (i32.shl (local.get $h) (i32.const 2))) (local.get $r))
                (br $again)))))"""
    return f"""(local.set $h {hashed})
      (block $slotted (loop $probe
        (local.set $e (i32.load (i32.add (local.get $tab) (i32.shl (local.get $h) (i32.const 2)))))
        (if (i32.eqz (local.get $e)) (then
          {new_record}
          {grow}
          (br $slotted)))
        (local.set $a (i32.add (local.get $rec) (i32.mul (i32.sub (local.get $e) (i32.const 1)) (i32.const {stride}))))
        (br_if $slotted (i64.eq (i64.load (local.get $a)) (local.get $k)))
        (local.set $h (i32.and (i32.add (local.get $h) (i32.const 1)) (local.get $mask)))
        (br $probe)))"""


def _init(plan: PassPlan, index: int, fields: _Fields) -> str:
    """A new record's starting fields (fresh memory and locals are zero: only non-zero starts
    are set)."""
    kind = plan.accumulators[index].kind
    start = {
        "min_f": "(f64.const inf)",
        "max_f": "(f64.const -inf)",
        "min_i": "(i64.const 0x7fffffffffffffff)",
        "max_i": "(i64.const -0x8000000000000000)",
        "kmin": "(i64.const -1)",
        "first": "(i64.add (local.get $first) (i64.extend_i32_u (local.get $i)))",
    }.get(kind)
    return fields.set(index, start) if start is not None else ""


def _valid(expr: Expr, local: str) -> str | None:
    """A test that the value in ``local`` is present, or None when it always is."""
    if expr.dtype == "f64":
        return f"(f64.eq (local.get {local}) (local.get {local}))"
    if expr.dtype == "str":
        return f"(i32.ge_s (local.get {local}) (i32.const 0))"
    return None


def _update(plan: PassPlan, index: int, fields: _Fields, values: dict[str, tuple[str, str]]) -> str:
    acc = plan.accumulators[index]
    get, put = fields.get, fields.set
    one = "(i64.const 1)"
    if acc.kind == "size":
        return put(index, f"(i64.add {get(index)} {one})")
    if acc.kind == "first":
        return ""
    if acc.kind in ("kmin", "kmax"):  # the order key of a quantile pass, in $key
        op = "lt_u" if acc.kind == "kmin" else "gt_u"
        return (
            f"(if (i64.{op} (local.get $key) {get(index)}) (then {put(index, '(local.get $key)')}))"
        )
    assert acc.expr is not None
    local, t = values[acc.expr.key]
    v = f"(local.get {local})"
    valid = _valid(acc.expr, local)

    def guarded(code: str) -> str:
        return f"(if {valid} (then {code}))" if valid is not None else code

    # Branch-free where it can be (rows stream through without mispredicted branches): a
    # missing value adds 0 to a count, and compares False.
    if acc.kind == "count":
        if valid is None:
            return put(index, f"(i64.add {get(index)} {one})")
        return put(index, f"(i64.add {get(index)} (i64.extend_i32_u {valid}))")
    if acc.kind == "sum_i":
        return put(index, f"(i64.add {get(index)} {v})")
    if acc.kind == "sum_f":  # Kahan, as pandas: y = x - c; t = s + y; c = (t - s) - y; s = t
        present = v if valid is None else f"(select {v} (f64.const 0) {valid})"  # NaN adds 0
        return (
            f"(local.set $y (f64.sub {present} {get(index, 1)}))"
            f"(local.set $s {get(index)})"
            "(local.set $t (f64.add (local.get $s) (local.get $y)))"
            # pandas resets a NaN compensation (after an infinity) to 0 (GH#53606)
            "(local.set $y (f64.sub (f64.sub (local.get $t) (local.get $s)) (local.get $y)))"
            + put(
                index,
                "(select (f64.const 0) (local.get $y) (f64.ne (local.get $y) (local.get $y)))",
                1,
            )
            + put(index, "(local.get $t)")
        )
    if acc.kind in ("min_f", "max_f"):  # NaN compares False: it never wins
        op = "lt" if acc.kind == "min_f" else "gt"
        return put(index, f"(select {v} {get(index)} (f64.{op} {v} {get(index)}))")
    if acc.kind in ("min_i", "max_i"):
        op = "lt_s" if acc.kind == "min_i" else "gt_s"
        wide = v if t == "i64" else f"(i64.extend_i32_s {v})"
        wins = f"(i64.{op} {wide} {get(index)})"
        if valid is not None:
            wins = f"(i32.and {valid} {wins})"
        return put(index, f"(select {wide} {get(index)} {wins})")
    if acc.kind == "welford":  # n from the count of the same expression, updated before this
        count = plan.index_of("count", acc.expr)
        shifted = f"(f64.sub {v} {get(index)})"
        n = f"(f64.convert_i64_s {get(count)})"
        return guarded(
            f"(if (i64.eq {get(count)} {one}) (then {put(index, v)}))"  # the first value: shift
            f"(local.set $d (f64.sub {shifted} {get(index, 1)}))"
            + put(index, f"(f64.add {get(index, 1)} (f64.div (local.get $d) {n}))", 1)
            + put(
                index,
                f"(f64.add {get(index, 2)} (f64.mul (local.get $d) (f64.sub {shifted} {get(index, 1)})))",
                2,
            )
        )
    raise FrameError(f"unknown accumulator {acc.kind}")  # pragma: no cover
