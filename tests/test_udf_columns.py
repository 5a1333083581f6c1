"""Typed-column chunks: a DataFrame, Series or array reaches the function as exactly the values the
JSON encoding gave it (types included: ints stay ints, bools bools, missing values None)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from udf_support import ensure_runner

import wgtlab as wgt
from wgtlab.sandbox.python.chunks import chunk_json, chunk_payload, chunk_value
from wgtlab.sandbox.python.guest.udf_columns import MAGIC

LIMITS = wgt.ResourceLimits(max_cpu_cycles=20_000_000_000)


def mixed_frame(rows: int = 3) -> pd.DataFrame:
    base = pd.DataFrame(
        {
            "fare": [5.0, np.nan, -0.0],
            "inf": [np.inf, -np.inf, 1e308],
            "city": ["NYC", None, "Zürich 🛫"],
            "when": pd.to_datetime(["2013-01-01 05:15", None, "2013-01-02 00:00"]),
            "n": np.array([1, 2, 3], dtype=np.int32),
            "big": [2**63 - 1, 2**53 + 1, -(2**63)],
            "u64": np.array([2**64 - 1, 0, 2**53 + 1], dtype=np.uint64),
            "huge": [2**70, 1, -1],  # beyond int64: an object column, as JSON
            "f32": np.array([0.1, np.nan, 3.5], dtype=np.float32),
            "nullable": pd.array([1, None, 2**62], dtype="Int64"),
            "nfloat": pd.array([1.5, None, 2.0], dtype="Float64"),
            "nbool": pd.array([True, None, False], dtype="boolean"),
            "text": pd.array(["a", None, ""], dtype="string"),
            "nul": ["a\0b", "c", None],  # holds the separator: as JSON
            "mixed": [1, "a", None],
            "delta": pd.to_timedelta([1, None, 3], unit="s"),
            "cat": pd.Categorical(["x", None, "y"]),
            "empty": ["", "", ""],
            7: [True, False, True],
        }
    )
    return base.iloc[:rows]


CHUNKS = {
    "frame": mixed_frame(),
    "empty frame": mixed_frame(0),
    "one row": mixed_frame(1),
    "no columns": pd.DataFrame(index=range(3)),
    "float series": pd.Series([1.5, np.nan, None]),
    "all missing": pd.Series([None, None]),
    "string series": pd.Series(["é", "", "x"]),
    "one empty string": pd.Series([""]),
    "empty series": pd.Series([], dtype=float),
    "datetime series": pd.Series([pd.NaT, pd.Timestamp("2020-01-01")]),
    "index": pd.Index([3, 4, 5]),
    "int array": np.array([2**62, -1, 0], dtype=np.int64),
    "float array": np.array([0.5, np.nan]),
    "bool array": np.array([True, False]),
    "uint8 array": np.array([255, 0], dtype=np.uint8),
    "2-d array": np.array([[1, 2], [3, 4]]),
    "plain list": [1, 2.5, None, "x", float("nan")],
}


@pytest.mark.parametrize("rows", ["records", "columns"])
@pytest.mark.parametrize("name", list(CHUNKS))
def test_columns_decode_to_exactly_what_json_gave(name, rows):
    chunk = CHUNKS[name]
    expected = json.loads(chunk_json(chunk, rows))
    got = chunk_value(chunk_payload(chunk, rows))
    # repr: 1 == 1.0 == True, but the function would see the difference
    assert repr(got) == repr(expected)


def test_tables_and_numeric_arrays_travel_as_columns_other_values_as_json():
    assert chunk_payload(CHUNKS["frame"]).startswith(MAGIC)
    assert chunk_payload(CHUNKS["float series"]).startswith(MAGIC)
    assert chunk_payload(CHUNKS["int array"]).startswith(MAGIC)
    assert chunk_payload(CHUNKS["2-d array"]) == chunk_json(CHUNKS["2-d array"])
    assert chunk_payload(CHUNKS["plain list"]) == chunk_json(CHUNKS["plain list"])


@pytest.fixture(scope="module")
def runner():
    return ensure_runner()


def echo(value):
    return value


def types_of(value):
    if isinstance(value, dict):
        return {k: [type(v).__name__ for v in vs] for k, vs in value.items()}
    return [[type(v).__name__ for v in row.values()] for row in value]


@pytest.mark.parametrize("rows", ["records", "columns"])
def test_the_guest_builds_the_same_values_inside_the_sandbox(runner, rows):
    frame = mixed_frame()
    expected = json.loads(chunk_json(frame, rows))
    assert wgt.udf(echo, rows=rows).run(frame, limits=LIMITS) == expected
    assert wgt.udf(types_of, rows=rows).run(frame, limits=LIMITS) == types_of(expected)
    for name in ("empty frame", "no columns", "index", "float array", "string series"):
        chunk = CHUNKS[name]
        assert wgt.udf(echo, rows=rows).run(chunk, limits=LIMITS) == json.loads(
            chunk_json(chunk, rows)
        ), name


def test_replicas_of_a_column_chunk_agree_byte_for_byte(runner):
    kernel = wgt.udf(echo)
    payload = kernel.encode(mixed_frame())
    sandbox = wgt.Sandbox(LIMITS)
    first, second = kernel.execute(sandbox, payload), kernel.execute(sandbox, payload)
    assert first.output == second.output and first.output_sha256 == second.output_sha256
