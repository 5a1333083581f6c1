"""@wgt.udf on the trusted side: capturing functions, refusing what cannot run, chunks, combine.

Nothing here starts the sandbox: each captured program is also executed natively, to check the
program the guest receives means the same as the function the analyst wrote.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import functools
import json
import math
import pickle
import re
import statistics
from collections import Counter
from math import sqrt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import wgtlab as wgt
from wgtlab.sandbox.kernels.base import Kernel
from wgtlab.sandbox.python import PythonUdf, natural_combine
from wgtlab.sandbox.python.chunks import chunk_value

THRESHOLD = 10.0
LOOKUP = {"JFK": "Kennedy", "LGA": "LaGuardia", (1, 2): frozenset({3, 1})}
PATTERN = re.compile(r"([A-Z]{2})(\d+)", re.IGNORECASE)
CUTOFF = datetime.date(2013, 1, 15)
STAMP = datetime.datetime(2013, 1, 1, 6, 30, tzinfo=datetime.timezone.utc)
PRICE = decimal.Decimal("12.50")
SHARE = fractions.Fraction(2, 3)
ODD = {float("nan"), float("inf")}
FRAME = pd.DataFrame({"a": [1, 2]})
NUMPY_SCALAR = np.float64(2.5)


def run_natively(program, argument):
    """Exec the captured program on the host and call its entry, as the guest would."""
    namespace = {"__name__": "__wgt_udf__"}
    exec(compile(program.source, "<udf>", "exec"), namespace)
    return namespace[program.entry](argument)


def double(x):
    return x * 2


def uses_double(rows):
    return [double(sqrt(r)) for r in rows]


# --- the decorator's forms -----------------------------------------------------------------------


@wgt.udf
def mean_of(rows: pd.DataFrame) -> float:  # the annotation names pandas: never evaluated
    return statistics.mean(r["x"] for r in rows)


@wgt.udf(
    combine="sum",
    seed=7,
)
def count_big(rows):
    """Rows above the threshold."""
    return sum(1 for r in rows if r["x"] > THRESHOLD)


def test_decorator_forms_make_kernels():
    assert isinstance(mean_of, PythonUdf)
    assert isinstance(count_big, PythonUdf)
    plain = wgt.udf(uses_double)
    assert isinstance(plain, PythonUdf) and plain.fn is uses_double
    for kernel in (mean_of, count_big, plain):
        assert isinstance(kernel, Kernel)
    assert mean_of.name == "mean_of" and mean_of.input_kind == "records"
    assert dict(count_big.params) == {
        "input": "records",
        "rows": "records",
        "output": "json",
        "combine": "sum",
        "seed": 7,
    }
    assert count_big.__doc__ == "Rows above the threshold."
    bytes_kernel = wgt.udf(lambda chunk: chunk.upper(), input="bytes")
    assert (bytes_kernel.input_kind, bytes_kernel.output_kind) == ("bytes", "bytes")
    # udf(udf) re-wraps the same function with the new options
    again = wgt.udf(count_big, combine="list")
    assert again.fn is count_big.fn and again.params["combine"] == "list"


def test_decorators_are_stripped_and_line_numbers_start_at_the_def():
    source = count_big.program.source
    assert "@" not in source and "combine=" not in source
    assert source.startswith("def count_big(rows):\n")
    assert "THRESHOLD = 10.0\n" in source
    assert run_natively(count_big.program, [{"x": 5}, {"x": 11}, {"x": 12.5}]) == 2
    assert run_natively(mean_of.program, [{"x": 1}, {"x": 2}]) == 1.5


def test_calling_the_udf_runs_the_plain_function_natively():
    assert count_big([{"x": 50}]) == 1
    assert mean_of([{"x": 4}]) == 4


# --- globals, closures and imports ----------------------------------------------------------------


def test_helpers_modules_and_guest_functions_are_carried_along():
    kernel = wgt.udf(uses_double)
    source = kernel.program.source
    assert "from math import sqrt\n" in source
    assert "def double(x):" in source
    assert run_natively(kernel.program, [4.0, 9.0]) == [4.0, 6.0]


def test_constants_of_every_supported_kind_arrive_equal():
    def everything(rows):
        return [
            THRESHOLD,
            LOOKUP,
            PATTERN.findall("ua12 and B6 7"),
            CUTOFF,
            STAMP,
            PRICE,
            SHARE,
            sorted(ODD, key=str),
            NUMPY_SCALAR,
            Counter(rows),
        ]

    program = wgt.udf(everything).program
    assert "import pandas" not in program.source
    got = run_natively(program, ["a", "b", "a"])
    expected = everything(["a", "b", "a"])
    assert got[:7] == expected[:7]
    assert [str(v) for v in got[7]] == ["inf", "nan"]
    assert got[8] == 2.5 and type(got[8]) is float
    assert got[9] == Counter({"a": 2, "b": 1})


def test_set_constants_give_the_same_source_whatever_the_hash_seed():
    def f(rows):
        return ODD, LOOKUP

    assert "frozenset({1, 3})" in wgt.udf(f).program.source
    assert wgt.udf(f).digest == wgt.udf(f).digest


def test_closures_over_constants_work_and_over_objects_fail():
    def make(limit):
        def over(rows):
            return [r for r in rows if r > limit]

        return over

    assert run_natively(wgt.udf(make(3)).program, [1, 5, 7]) == [5, 7]
    assert wgt.udf(make(3)).digest != wgt.udf(make(4)).digest

    def over_object(rows):
        return len(FRAME) + len(rows)

    with pytest.raises(wgt.UdfBuildError, match=r"global 'FRAME', a pandas\..*DataFrame"):
        wgt.udf(over_object)

    lock = object()

    def over_closure(rows):
        return lock

    with pytest.raises(wgt.UdfBuildError, match="'lock', a object"):
        wgt.udf(over_closure)


def test_modules_the_guest_lacks_are_refused_before_anything_runs():
    def imports_numpy(rows):
        import numpy

        return numpy.mean(rows)

    with pytest.raises(wgt.UdfBuildError, match="imports numpy, which the sandbox does not"):
        wgt.udf(imports_numpy)

    def uses_np(rows):
        return np.mean(rows)

    with pytest.raises(wgt.UdfBuildError, match=r"module numpy \(as 'np'\)"):
        wgt.udf(uses_np)

    def opens_socket(rows):
        from socket import socket

        return socket

    with pytest.raises(wgt.UdfBuildError, match="imports socket"):
        wgt.udf(opens_socket)

    def fine(rows):
        import collections.abc
        import json as j
        from os import path

        return j.dumps(rows), path.join("a", "b"), collections.abc.Mapping

    wgt.udf(fine)


def test_functions_without_readable_source_are_refused():
    namespace = {}
    exec("def made(rows):\n    return rows\n", namespace)
    with pytest.raises(wgt.UdfBuildError, match="source code cannot be read"):
        wgt.udf(namespace["made"])
    with pytest.raises(wgt.UdfBuildError, match="source code cannot be read"):
        wgt.udf(eval("lambda rows: rows"))
    first, second = (lambda rows: 1), (lambda rows: 2)
    with pytest.raises(wgt.UdfBuildError, match="does not show which lambda"):
        wgt.udf(first)
    assert second(None) == 2


def test_a_lambda_with_its_own_line_works():
    kernel = wgt.udf(lambda rows: sum(r["x"] for r in rows) * THRESHOLD)
    assert kernel.name == "lambda"
    assert run_natively(kernel.program, [{"x": 2}]) == 20.0


@pytest.mark.parametrize(
    ("thing", "match"),
    [
        (functools.partial(max, 1), "functools.partial, not a Python function"),
        (len, "builtin_function_or_method"),
        (pd.DataFrame({"a": [1]}).sum, "bound method"),
        (Counter, "type, not a Python function"),
    ],
)
def test_non_functions_are_refused(thing, match):
    with pytest.raises(wgt.UdfBuildError, match=match):
        wgt.udf(thing)


def test_generators_and_async_functions_are_refused():
    def gen(rows):
        yield from rows

    async def coro(rows):
        return rows

    for fn in (gen, coro):
        with pytest.raises(wgt.UdfBuildError, match="generator or async"):
            wgt.udf(fn)


def test_one_name_for_two_things_is_refused():
    def helper_a(x):
        return LOOKUP

    ns = {"LOOKUP": 1, "helper_a": helper_a}
    exec_def = "def outer(rows):\n    return helper_a(rows), LOOKUP\n"
    # outer sees LOOKUP = 1, helper_a the dict: one program cannot hold both
    import linecache

    linecache.cache["<outer-src>"] = (len(exec_def), None, exec_def.splitlines(True), "<outer-src>")
    exec(compile(exec_def, "<outer-src>", "exec"), ns)
    with pytest.raises(wgt.UdfBuildError, match="'LOOKUP' means two different things"):
        wgt.udf(ns["outer"])


# --- options, digests, pickling ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"input": "csv"}, {"rows": "tuples"}, {"output": "xml"}, {"combine": "mean"}, {"seed": -1}],
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(wgt.ConfigError):
        wgt.udf(uses_double, **options)


def test_digest_names_the_code_and_options():
    base = wgt.udf(uses_double)
    assert base.digest == wgt.udf(uses_double).digest
    assert len(base.digest) == 64
    assert base.digest != wgt.udf(uses_double, seed=1).digest
    assert base.digest != wgt.udf(uses_double, rows="columns").digest
    assert base.digest != wgt.udf(lambda rows: uses_double(rows)).digest


def test_pickles_without_the_native_function():
    kernel = wgt.udf(uses_double, combine="sum")
    copy = pickle.loads(pickle.dumps(kernel))
    assert copy.digest == kernel.digest and copy.program == kernel.program
    assert copy.fn is None and dict(copy.params) == dict(kernel.params)
    assert copy.combine([1, 2]) == 3
    with pytest.raises(TypeError, match="without its native function"):
        copy([1.0])


# --- chunks ------------------------------------------------------------------------------------


def test_dataframes_arrive_as_records_or_columns_with_missing_as_none():
    frame = pd.DataFrame(
        {
            "fare": [5.0, np.nan, 7.25],
            "city": ["NYC", None, "Zürich"],
            "when": pd.to_datetime(["2013-01-01 05:15", None, "2013-01-02 00:00"]),
            "n": np.array([1, 2, 3], dtype=np.int32),
            7: [True, False, True],
        }
    )
    records = chunk_value(wgt.udf(uses_double).encode(frame))
    assert records == [
        {"fare": 5.0, "city": "NYC", "when": "2013-01-01T05:15:00", "n": 1, "7": True},
        {"fare": None, "city": None, "when": None, "n": 2, "7": False},
        {"fare": 7.25, "city": "Zürich", "when": "2013-01-02T00:00:00", "n": 3, "7": True},
    ]
    columns = chunk_value(wgt.udf(uses_double, rows="columns").encode(frame))
    assert columns["fare"] == [5.0, None, 7.25] and columns["7"] == [True, False, True]
    assert list(columns) == ["fare", "city", "when", "n", "7"]


def test_series_arrays_arrow_and_plain_values_arrive_as_lists():
    kernel = wgt.udf(uses_double)
    assert chunk_value(kernel.encode(pd.Series([1.5, np.nan]))) == [1.5, None]
    assert chunk_value(kernel.encode(np.array([[1, 2], [3, 4]]))) == [[1, 2], [3, 4]]
    assert chunk_value(kernel.encode(np.array([0.5, np.nan]))) == [0.5, None]
    table = pa.table({"a": [1, None], "b": ["x", "y"]})
    assert chunk_value(kernel.encode(table)) == [{"a": 1, "b": "x"}, {"a": None, "b": "y"}]
    assert chunk_value(kernel.encode([1, {"k": (2, 3)}, None])) == [1, {"k": [2, 3]}, None]
    with pytest.raises(wgt.ConfigError, match="input='bytes'"):
        kernel.encode(b"raw")
    with pytest.raises(wgt.ConfigError, match="cannot be sent to the sandbox as JSON"):
        kernel.encode([object()])
    with pytest.raises(wgt.ConfigError, match="duplicate column names"):
        kernel.encode(pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_bytes_and_text_chunks_pass_through():
    raw = wgt.udf(lambda chunk: chunk, input="bytes")
    assert raw.encode(b"\x00\xff") == b"\x00\xff"
    assert raw.encode(bytearray(b"ab")) == b"ab"
    assert raw.encode("é") == "é".encode()
    with pytest.raises(wgt.ConfigError, match="takes bytes chunks"):
        raw.encode([1, 2])
    assert raw.decode(b"\x01") == b"\x01" and raw.empty() == b""


# --- combine -----------------------------------------------------------------------------------


def test_natural_combine_by_type():
    assert natural_combine([1, 2.5, 3]) == 6.5
    assert natural_combine([[1], [2, 3]]) == [1, 2, 3]
    assert natural_combine(["ab", "c"]) == "abc"
    assert natural_combine([b"a", b"b"]) == b"ab"
    assert natural_combine([{"a": 1, "b": [1]}, {"a": 2, "c": {"x": 1}}, {"b": [2]}]) == {
        "a": 3,
        "b": [1, 2],
        "c": {"x": 1},
    }
    assert natural_combine([{"a": "x"}, {"a": 1}]) == [{"a": "x"}, {"a": 1}]
    assert natural_combine([True, False]) == [True, False]
    assert natural_combine([None, 1]) == [None, 1]
    assert natural_combine([]) is None


def test_named_and_callable_combines():
    assert wgt.udf(uses_double, combine="sum").combine([{"a": 1}, {"a": 2}]) == {"a": 3}
    assert wgt.udf(uses_double, combine="concat").combine([[1], [2]]) == [1, 2]
    assert wgt.udf(uses_double, combine="list").combine([1, 2]) == [1, 2]
    assert wgt.udf(uses_double, combine="min").combine([3, 1, 2]) == 1
    assert wgt.udf(uses_double, combine="max").combine([3, 1, 2]) == 3
    weighted = wgt.udf(uses_double, combine=lambda parts: math.fsum(p[0] * p[1] for p in parts))
    assert weighted.combine([[2, 0.5], [4, 0.25]]) == 2.0
    assert weighted.params["combine"] == "<lambda>"
    assert wgt.udf(uses_double, combine="sum").combine([[1, 2], [3, 4]]) == [4, 6]
    with pytest.raises(wgt.ConfigError, match=r"combine='sum' adds numbers.*got list"):
        wgt.udf(uses_double, combine="sum").combine([[1], [2, 3]])
    with pytest.raises(wgt.ConfigError, match=r"combine='concat' joins lists.*got NoneType"):
        wgt.udf(uses_double, combine="concat").combine([None, None])
    assert wgt.udf(uses_double, combine="sum").empty() == 0
    assert wgt.udf(uses_double, combine="concat").empty() == []
    assert wgt.udf(uses_double, combine="natural").empty() is None
    # the default keeps every chunk's value, in chunk order: nothing is added up unasked
    assert wgt.udf(uses_double).params["combine"] == "list"
    assert wgt.udf(uses_double).combine([2.5, 3.5]) == [2.5, 3.5]
    assert wgt.udf(uses_double).empty() == []


def test_frame_combine_makes_one_dataframe_of_every_chunks_rows():
    frame = wgt.udf(uses_double, combine="frame")
    combined = frame.combine(
        [[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], {"a": [3], "b": ["z"]}, {"a": 4, "b": "w"}]
    )
    pd.testing.assert_frame_equal(
        combined, pd.DataFrame({"a": [1, 2, 3, 4], "b": ["x", "y", "z", "w"]})
    )
    assert frame.empty().empty
    with pytest.raises(wgt.ConfigError, match=r"combine='frame' .* chunk 1 returned a int"):
        frame.combine([[{"a": 1}], 7])
    with pytest.raises(wgt.ConfigError, match=r"combine='frame': chunk 0's columns: All arrays"):
        frame.combine([{"a": [1, 2], "b": [3]}])


def test_a_wrapper_of_a_builtin_in_the_namespace_is_not_captured():
    # IPython puts a functools.wraps wrapper of open() into every notebook's namespace; the
    # function must still reach the guest's own open (which refuses files), not fail capture.
    import functools

    @functools.wraps(open)
    def notebook_open(*args, **kwargs):
        return open(*args, **kwargs)

    namespace = {"open": notebook_open, "__name__": "__main__"}
    exec(compile("def reads(rows):\n    return open('/etc/passwd').read()\n", __file__, "exec"),
         namespace)  # fmt: skip
    from wgtlab.sandbox.python.capture import _library_stand_in

    assert _library_stand_in("open", notebook_open, namespace["reads"])
    assert not _library_stand_in("open", lambda path: path, namespace["reads"])
    assert not _library_stand_in("len", len, namespace["reads"])


def test_every_kind_of_missing_value_reaches_the_function_as_none():
    from wgtlab.sandbox.python.chunks import chunk_json

    day = pd.Timestamp("2020-01-01")
    plain = [1.0, float("nan"), pd.NA, pd.NaT, None, day, {"x": float("nan"), "y": pd.NaT}]
    assert json.loads(chunk_json(plain)) == [
        1.0,
        None,
        None,
        None,
        None,
        "2020-01-01T00:00:00",
        {"x": None, "y": None},
    ]
    assert json.loads(chunk_json(pd.Series([pd.NaT, day]))) == [None, "2020-01-01T00:00:00"]
    assert json.loads(chunk_json(np.array([np.nan, 2.0]))) == [None, 2.0]
