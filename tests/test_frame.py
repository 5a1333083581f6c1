"""``wgt.frame`` against pandas, the oracle: every query answers what pandas answers.

Each test builds the same query twice, once on ``wgt.frame(df)`` (generated WebAssembly, run as
verified jobs on a LocalCluster) and once on ``df`` itself, and compares the two: shape, index,
names, group and column order, dtypes and values. Counts, min, max, nunique, value_counts,
quantiles and medians must be exact; sums, means, variances and standard deviations of floats
agree to 1e-12 relative. Scalars must also have pandas' type (``nunique`` is a Python int,
``count`` an ``np.int64``, ...).

The data is the real ``data/flights-2013-01.csv`` and small frames drawn from fixed seeds: NaN,
None among string keys, int64 beyond 2**53, bools, signed zeros, infinities, object and ``str``
strings, categoricals with unused categories in non-lexical order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import wgtlab as wgt
import wgtlab.frame.query as frame_query

DATA = Path(__file__).resolve().parents[1] / "data" / "flights-2013-01.csv"
RTOL = 1e-12
SEEDS = [0, 1, 2]
WORDS = ["UA", "AA", "DL", "B6", "EV"]
# aggregations whose float results are compared to RTOL; every other result is exact
APPROX_FUNCS = {"sum", "mean", "var", "std"}


# --- fixtures and data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return pd.read_csv(DATA)


@pytest.fixture
def small_chunks(monkeypatch):
    """Frame passes cut their input into chunks of a few rows, so every merge is exercised."""
    monkeypatch.setattr(frame_query, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(frame_query, "CHUNK_BYTES", 96)


def make_frame(seed: int, rows: int = 60) -> pd.DataFrame:
    """A deterministic frame with every kind of column and missing value the API handles.

    f: float64 with NaN and both zeros; big: int64 beyond 2**53 (sums fit in int64); m: small
    non-zero ints; b: bool; g: str keys with missing; s: str with missing; o: object strings
    with None; cat: categorical, categories in non-lexical order, one unused, with missing."""
    rng = np.random.default_rng(seed)
    positions = rng.permutation(rows)
    nan_at, zero_at, g_missing, s_missing = (
        positions[:8],
        positions[8:12],
        positions[12:17],
        positions[17:23],
    )
    f = rng.normal(0.0, 100.0, rows).round(3)
    f[nan_at] = np.nan
    f[zero_at] = [0.0, -0.0, -0.0, 0.0]
    big = rng.integers(-(2**56), 2**56, rows)
    big[positions[0]] = 2**53 + 1  # not a float64
    big[positions[1]] = -(2**55) - 3
    m = rng.integers(1, 7, rows) * rng.choice([-1, 1], rows)
    g = rng.choice(["p", "q", "r", "t"], rows).astype(object)
    g[g_missing] = None
    s = rng.choice(WORDS, rows).astype(object)
    s[s_missing] = None
    o = rng.choice(WORDS, rows).astype(object)
    o[positions[23:27]] = None
    cat = pd.Categorical(
        rng.choice(["zeta", "alpha", "mid"], rows), categories=["zeta", "alpha", "mid", "unused"]
    )
    cat[positions[27:30]] = np.nan
    return pd.DataFrame(
        {
            "f": f,
            "big": big,
            "m": m,
            "b": rng.random(rows) < 0.4,
            "g": pd.Series(g, dtype="str"),
            "s": pd.Series(s, dtype="str"),
            "o": pd.Series(o, dtype=object),
            "cat": cat,
        }
    )


# --- comparing with pandas -----------------------------------------------------------------------


def assert_scalar(got: Any, expected: Any, *, approx: bool = False) -> None:
    """Same type as pandas' scalar, and the same value (NaN where pandas has NaN)."""
    assert type(got) is type(expected), (
        f"got {got!r} ({type(got).__name__}), pandas gives {expected!r} ({type(expected).__name__})"
    )
    if isinstance(expected, (float, np.floating)) and math.isnan(expected):
        assert math.isnan(got), f"got {got!r}, pandas gives NaN"
    elif approx and isinstance(expected, (float, np.floating)) and math.isfinite(expected):
        assert got == pytest.approx(expected, rel=RTOL, abs=0)
    else:
        assert got == expected


def assert_series(got: Any, expected: pd.Series, *, approx: bool = False) -> None:
    assert isinstance(got, pd.Series), f"got a {type(got).__name__}, pandas gives a Series"
    if approx:
        pd.testing.assert_series_equal(got, expected, check_exact=False, rtol=RTOL, atol=0)
    else:
        pd.testing.assert_series_equal(got, expected, check_exact=True)


def assert_frame(got: Any, expected: pd.DataFrame, approx: Callable[[Any], bool]) -> None:
    """Same index, columns and dtypes; each column exact unless ``approx(label)``."""
    assert isinstance(got, pd.DataFrame), f"got a {type(got).__name__}, pandas gives a DataFrame"
    pd.testing.assert_index_equal(got.columns, expected.columns, exact=True)
    pd.testing.assert_index_equal(got.index, expected.index, exact=True)
    pd.testing.assert_series_equal(got.dtypes, expected.dtypes)
    for position, label in enumerate(expected.columns):
        assert_series(got.iloc[:, position], expected.iloc[:, position], approx=approx(label))


def assert_same(got: Any, expected: Any, *, approx: bool = False) -> None:
    if isinstance(expected, pd.DataFrame):
        assert_frame(got, expected, lambda _: approx)
    elif isinstance(expected, pd.Series):
        assert_series(got, expected, approx=approx)
    else:
        assert_scalar(got, expected, approx=approx)


def assert_describe(got: Any, expected: pd.Series | pd.DataFrame) -> None:
    """describe(): mean and std to RTOL, every other statistic exact."""
    if isinstance(expected, pd.Series):
        got, expected = got.to_frame(), expected.to_frame()
    assert isinstance(got, pd.DataFrame)
    exact = [row for row in expected.index if row not in ("mean", "std")]
    pd.testing.assert_index_equal(got.index, expected.index, exact=True)
    pd.testing.assert_frame_equal(got.loc[exact], expected.loc[exact], check_exact=True)
    pd.testing.assert_frame_equal(
        got.loc[["mean", "std"]],
        expected.loc[["mean", "std"]],
        check_exact=False,
        rtol=RTOL,
        atol=0,
    )


# --- the API: results, jobs, columns -------------------------------------------------------------


def test_run_returns_a_verified_job_result_whose_value_is_the_answer(cluster):
    df = make_frame(0)
    result = wgt.frame(df).groupby("g").f.mean().run(on=cluster)
    assert isinstance(result, wgt.JobResult)
    assert result.ok
    assert all(outcome.status == "verified" for outcome in result.outcomes)
    assert_same(result.value, df.groupby("g").f.mean(), approx=True)


def test_compute_is_the_value_of_run(cluster):
    df = make_frame(1)
    query = wgt.frame(df).s.value_counts()
    assert_same(query.compute(on=cluster), df.s.value_counts())
    assert_same(query.run(on=cluster).value, df.s.value_counts())


def test_query_job_is_a_wgt_job_whose_verify_limits_and_retries_apply(cluster):
    df = make_frame(2)
    job = wgt.frame(df).big.sum().job()
    assert isinstance(job, wgt.Job)
    job.verify("redundancy", replicas=2).limits(max_cpu_cycles=50_000_000).retries(1)
    result = job.run(on=cluster)
    assert_same(result.value, df.big.sum())
    assert (result.mode, result.replicas) == ("redundancy", 2)
    assert result.limits is not None and result.limits.max_cpu_cycles == 50_000_000
    rows = result.verification
    assert set(rows.outcome) == {"agreed"}
    assert rows.groupby("chunk").worker.nunique().eq(2).all()

    starved = wgt.frame(df).big.sum().job()
    starved.limits(max_cpu_cycles=100)
    with pytest.raises(wgt.ChunkFailed, match="max_cpu_cycles"):
        starved.run(on=cluster)


@pytest.mark.parametrize("retries", [0, 1])
def test_query_job_retries_apply_to_its_passes(retries):
    df = make_frame(0)
    faults = {f"local-{i}": wgt.faults.Crash() for i in range(2)}
    with wgt.LocalCluster(workers=2, faults=faults) as crashing:
        job = wgt.frame(df).f.mean().job()
        job.retries(retries)
        with pytest.raises(wgt.ChunkFailed) as caught:
            job.run(on=crashing)
    tries = caught.value.result.verification
    assert list(tries.outcome) == ["crashed"] * (retries + 1)


def test_attribute_item_and_selection_name_the_same_columns(cluster):
    df = make_frame(0)
    f = wgt.frame(df)
    assert f.columns == list(df.columns)
    assert_same(f.f.sum().compute(on=cluster), df.f.sum(), approx=True)
    assert_same(f["f"].sum().compute(on=cluster), df["f"].sum(), approx=True)
    assert_same(f[["f", "s", "b"]].count().compute(on=cluster), df[["f", "s", "b"]].count())
    assert_same(f.count().compute(on=cluster), df.count())


# --- reductions of a column ----------------------------------------------------------------------

NUMERIC_FUNCS = ["sum", "mean", "count", "min", "max", "var", "std", "nunique", "median"]
COLUMN_REDUCTIONS = [
    *[(column, func) for column in ("f", "big", "m", "b") for func in NUMERIC_FUNCS],
    *[(column, func) for column in ("s", "o") for func in ("count", "min", "max", "nunique")],
    ("cat", "count"),
    ("cat", "nunique"),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("column", "func"), COLUMN_REDUCTIONS)
def test_column_reduction_equals_pandas(cluster, seed, column, func):
    df = make_frame(seed)
    got = getattr(wgt.frame(df)[column], func)().compute(on=cluster)
    assert_same(got, getattr(df[column], func)(), approx=func in APPROX_FUNCS)


@pytest.mark.parametrize("column", ["f", "s"])
def test_column_size_is_the_row_count_as_a_python_int(cluster, column):
    df = make_frame(0)
    f = wgt.frame(df)
    assert_same(f[column].size().compute(on=cluster), df[column].size)
    kept = df[df.m > 0]
    assert_same(f[f.m > 0][column].size().compute(on=cluster), kept[column].size)


QS = [0.0, 0.25, 0.5, 0.75, 1.0, 0.1, 0.9, 0.333, 0.07, 0.999]


@pytest.mark.parametrize("column", ["f", "big", "m"])
@pytest.mark.parametrize("q", QS)
def test_quantile_equals_pandas_exactly(cluster, column, q):
    df = make_frame(0)
    assert_same(wgt.frame(df)[column].quantile(q).compute(on=cluster), df[column].quantile(q))


@pytest.mark.parametrize("column", ["f", "big"])
def test_quantile_of_a_list_is_a_series_indexed_by_q(cluster, column):
    df = make_frame(1)
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    got = wgt.frame(df)[column].quantile(qs).compute(on=cluster)
    assert_same(got, df[column].quantile(qs))


@pytest.mark.parametrize("column", ["g", "s", "o", "m", "b", "f", "cat"])
def test_value_counts_equals_pandas(cluster, column):
    df = make_frame(0)
    assert_same(wgt.frame(df)[column].value_counts().compute(on=cluster), df[column].value_counts())


def test_value_counts_ties_keep_the_order_of_first_appearance(cluster):
    # 40 values seen 1 to 3 times each, shuffled: past numpy's small-array insertion sort an
    # unstable sort reorders the ties, which pandas keeps in order of first appearance
    rng = np.random.default_rng(5)
    words = [f"w{i:02d}" for i in range(40)]
    values = rng.permutation(np.repeat(words, rng.integers(1, 4, len(words))))
    df = pd.DataFrame({"w": pd.Series(values, dtype="str")})
    assert_same(wgt.frame(df).w.value_counts().compute(on=cluster), df.w.value_counts())


@pytest.mark.parametrize("column", ["f", "big", "m", "s", "o"])
def test_describe_of_a_column_equals_pandas(cluster, column):
    df = make_frame(0)
    got = wgt.frame(df)[column].describe().compute(on=cluster)
    expected = df[column].describe()
    if expected.dtype == object:  # strings: count, unique, top, freq
        assert_same(got, expected)
    else:
        assert_describe(got, expected)


def test_describe_of_a_bool_column_counts_like_pandas(cluster):
    df = make_frame(0)
    assert_same(wgt.frame(df).b.describe().compute(on=cluster), df.b.describe())


@pytest.mark.parametrize("seed", SEEDS)
def test_describe_and_count_of_the_frame_equal_pandas(cluster, seed):
    df = make_frame(seed)
    f = wgt.frame(df)
    assert_describe(f.describe().compute(on=cluster), df.describe())
    assert_same(f.count().compute(on=cluster), df.count())


# --- exact integers, infinities, signed zeros ---------------------------------------------------


def test_int64_sum_min_max_are_exact_beyond_2_53(cluster):
    values = [2**53 + 1, 2**53 + 3, -(2**60) + 7, 2**61 - 1, 5]
    df = pd.DataFrame({"i": values, "k": ["a", "b", "a", "b", "a"]})
    f = wgt.frame(df)
    for func in ("sum", "min", "max"):
        assert_same(getattr(f.i, func)().compute(on=cluster), getattr(df.i, func)())
        assert_same(
            getattr(f.groupby("k").i, func)().compute(on=cluster),
            getattr(df.groupby("k").i, func)(),
        )
    assert_same(f.i.median().compute(on=cluster), df.i.median())


def test_int64_mean_of_large_values_does_not_overflow(cluster):
    # pandas sums int64 in float64 for a mean: 8 values near 2**62 have a mean near 2**62
    df = pd.DataFrame({"i": [2**62 + k for k in range(8)], "k": ["a"] * 8})
    f = wgt.frame(df)
    assert_same(f.i.mean().compute(on=cluster), df.i.mean(), approx=True)
    assert_same(f.groupby("k").i.mean().compute(on=cluster), df.groupby("k").i.mean(), approx=True)


INFINITE = pd.DataFrame(
    {
        "x": [np.inf, 1.0, np.nan, 2.5, -np.inf, 3.0, np.inf, 4.0],
        "k": ["pos", "pos", "pos", "neg", "neg", "both", "both", "both"],
    }
)


@pytest.mark.parametrize("func", ["sum", "mean", "min", "max", "median", "count"])
def test_infinities_reduce_like_pandas(cluster, func):
    df = INFINITE.iloc[:4]  # one +inf among finite values and a NaN
    got = getattr(wgt.frame(df).x, func)().compute(on=cluster)
    assert_same(got, getattr(df.x, func)(), approx=func in APPROX_FUNCS)


@pytest.mark.parametrize("func", ["sum", "mean", "min", "max", "median"])
def test_infinities_in_groups_reduce_like_pandas(cluster, func):
    got = getattr(wgt.frame(INFINITE).groupby("k").x, func)().compute(on=cluster)
    assert_same(got, getattr(INFINITE.groupby("k").x, func)(), approx=func in APPROX_FUNCS)


SIGNED_ZEROS = pd.DataFrame({"z": [0.0, -0.0, 1.0, -0.0, np.nan, 0.0], "x": [1, 2, 4, 8, 16, 32]})


def test_signed_zeros_are_one_value_as_in_pandas(cluster):
    df = SIGNED_ZEROS
    f = wgt.frame(df)
    assert_same(
        f.groupby("z", dropna=False).x.sum().compute(on=cluster),
        df.groupby("z", dropna=False).x.sum(),
    )
    assert_same(f.z.nunique().compute(on=cluster), df.z.nunique())
    assert_same(f.z.value_counts().compute(on=cluster), df.z.value_counts())
    assert_same(f[f.z == 0].x.sum().compute(on=cluster), df[df.z == 0].x.sum())
    assert_same(f[f.z.isin([-0.0])].x.sum().compute(on=cluster), df[df.z.isin([-0.0])].x.sum())
    assert_same(f.z.min().compute(on=cluster), df.z.min())  # == compares 0.0 and -0.0 equal


# --- missing values, empty and single-row inputs -------------------------------------------------

EMPTY_REDUCTIONS = [
    *[(column, func) for column in ("f", "big", "b") for func in NUMERIC_FUNCS],
    *[(column, func) for column in ("s", "o") for func in ("count", "min", "max", "nunique")],
]


@pytest.mark.parametrize(("column", "func"), EMPTY_REDUCTIONS)
def test_reductions_of_a_filter_that_keeps_no_rows(cluster, column, func):
    df = make_frame(0)
    f = wgt.frame(df)
    got = getattr(f[f.f > 1e9][column], func)().compute(on=cluster)
    assert_same(got, getattr(df[df.f > 1e9][column], func)())


@pytest.mark.parametrize(("column", "func"), EMPTY_REDUCTIONS)
def test_reductions_of_a_zero_row_dataframe(cluster, column, func):
    df = make_frame(0).iloc[:0]
    got = getattr(wgt.frame(df)[column], func)().compute(on=cluster)
    assert_same(got, getattr(df[column], func)())


@pytest.mark.parametrize("column", ["f", "big"])
def test_quantiles_and_value_counts_of_no_rows(cluster, column):
    df = make_frame(0)
    f = wgt.frame(df)
    empty = df[df.f > 1e9]
    assert_same(f[f.f > 1e9][column].quantile(0.3).compute(on=cluster), empty[column].quantile(0.3))
    assert_same(f[f.f > 1e9].s.value_counts().compute(on=cluster), empty.s.value_counts())


def test_describe_of_no_rows_is_nan_except_the_count(cluster):
    df = make_frame(0)
    f = wgt.frame(df)
    assert_describe(f[f.f > 1e9].describe().compute(on=cluster), df[df.f > 1e9].describe())
    assert_describe(f[f.f > 1e9].f.describe().compute(on=cluster), df[df.f > 1e9].f.describe())


def test_describe_of_an_all_missing_column_is_nan_except_the_count(cluster):
    df = pd.DataFrame({"x": [np.nan, np.nan, np.nan], "i": [1, 2, 3]})
    assert_describe(wgt.frame(df).describe().compute(on=cluster), df.describe())


def test_describe_and_count_of_a_zero_row_dataframe(cluster):
    df = make_frame(0).iloc[:0]
    f = wgt.frame(df)
    assert_same(f.count().compute(on=cluster), df.count())
    assert_describe(f.describe().compute(on=cluster), df.describe())


GROUP_SPEC = {
    "n": ("f", "count"),
    "size": ("f", "size"),
    "total": ("f", "sum"),
    "mean": ("f", "mean"),
    "lo": ("f", "min"),
    "hi": ("f", "max"),
    "var": ("f", "var"),
    "std": ("f", "std"),
    "distinct": ("f", "nunique"),
    "median": ("f", "median"),
    "middle": ("f", "quantile"),
    "itotal": ("big", "sum"),
    "imean": ("big", "mean"),
    "ilo": ("big", "min"),
    "ihi": ("big", "max"),
    "imedian": ("big", "median"),
    "slo": ("s", "min"),
    "shi": ("s", "max"),
    "sdistinct": ("s", "nunique"),
    "btotal": ("b", "sum"),
    "bmean": ("b", "mean"),
}
APPROX_LABELS = {"total", "mean", "var", "std", "imean", "bmean"}


def assert_grouped(got: Any, expected: pd.DataFrame) -> None:
    assert_frame(got, expected, lambda label: label in APPROX_LABELS)


def test_groupby_of_no_rows_is_empty_with_pandas_dtypes(cluster):
    df = make_frame(0)
    f = wgt.frame(df)
    got = f[f.f > 1e9].groupby("g").agg(**GROUP_SPEC).compute(on=cluster)
    assert_grouped(got, df[df.f > 1e9].groupby("g").agg(**GROUP_SPEC))
    got = f[f.f > 1e9].groupby(["g", "m"]).size().compute(on=cluster)
    assert_same(got, df[df.f > 1e9].groupby(["g", "m"]).size())


def test_groupby_of_a_zero_row_dataframe(cluster):
    df = make_frame(0).iloc[:0]
    got = wgt.frame(df).groupby("g").agg(**GROUP_SPEC).compute(on=cluster)
    assert_grouped(got, df.groupby("g").agg(**GROUP_SPEC))


def test_all_missing_groups_reduce_like_pandas(cluster):
    df = make_frame(0)
    df.loc[df.g == "p", ["f", "s"]] = np.nan  # every value of group p is missing
    assert df[df.g == "p"].f.isna().all() and (df.g == "p").sum() > 1
    got = wgt.frame(df).groupby("g", dropna=False).agg(**GROUP_SPEC).compute(on=cluster)
    assert_grouped(got, df.groupby("g", dropna=False).agg(**GROUP_SPEC))


@pytest.mark.parametrize("func", NUMERIC_FUNCS)
def test_single_row_frame_reduces_like_pandas(cluster, func):
    df = make_frame(0)
    one = df[df.f.notna()].iloc[:1]
    f = wgt.frame(one)
    assert_same(getattr(f.f, func)().compute(on=cluster), getattr(one.f, func)())
    assert_same(getattr(f.big, func)().compute(on=cluster), getattr(one.big, func)())


def test_single_row_frame_groups_and_describes_like_pandas(cluster):
    df = make_frame(0)
    one = df[df.f.notna() & df.g.notna()].iloc[:1]
    f = wgt.frame(one)
    assert_grouped(
        f.groupby("g").agg(**GROUP_SPEC).compute(on=cluster), one.groupby("g").agg(**GROUP_SPEC)
    )
    assert_describe(f.describe().compute(on=cluster), one.describe())


# --- expressions ---------------------------------------------------------------------------------

Expression = Callable[[Any], Any]  # works on wgt.frame(df) and on df alike

ARITHMETIC: dict[str, Expression] = {
    "float + int": lambda d: d.f + d.m,
    "int + int beyond 2**53": lambda d: d.big + d.m,
    "int - literal": lambda d: d.m - 10,
    "literal - float": lambda d: 10 - d.f,
    "float * int": lambda d: d.f * d.m,
    "int * int": lambda d: d.m * d.m,
    "float / int": lambda d: d.f / d.m,
    "int / int": lambda d: d.big / d.m,
    "literal / int": lambda d: 1 / d.m,
    "int // int": lambda d: d.big // d.m,
    "negative int // literal": lambda d: (-d.m) // 4,
    "int % int": lambda d: d.big % d.m,
    "int % negative literal": lambda d: d.m % -4,
    "float // literal": lambda d: d.f // 7,
    "float % literal": lambda d: d.f % 7,
    "float % negative literal": lambda d: d.f % -2.5,
    "int ** 2": lambda d: d.m**2,
    "int ** 5": lambda d: d.m**5,
    "float ** 2": lambda d: d.f**2,
    "float ** 0": lambda d: d.f**0,
    "float ** 0.5": lambda d: d.f.abs() ** 0.5,
    "-float": lambda d: -d.f,
    "-int": lambda d: -d.big,
    "abs(float)": lambda d: abs(d.f),
    "int.abs()": lambda d: d.m.abs(),
    "float.fillna(int)": lambda d: d.f.fillna(-1),
    "float.fillna(float)": lambda d: d.f.fillna(0.5),
    "bool * int": lambda d: d.b * d.m,
    "bool + literal": lambda d: d.b + 1,
    "bool / literal": lambda d: d.b / 2,
    "float > int (as a column)": lambda d: d.f > d.m,
}


@pytest.mark.parametrize("name", list(ARITHMETIC))
@pytest.mark.parametrize("func", ["count", "sum", "min", "max"])
def test_arithmetic_of_columns_equals_pandas(cluster, name, func):
    df = make_frame(0)
    f = wgt.frame(df)
    build = ARITHMETIC[name]
    got = getattr(f.assign(r=build(f)).r, func)().compute(on=cluster)
    assert_same(got, getattr(df.assign(r=build(df)).r, func)(), approx=func in APPROX_FUNCS)


SEMANTICS: dict[str, tuple[pd.DataFrame, Expression]] = {
    "int // int and int % int": (
        pd.DataFrame({"a": [7, -7, 0, 5, -(2**63)], "d": [2, -2, 3, -1, -1]}),
        lambda d: d.a // d.d + d.a % d.d,
    ),
    "float // float is floor division of the exact values": (
        pd.DataFrame({"a": [1.0, 2.0, 0.7], "d": [0.1, 0.1, 0.1]}),
        lambda d: d.a // d.d,
    ),
    "float % float is Python's remainder": (
        pd.DataFrame({"a": [5.3, 1e17, -1e20, 2.5], "d": [0.1, 3.0, 7.0, 0.3]}),
        lambda d: d.a % d.d,
    ),
    "float % infinity": (
        pd.DataFrame({"a": [5.0, -5.0, 0.5], "d": [np.inf, np.inf, -np.inf]}),
        lambda d: d.a % d.d,
    ),
    "float ** 2 is numpy's square": (
        pd.DataFrame({"a": np.random.default_rng(11).uniform(0.0, 10.0, 200)}),
        lambda d: d.a**2,
    ),
    "-bool is logical not": (
        pd.DataFrame({"a": [True, False, True]}),
        lambda d: -d.a,
    ),
    "bool + bool is logical or": (
        pd.DataFrame({"a": [True, False, True, False], "d": [True, True, False, False]}),
        lambda d: d.a + d.d,
    ),
    "abs(bool) stays bool": (
        pd.DataFrame({"a": [True, False, True]}),
        lambda d: abs(d.a),
    ),
}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # pandas: inf - inf
@pytest.mark.parametrize("name", list(SEMANTICS))
@pytest.mark.parametrize("func", ["sum", "min", "max"])
def test_arithmetic_edge_semantics_are_pandas(cluster, name, func):
    df, build = SEMANTICS[name]
    f = wgt.frame(df)
    got = getattr(f.assign(r=build(f)).r, func)().compute(on=cluster)
    assert_same(got, getattr(df.assign(r=build(df)).r, func)(), approx=func in APPROX_FUNCS)


def test_an_integer_divided_by_zero_fails_the_query_saying_what_pandas_would_do(cluster):
    df = pd.DataFrame({"a": [7, -7, 0, 5], "d": [1, 0, 2, 2]})
    f = wgt.frame(df)
    for build in (lambda d: d.a // d.d, lambda d: d.a % d.d):
        with pytest.raises(wgt.FrameError, match=r"divided by 0.*float64"):
            f.assign(r=build(f)).r.sum().compute(on=cluster)
    assert f.assign(r=f.a // 2).r.sum().compute(on=cluster) == (df.a // 2).sum()


def test_float_powers_are_correctly_rounded(cluster):
    """x ** n for n >= 3 is correctly rounded, as C's pow: numpy's SIMD power on this kind of
    machine is up to 0.61 ulp off (it differs from math.pow in ~5% of values), so the exact
    oracle here is math.pow, and numpy agrees to 1 ulp."""
    x = np.random.default_rng(12).uniform(0.0, 10.0, 2_000)
    f = wgt.frame(pd.DataFrame({"a": x}))
    for n in (3, 7, 13):
        exact = np.array([math.pow(v, n) for v in x])
        q = f.assign(r=f.a**n).r
        assert q.min().compute(on=cluster) == exact.min()
        assert q.max().compute(on=cluster) == exact.max()
        assert q.quantile(0.3).compute(on=cluster) == pd.Series(exact).quantile(0.3)
        got_sum = q.sum().compute(on=cluster)
        assert got_sum == pytest.approx((x**n).sum(), rel=1e-13)


MASKS: dict[str, Expression] = {
    "float > literal": lambda d: d.f > 10,
    "float <= int column": lambda d: d.f <= d.m,
    "float == 0 (both zeros)": lambda d: d.f == 0,
    "float != float (NaN)": lambda d: d.f != d.f,
    "float > NaN": lambda d: d.f > np.nan,
    "int >= literal beyond 2**53": lambda d: d.big >= 2**53 + 1,
    "int < float literal": lambda d: d.m < 2.5,
    "bool column": lambda d: d.b == True,  # noqa: E712 (pandas' elementwise ==)
    "~bool": lambda d: ~d.b,
    "and": lambda d: (d.f > 0) & (d.m < 3),
    "or": lambda d: (d.f > 50) | d.b,
    "not (and)": lambda d: ~((d.f > 0) & d.b),
    "isna float": lambda d: d.f.isna(),
    "notna float": lambda d: d.f.notna(),
    "isna str": lambda d: d.s.isna(),
    "notna object": lambda d: d.o.notna(),
    "isna categorical": lambda d: d.cat.isna(),
    "isin ints": lambda d: d.m.isin([1, -2, 6]),
    "isin ints with floats": lambda d: d.m.isin([1.0, 2.5, -3]),
    "isin floats with NaN": lambda d: d.f.isin([np.nan, 0.0]),
    "isin empty": lambda d: d.m.isin([]),
    "isin bools": lambda d: d.b.isin([True]),
    "between": lambda d: d.f.between(-50, 50),
    "between neither": lambda d: d.m.between(-3, 3, inclusive="neither"),
    "between left": lambda d: d.m.between(-3, 3, inclusive="left"),
    "between right": lambda d: d.f.between(-50.0, 50.0, inclusive="right"),
    "abs > literal": lambda d: d.f.abs() > 80,
    "fillna == literal": lambda d: d.f.fillna(0) == 0,
    "arithmetic > literal": lambda d: d.f * 2 + d.m > 3,
    "str == literal": lambda d: d.s == "UA",
    "str != literal (missing is !=)": lambda d: d.s != "UA",
    "str < literal": lambda d: d.s < "DL",
    "str >= literal not in the data": lambda d: d.s >= "C",
    "literal == str": lambda d: "DL" == d.s,  # noqa: SIM300 (reflected operand)
    "literal < str": lambda d: "B" < d.s,  # noqa: SIM300 (reflected operand)
    "str == literal not in the data": lambda d: d.s == "ZZ",
    "str isin": lambda d: d.s.isin(["UA", "DL", "ZZ"]),
    "str isin with None": lambda d: d.s.isin(["UA", None]),
    "str between": lambda d: d.s.between("AA", "DL"),
    "object == literal": lambda d: d.o == "AA",
    "object != literal": lambda d: d.o != "AA",
    "object > literal": lambda d: d.o > "B6",
    "object isin with None": lambda d: d.o.isin(["EV", None]),
    "categorical == first category": lambda d: d.cat == "zeta",
    "categorical == other category": lambda d: d.cat == "alpha",
    "categorical != category": lambda d: d.cat != "mid",
    "categorical == unused category": lambda d: d.cat == "unused",
    "categorical isin": lambda d: d.cat.isin(["zeta", "mid"]),
    "categorical isin with None": lambda d: d.cat.isin(["alpha", None]),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_conditions_select_the_rows_pandas_selects(cluster, name):
    df = make_frame(0)
    f = wgt.frame(df)
    build = MASKS[name]
    # big is random 56-bit: its sum names the set of rows kept
    assert_same(f[build(f)].big.sum().compute(on=cluster), df[build(df)].big.sum())


@pytest.mark.parametrize(
    "build",
    [
        lambda d: d.s.fillna("UA") == "UA",
        lambda d: d.s.fillna("ZZ") == "ZZ",
        lambda d: d.s.fillna("UA").isin(["UA", "AA"]),
    ],
    ids=["fillna(present) ==", "fillna(absent) ==", "fillna isin"],
)
def test_fillna_on_a_string_column_then_compare(cluster, build):
    df = make_frame(0)
    f = wgt.frame(df)
    assert_same(f[build(f)].big.sum().compute(on=cluster), df[build(df)].big.sum())


def test_assign_derives_columns_from_series_scalars_and_functions(cluster):
    df = make_frame(0)
    f = wgt.frame(df)
    g = f.assign(ratio=f.f / f.m, seven=7, flag=lambda d: d.ratio > 0, big2=lambda d: d.big * 2)
    p = df.assign(ratio=df.f / df.m, seven=7, flag=lambda d: d.ratio > 0, big2=lambda d: d.big * 2)
    assert g.columns == list(p.columns)
    assert_same(g.ratio.sum().compute(on=cluster), p.ratio.sum(), approx=True)
    assert_same(g.seven.sum().compute(on=cluster), p.seven.sum())
    assert_same(g.flag.sum().compute(on=cluster), p.flag.sum())
    assert_same(g[g.flag].big2.max().compute(on=cluster), p[p.flag].big2.max())
    assert_same(g.groupby("g").ratio.median().compute(on=cluster), p.groupby("g").ratio.median())
    assert_same(g.count().compute(on=cluster), p.count())


QUERIES = [
    "f > 0 and m < 3",
    "f > 50 or not b",
    "not (f > 0)",
    "~b",
    "b",
    "m in [1, 3, 5]",
    "m not in [1, 3]",
    "s in ['UA', 'DL']",
    "s not in @carriers",
    "o == 'AA'",
    "cat == 'alpha'",
    "f > @threshold",
    "m == @small",
    "-3 < m <= 4",
    "f.isna()",
    "f.notna() and b",
    "f.abs() > 80",
    "f.between(-20, 20)",
    "s.isin(['AA'])",
    "`my col` > 2",
    "f * 2 + m > 3",
    "m % 2 == 1",
    "m // 2 == 1",
    "f ** 2 > 100",
    "-f > 0",
    "f != f",
    "big > 0",
    "(f > 0) & (m < 3)",
    "(f > 50) | b",
    "f > 0 & m < 3",
    "m == [1, 2]",
    "s != ['UA', 'DL']",
]


@pytest.mark.parametrize("text", QUERIES)
def test_query_selects_the_rows_pandas_query_selects(cluster, text):
    df = make_frame(0).assign(**{"my col": np.arange(60) % 5})
    threshold, small, carriers = 25.5, 2, ["UA", "DL"]  # noqa: F841 (read by both queries)
    got = wgt.frame(df).query(text).big.sum().compute(on=cluster)
    assert_same(got, df.query(text).big.sum())


def test_query_takes_local_dict_and_string_literals_as_written(cluster):
    df = pd.DataFrame({"email": ["a@b.c", "x@y.z", "plain"], "n": [1, 2, 4]})
    f = wgt.frame(df)
    assert_same(f.query("n > @lim", local_dict={"lim": 1}).n.sum().compute(on=cluster), np.int64(6))
    assert_same(
        f.query("email == 'a@b.c'").n.sum().compute(on=cluster),
        df.query("email == 'a@b.c'").n.sum(),
    )


# --- groupby -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dropna", [True, False])
@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.parametrize("keys", ["g", ["g", "b"], "m", "cat", ["cat", "g"]], ids=str)
def test_groupby_named_aggregations_equal_pandas(cluster, seed, keys, dropna, sort):
    df = make_frame(seed)
    got = wgt.frame(df).groupby(keys, dropna=dropna, sort=sort).agg(**GROUP_SPEC)
    assert_grouped(
        got.compute(on=cluster), df.groupby(keys, dropna=dropna, sort=sort).agg(**GROUP_SPEC)
    )


@pytest.mark.parametrize("dropna", [True, False])
def test_groupby_on_an_object_string_key_gives_pandas_index(cluster, dropna):
    df = make_frame(0)
    grouped = wgt.frame(df).groupby("o", dropna=dropna)
    assert_same(
        grouped.f.sum().compute(on=cluster), df.groupby("o", dropna=dropna).f.sum(), approx=True
    )
    keys = ["g", "o"]
    got = wgt.frame(df).groupby(keys, dropna=dropna).size().compute(on=cluster)
    assert_same(got, df.groupby(keys, dropna=dropna).size())


GROUPED_FUNCS = ["sum", "mean", "count", "min", "max", "var", "std", "nunique", "median"]


@pytest.mark.parametrize("access", ["attribute", "item"])
@pytest.mark.parametrize("func", GROUPED_FUNCS)
@pytest.mark.parametrize("column", ["f", "big", "b"])
def test_grouped_column_reductions_equal_pandas(cluster, access, func, column):
    df = make_frame(0)
    grouped, expected = wgt.frame(df).groupby("g", sort=False), df.groupby("g", sort=False)
    series = getattr(grouped, column) if access == "attribute" else grouped[column]
    got = getattr(series, func)().compute(on=cluster)
    assert_same(got, getattr(expected[column], func)(), approx=func in APPROX_FUNCS)


@pytest.mark.parametrize("func", ["count", "min", "max", "nunique"])
def test_grouped_string_column_reductions_equal_pandas(cluster, func):
    df = make_frame(1)
    for column in ("s", "o"):
        got = getattr(wgt.frame(df).groupby(["g", "b"])[column], func)()
        assert_same(got.compute(on=cluster), getattr(df.groupby(["g", "b"])[column], func)())


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.333, 0.5, 0.9, 0.999, 1.0])
def test_grouped_quantile_equals_pandas_exactly(cluster, q):
    df = make_frame(2)
    grouped, expected = (
        wgt.frame(df).groupby(["g", "b"], dropna=False),
        df.groupby(["g", "b"], dropna=False),
    )
    assert_same(grouped.f.quantile(q).compute(on=cluster), expected.f.quantile(q))
    assert_same(grouped.big.quantile(q).compute(on=cluster), expected.big.quantile(q))


@pytest.mark.parametrize(
    "spec",
    [
        {"f": ["mean", "max"]},
        {"f": ["count", "median", "nunique"], "big": ["sum", "min"]},
        {"f": "mean", "big": "sum"},
        {"f": ["mean"], "big": "sum"},
    ],
    ids=["one column, list", "two columns, lists", "strings", "list and string"],
)
def test_groupby_dict_aggregation_equals_pandas(cluster, spec):
    df = make_frame(0)
    got = wgt.frame(df).groupby("g").agg(spec).compute(on=cluster)
    expected = df.groupby("g").agg(spec)
    assert_frame(
        got,
        expected,
        lambda label: (label[-1] if isinstance(label, tuple) else "") in ("mean", "sum"),
    )


@pytest.mark.parametrize("dropna", [True, False])
@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.parametrize("keys", ["g", ["g", "s"], ["cat", "b"]], ids=str)
def test_groupby_size_equals_pandas(cluster, keys, dropna, sort):
    df = make_frame(0)
    got = wgt.frame(df).groupby(keys, dropna=dropna, sort=sort).size().compute(on=cluster)
    assert_same(got, df.groupby(keys, dropna=dropna, sort=sort).size())


def test_grouped_column_size_is_named_after_the_column(cluster):
    df = make_frame(0)
    grouped = wgt.frame(df).groupby("g")
    assert_same(grouped.f.size().compute(on=cluster), df.groupby("g").f.size())
    assert_same(grouped["f"].size().compute(on=cluster), df.groupby("g")["f"].size())


# --- chunked passes merge exactly ----------------------------------------------------------------


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("seed", SEEDS)
def test_results_do_not_depend_on_how_the_rows_are_chunked(cluster, seed):
    df = make_frame(seed)
    f = wgt.frame(df)
    result = f.f.sum().run(on=cluster)
    assert len(result.outcomes) > 3, "the fixture should cut the input into several chunks"
    assert_same(result.value, df.f.sum(), approx=True)
    for column, func in COLUMN_REDUCTIONS:
        got = getattr(f[column], func)().compute(on=cluster)
        assert_same(got, getattr(df[column], func)(), approx=func in APPROX_FUNCS)
    for column in ("f", "big"):
        got = f[column].quantile([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]).compute(on=cluster)
        assert_same(got, df[column].quantile([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]))
    assert_same(f.g.value_counts().compute(on=cluster), df.g.value_counts())
    for sort in (True, False):
        got = f.groupby(["g", "b"], dropna=False, sort=sort).agg(**GROUP_SPEC).compute(on=cluster)
        assert_grouped(got, df.groupby(["g", "b"], dropna=False, sort=sort).agg(**GROUP_SPEC))


# --- the flights of January 2013 -----------------------------------------------------------------

FLIGHT_SPEC = {
    "flights": ("flight", "size"),
    "arrived": ("arr_delay", "count"),
    "mean_delay": ("arr_delay", "mean"),
    "sd_delay": ("arr_delay", "std"),
    "var_delay": ("dep_delay", "var"),
    "median_delay": ("arr_delay", "median"),
    "typical_dep": ("dep_delay", "quantile"),
    "longest": ("air_time", "max"),
    "earliest": ("dep_time", "min"),
    "destinations": ("dest", "nunique"),
    "miles": ("distance", "sum"),
    "first_dest": ("dest", "min"),
}
FLIGHT_APPROX = {"mean_delay", "sd_delay", "var_delay"}


@pytest.mark.parametrize("keys", ["carrier", ["origin", "carrier"], ["origin", "dest"]], ids=str)
@pytest.mark.parametrize("sort", [True, False])
def test_flights_grouped_summary_equals_pandas(cluster, flights, keys, sort):
    got = wgt.frame(flights).groupby(keys, sort=sort).agg(**FLIGHT_SPEC).compute(on=cluster)
    expected = flights.groupby(keys, sort=sort).agg(**FLIGHT_SPEC)
    assert_frame(got, expected, lambda label: label in FLIGHT_APPROX)


@pytest.mark.parametrize("func", NUMERIC_FUNCS)
def test_flights_delay_reductions_equal_pandas(cluster, flights, func):
    got = getattr(wgt.frame(flights).arr_delay, func)().compute(on=cluster)
    assert_same(got, getattr(flights.arr_delay, func)(), approx=func in APPROX_FUNCS)


def test_flights_query_quantiles_equal_pandas(cluster, flights):
    text = "origin == 'JFK' and arr_delay > 0 and carrier in ['B6', 'DL', 'AA']"
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]
    query = wgt.frame(flights).query(text)
    assert_same(
        query.arr_delay.quantile(qs).compute(on=cluster), flights.query(text).arr_delay.quantile(qs)
    )
    assert_same(
        query.arr_delay.median().compute(on=cluster), flights.query(text).arr_delay.median()
    )
    grouped = query.groupby("carrier").dep_delay.quantile(0.9).compute(on=cluster)
    assert_same(grouped, flights.query(text).groupby("carrier").dep_delay.quantile(0.9))


def test_flights_describe_and_count_equal_pandas(cluster, flights):
    f = wgt.frame(flights)
    assert_describe(f.describe().compute(on=cluster), flights.describe())
    assert_same(f.count().compute(on=cluster), flights.count())
    assert_same(f.carrier.describe().compute(on=cluster), flights.carrier.describe())


@pytest.mark.parametrize("column", ["carrier", "origin", "dest", "air_time"])
def test_flights_value_counts_equal_pandas(cluster, flights, column):
    got = wgt.frame(flights)[column].value_counts().compute(on=cluster)
    assert_same(got, flights[column].value_counts())


def test_flights_filters_and_derived_columns_equal_pandas(cluster, flights):
    f = wgt.frame(flights)
    late = f[(f.arr_delay > 15) & f.origin.isin(["JFK", "LGA"])].assign(
        speed=lambda d: d.distance / d.air_time * 60
    )
    expected = flights[(flights.arr_delay > 15) & flights.origin.isin(["JFK", "LGA"])].assign(
        speed=lambda d: d.distance / d.air_time * 60
    )
    spec = {"n": ("speed", "count"), "fast": ("speed", "max"), "mean": ("speed", "mean")}
    got = late.groupby("carrier").agg(**spec).compute(on=cluster)
    assert_frame(got, expected.groupby("carrier").agg(**spec), lambda label: label == "mean")


# --- bad input -----------------------------------------------------------------------------------

BAD: dict[str, tuple[Callable[[Any], Any], str]] = {
    "unknown column by item": (lambda f: f["nope"], "'nope'"),
    "unknown column in groupby": (lambda f: f.groupby("nope"), "'nope'"),
    "unknown column in agg": (lambda f: f.groupby("g").agg(n=("nope", "sum")), "'nope'"),
    "unknown column in dict agg": (lambda f: f.groupby("g").agg({"nope": "sum"}), "'nope'"),
    "unknown column in a selection": (lambda f: f[["f", "nope"]], "'nope'"),
    "unknown column in query": (lambda f: f.query("nope > 1"), "'nope'"),
    "string column < number": (lambda f: f.s < 1, "'s'"),
    "number == string": (lambda f: f.f == "UA", "'f'"),
    "string column isin numbers": (lambda f: f.s.isin([1, 2]), "'s'"),
    "string column in query comparison": (lambda f: f.query("s > 1"), "'s'"),
    "order comparison of an unordered categorical": (lambda f: f.cat < "m", "'cat'"),
    "string column + number": (lambda f: f.s + 1, "'s'"),
    "number - string column": (lambda f: 1 - f.o, "'o'"),
    "string column * column": (lambda f: f.f * f.cat, "'cat'"),
    "abs of a string column": (lambda f: f.s.abs(), "'s'"),
    "string column in query arithmetic": (lambda f: f.query("s * 2 > 1"), "'s'"),
    "unsupported named aggregation": (lambda f: f.groupby("g").agg(n=("f", "mode")), "'mode'"),
    "unsupported dict aggregation": (
        lambda f: f.groupby("g").agg({"f": ["mean", "prod"]}),
        "'prod'",
    ),
    "unsupported grouped column agg": (lambda f: f.groupby("g").f.agg("first"), "'first'"),
    "sum of strings": (lambda f: f.s.sum(), "'s'"),
    "grouped mean of strings": (lambda f: f.groupby("g").agg(x=("o", "mean")), "'o'"),
    "** with a column exponent": (lambda f: f.f**f.m, "'**'"),
    "** with an expression exponent": (lambda f: f.m ** (f.m + 1), "'**'"),
    "** in query with a column exponent": (lambda f: f.query("f ** m > 1"), "'**'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_a_frame_error_naming_the_culprit_before_anything_runs(name):
    build, culprit = BAD[name]
    f = wgt.frame(make_frame(0))
    with pytest.raises(wgt.FrameError) as caught:
        build(f)
    assert culprit in str(caught.value)


def test_an_unknown_attribute_is_an_attribute_error_naming_it():
    f = wgt.frame(make_frame(0))
    with pytest.raises(AttributeError, match="'nope'"):
        f.nope  # noqa: B018
    with pytest.raises(AttributeError, match="'nope'"):
        f.groupby("g").nope  # noqa: B018
    assert not hasattr(f, "nope")


# --- a lying worker ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lying_cluster():
    faults = {"local-0": wgt.faults.Liar(rate=1.0, seed=7)}
    with wgt.LocalCluster(workers=3, faults=faults) as running:
        yield running


def test_a_lying_worker_cannot_change_an_aggregate(flights, monkeypatch):
    # a few chunks, so the liar is drawn for some of them
    monkeypatch.setattr(frame_query, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(frame_query, "CHUNK_BYTES", 100_000)
    spec = {"n": ("arr_delay", "count"), "mean": ("arr_delay", "mean"), "hi": ("dep_delay", "max")}
    query = wgt.frame(flights).groupby("carrier").agg(**spec)
    faults = {"local-0": wgt.faults.Liar(rate=1.0, seed=7)}
    with wgt.LocalCluster(workers=3, faults=faults) as lying:
        result = query.run(on=lying, verify="redundancy", replicas=2)
    assert result.ok and len(result.outcomes) > 2
    assert_frame(
        result.value, flights.groupby("carrier").agg(**spec), lambda label: label == "mean"
    )
    rows = result.verification
    liar, honest = rows[rows.worker == "local-0"], rows[rows.worker != "local-0"]
    assert result.disagreements >= 1
    assert set(rows[rows.outcome == "dissented"].worker) == {"local-0"}
    assert "agreed" not in set(liar.outcome)
    assert set(honest.outcome) == {"agreed"}
    assert all(
        not outcome.dissenters or outcome.dissenters == ("local-0",) for outcome in result.outcomes
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda f: f.arr_delay.sum(),
        lambda f: f.carrier.value_counts(),
        lambda f: f.groupby("origin").agg(m=("arr_delay", "median"), u=("dest", "nunique")),
        lambda f: f.arr_delay.quantile([0.1, 0.5, 0.9]),
    ],
    ids=["sum", "value_counts", "median and nunique", "quantiles"],
)
def test_a_lying_worker_is_outvoted_in_every_pass(lying_cluster, flights, build):
    query = build(wgt.frame(flights))
    result = query.run(on=lying_cluster, verify="redundancy", replicas=2)
    assert result.ok
    expected = build(flights)
    if isinstance(expected, pd.DataFrame):
        assert_frame(result.value, expected, lambda _: False)
    else:
        assert_same(result.value, expected, approx=isinstance(expected, np.floating))
    for run in query.passes:
        assert run.ok
        lies = [t for t in run.tasks if t.worker == "local-0"]
        assert all(t.outcome != "agreed" for t in lies), run.verification
