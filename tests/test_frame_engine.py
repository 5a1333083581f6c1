"""The engine under wgt.frame: generated modules, columnar payloads, merges, quantile passes.

Every case is checked against pandas on real sandboxes; the edge cases here are the engine's own
(code widths at their limits, chunk and lane boundaries, hostile records, keys that differ only
in their last bits), where a layout mistake would give a plausible wrong answer.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

import wgtlab as wgt
from wgtlab.errors import FrameError
from wgtlab.frame.api import QueryJob
from wgtlab.frame.kernel import FrameKernel, PayloadCache, merge
from wgtlab.frame.plan import Accumulator, GroupKey, PassPlan, code_encoding
from wgtlab.frame.query import Execution
from wgtlab.frame.source import DataFrameSource

pytestmark = pytest.mark.usefixtures("private_cache")


def first_pass(query) -> tuple[QueryJob, FrameKernel, list]:
    """The first pass's job of ``query`` (not run), its kernel and its chunks."""
    jobs = []

    class Stop(Exception):
        pass

    def capture(job):
        jobs.append(job)
        raise Stop

    with pytest.raises(Stop):
        query.job().run_passes(capture)
    job = jobs[0]
    return job, job.kernel_obj, list(job.plan().source)


# --- dictionary codes at their width limits ------------------------------------------------------


@pytest.mark.parametrize(
    ("distinct", "encoding"),
    [(3, "code8"), (254, "code8"), (255, "code16"), (65534, "code16"), (65535, "code")],
)
def test_group_keys_of_every_code_width_group_as_pandas(cluster, distinct, encoding) -> None:
    assert code_encoding(distinct) == encoding
    rng = np.random.default_rng(distinct)
    rows = max(2 * distinct, 1000)
    words = np.array([f"w{i:06d}" for i in range(distinct)], dtype=object)
    keys = words[np.arange(rows) % distinct]  # every word appears, and some rows miss a key
    keys = rng.permutation(np.concatenate([keys, np.full(rows // 20, None)]))
    rows = len(keys)
    df = pd.DataFrame({"k": pd.array(keys, dtype="str"), "x": rng.normal(size=rows)})
    got = wgt.frame(df).groupby("k").x.sum().compute(on=cluster)
    want = df.groupby("k").x.sum()
    pd.testing.assert_series_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-12)
    _, kernel, _ = first_pass(wgt.frame(df).groupby("k").x.sum())
    assert [c.encoding for c in kernel.plan.columns if c.name == "k"] == [encoding]


def test_missing_keys_form_the_last_group_with_dropna_false(cluster) -> None:
    df = pd.DataFrame(
        {"k": pd.array(["b", None, "a", None, "b"], dtype="str"), "x": [1.0, 2, 3, 4, 5]}
    )
    got = wgt.frame(df).groupby("k", dropna=False).x.sum().compute(on=cluster)
    pd.testing.assert_series_equal(got, df.groupby("k", dropna=False).x.sum())
    assert got.index[-1] != got.index[-1]  # NaN: the missing key's group, last as in pandas


# --- chunks and lanes ----------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 4, 5, 7, 8, 9, 1023, 20_001])
def test_ungrouped_reductions_at_every_lane_and_chunk_boundary(cluster, rows) -> None:
    rng = np.random.default_rng(rows)
    x = rng.normal(50, 10, rows)
    x[rng.random(rows) < 0.1] = np.nan
    df = pd.DataFrame({"x": x, "i": rng.integers(-(2**62), 2**62, rows)})
    f = wgt.frame(df)
    got = f.x.agg(["sum", "count", "min", "max", "mean", "std"]).compute(on=cluster)
    want = df.x.agg(["sum", "count", "min", "max", "mean", "std"])
    pd.testing.assert_series_equal(got, want, check_exact=False, rtol=1e-12, atol=1e-9)
    assert f.i.sum().compute(on=cluster) == df.i.sum()  # int64 wraps exactly as numpy's does
    top = f.i.max().compute(on=cluster)
    assert top == df.i.max() if rows else np.isnan(top)


def test_many_chunks_give_the_one_chunk_answer(cluster, monkeypatch) -> None:
    from wgtlab.frame import query

    rng = np.random.default_rng(5)
    df = pd.DataFrame({"k": rng.integers(0, 7, 50_000), "x": rng.normal(size=50_000).round(3)})
    whole = wgt.frame(df).groupby("k").agg(s=("x", "sum"), v=("x", "var"), m=("x", "median"))
    one = whole.compute(on=cluster)
    monkeypatch.setattr(query, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(query, "MIN_CHUNK_ROWS", 100)
    many = wgt.frame(df).groupby("k").agg(s=("x", "sum"), v=("x", "var"), m=("x", "median"))
    result = many.run(on=cluster)
    assert len(result.outcomes) > 50
    pd.testing.assert_frame_equal(result.value, one, check_exact=False, rtol=1e-12)
    want = df.groupby("k").agg(s=("x", "sum"), v=("x", "var"), m=("x", "median"))
    pd.testing.assert_frame_equal(one, want, check_exact=False, rtol=1e-12)
    assert (one.m == want.m).all()  # medians exact


# --- quantile windows ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # pandas: inf - inf
@pytest.mark.parametrize(
    "values",
    [
        1.0 + np.arange(10_000) * np.finfo(float).eps,  # keys differ in their last bits only
        np.concatenate([np.full(5_000, -0.0), np.full(5_000, 0.0), [np.inf, -np.inf]]),
        np.repeat([3.0, 7.0], 4_999),
        np.array([np.nan] * 10 + [42.0]),
        np.array([np.nan] * 5),
    ],
    ids=["last-bits", "signed-zero-inf", "two-values", "one-present", "all-missing"],
)
def test_exact_quantiles_on_hard_value_sets(cluster, values) -> None:
    df = pd.DataFrame({"x": np.random.default_rng(1).permutation(values)})
    f = wgt.frame(df)
    for q in (0.0, 0.1, 0.5, 0.95, 1.0):
        got, want = f.x.quantile(q).compute(on=cluster), df.x.quantile(q)
        assert got == want or (np.isnan(got) and np.isnan(want)), (q, got, want)
    got, want = f.x.median().compute(on=cluster), df.x.median()
    assert got == want or (np.isnan(got) and np.isnan(want))


def test_quantiles_of_int64_extremes(cluster) -> None:
    ints = np.array([-(2**63), 2**63 - 1, 0, -1, 1, 2**53 + 1, 2**53 + 3], dtype=np.int64)
    df = pd.DataFrame({"i": np.tile(ints, 3)})
    f = wgt.frame(df)
    assert f.i.min().compute(on=cluster) == df.i.min()
    assert f.i.max().compute(on=cluster) == df.i.max()
    for q in (0.0, 0.25, 0.5, 0.9, 1.0):
        assert f.i.quantile(q).compute(on=cluster) == df.i.quantile(q), q


def test_a_quantile_takes_at_most_five_passes(cluster) -> None:
    values = 1.0 + np.arange(100_000) * np.finfo(float).eps * 3
    q = wgt.frame(pd.DataFrame({"x": values})).x.quantile(0.37)
    result = q.run(on=cluster)
    assert result.value == pd.Series(values).quantile(0.37)
    assert 1 <= len(q.passes) <= 5


# --- payloads: cached, identical, keyed by what they hold -----------------------------------------


def test_cached_payloads_are_the_bytes_and_digest_of_a_fresh_encoding() -> None:
    df = pd.DataFrame({"x": np.arange(10_000, dtype=float), "y": np.arange(10_000) % 3})
    f = wgt.frame(df)
    _, kernel, chunks = first_pass(f[f.y == 1].x.sum())
    for chunk in chunks:
        payload, digest = kernel.payload(chunk)
        again = kernel.payload(chunk)
        assert again[0] is payload  # served from the frame's cache
        assert payload == kernel.encode(chunk)
        assert digest == hashlib.sha256(payload).digest()


def test_payload_cache_keeps_its_budget_and_drops_least_recent() -> None:
    cache = PayloadCache(budget=10)
    cache.put("a", b"12345", b"da")
    cache.put("b", b"12345", b"db")
    assert cache.get("a") == (b"12345", b"da")  # a is now the most recent
    cache.put("c", b"123", b"dc")
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", b"x" * 11, b"dh")
    assert cache.get("huge") is None


def test_different_filters_never_share_a_payload_or_a_module() -> None:
    df = pd.DataFrame(
        {"x": np.arange(100, dtype=float), "c": pd.array(["a", "b"] * 50, dtype="str")}
    )
    f = wgt.frame(df)
    _, ka, chunks = first_pass(f[f.c == "a"].x.sum())
    _, kb, _ = first_pass(f[f.c == "b"].x.sum())
    assert ka.digest != kb.digest  # the literal's code is in the module
    assert ka.payload(chunks[0]) == kb.payload(chunks[0])  # same columns: same bytes


# --- hostile records ------------------------------------------------------------------------------


def test_records_that_break_the_layout_are_rejected() -> None:
    df = pd.DataFrame({"k": [1, 2, 1], "x": [1.0, 2.0, 3.0]})
    _, kernel, _ = first_pass(wgt.frame(df).groupby("k").x.sum())
    records = np.zeros(2, dtype=kernel.plan.record_dtype())
    records["key"] = [0, 1]
    head = (2).to_bytes(8, "little") + bytes(8)
    good = head + records.tobytes()
    assert len(kernel.decode(good).records) == 2
    beyond, negative = records.copy(), records.copy()
    beyond["key"] = [1, kernel.key_bound]  # past the key space: no group has it
    negative["key"] = [-1, 0]
    minus = records.copy()
    minus["a0_0"] = [3, -1]  # the size of a group
    for bad, why in [
        (b"", "16 plus whole"),
        (good[:-1], "16 plus whole"),
        ((3).to_bytes(8, "little") + good[8:], "said 3 records"),
        (good[:8] + (2).to_bytes(8, "little") + good[16:], "unknown flags"),
        (head + beyond.tobytes(), "outside"),
        (head + negative.tobytes(), "outside"),
        (head + minus.tobytes(), "negative count"),
    ]:
        with pytest.raises(FrameError, match=why):
            kernel.decode(bad)


def test_a_lying_worker_cannot_change_a_group_by(cluster) -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"k": rng.integers(0, 5, 30_000), "x": rng.normal(size=30_000)})
    liar = wgt.faults.Liar(rate=1.0, seed=7)
    with wgt.LocalCluster(workers=3, faults={"local-0": liar}) as lying:
        f = wgt.frame(df, chunk_rows=3_000)  # 10 chunks x 2 replicas on 3 workers: the liar works
        q = f.groupby("k").agg(m=("x", "mean"), n=("x", "size"), t=("x", "max"))
        result = q.run(on=lying, verify="redundancy", replicas=2)
    want = df.groupby("k").agg(m=("x", "mean"), n=("x", "size"), t=("x", "max"))
    pd.testing.assert_frame_equal(result.value, want, check_exact=False, rtol=1e-12)
    # every lie is caught: outvoted, or (a byte that breaks the records) rejected on arrival
    caught = result.verification.query("outcome in ('dissented', 'rejected')")
    assert result.ok and len(caught) >= 1 and set(caught.worker) == {"local-0"}


# --- merges --------------------------------------------------------------------------------------


def test_welford_moments_merge_exactly_across_parts() -> None:
    x = pd.DataFrame({"x": np.random.default_rng(9).normal(1e6, 1.0, 9_999)})
    source = DataFrameSource(x)
    from wgtlab.frame.codegen import generate
    from wgtlab.frame.expr import Column

    col = Column("f64", "x")
    plan = PassPlan(None, (), (Accumulator("count", col), Accumulator("welford", col)))
    kernel = FrameKernel(
        plan, generate(plan, lambda c: pd.Index([])), [source.array("x", "f64")], label="t"
    )
    sandbox = wgt.Sandbox(wgt.ResourceLimits())
    rows = source.rows_table()
    parts = [
        kernel.decode(sandbox.run(kernel.module, kernel.encode(rows.iloc[a:b])).output)
        for a, b in [(0, 1), (1, 5000), (5000, 9999)]
    ]
    merged = merge(plan, parts)
    count, (mean, m2) = merged.fields[0][0][0], merged.fields[1]
    assert count == 9_999
    assert mean[0] == pytest.approx(x.x.mean(), rel=1e-15)
    assert m2[0] / (count - 1) == pytest.approx(x.x.var(), rel=1e-12)


def test_group_keys_beyond_2_62_combinations_are_refused_before_running() -> None:
    with pytest.raises(FrameError, match="2\\*\\*62"):
        PassPlan(None, tuple(GroupKey(f"k{i}", 1 << 21) for i in range(3)), ())


def test_execution_prepares_key_dictionaries_before_the_first_pass() -> None:
    df = pd.DataFrame({"a": pd.array(["x", "y"] * 5, dtype="str"), "b": [1, 2] * 5})
    f = wgt.frame(df)
    query = f.groupby(["a", "b"]).size()
    Execution(query.request, lambda job: None, None, "t")  # type: ignore[arg-type, return-value]
    assert set(f._source._dictionaries) == {"a", "b"}


def test_many_groups_take_every_merge_path_and_stay_pandas(cluster, monkeypatch) -> None:
    from wgtlab.frame import kernel

    rng = np.random.default_rng(21)
    rows = 60_000
    df = pd.DataFrame({"user": rng.integers(0, 20_000, rows), "x": rng.normal(size=rows).round(2)})
    df.loc[rng.random(rows) < 0.1, "x"] = np.nan
    want = df.groupby("user").agg(
        s=("x", "sum"), n=("x", "count"), m=("x", "median"), d=("x", "nunique")
    )
    want_q90 = df.groupby("user").x.quantile(0.9)
    for dense in (kernel.DENSE_KEYS, 0):  # a dense table of keys, then np.unique's
        monkeypatch.setattr(kernel, "DENSE_KEYS", dense)
        got = (
            wgt.frame(df, chunk_rows=7_000)
            .groupby("user")
            .agg(s=("x", "sum"), n=("x", "count"), m=("x", "median"), d=("x", "nunique"))
            .compute(on=cluster)
        )
        q90 = wgt.frame(df).groupby("user").x.quantile(0.9).compute(on=cluster)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
        assert (got.m.to_numpy() == want.m.to_numpy()).sum() == want.m.notna().sum()  # exact
        pd.testing.assert_series_equal(q90, want_q90, check_exact=True)


def test_quantile_counts_that_do_not_add_up_are_a_frame_error() -> None:
    """A worker lying in one quantile pass (hash mode: nobody outvotes it) must not crash the
    bookkeeping with an index error: the counts it gave are checked against the first pass."""
    from wgtlab.frame.quantiles import _Buckets, _Targets, _Windows

    targets = _Targets(np.array([0]), np.array([5]))  # rank 5 of group 0, in window 0
    windows = _Windows(
        np.array([0]), np.zeros(1, np.uint64), np.full(1, 9, np.uint64), np.zeros(1, np.int64)
    )
    short = _Buckets(
        np.array([2, 1]),
        np.array([1, 4], np.uint64),
        np.array([3, 4], np.uint64),
        np.array([0, 0]),
        1,
    )
    with pytest.raises(FrameError, match="do not add up"):
        targets.narrow(windows, short)


def test_a_pass_with_failed_chunks_shows_in_the_result_under_continue(cluster) -> None:
    """With on_error('continue') a query combines the chunks that verified; a failure in any
    pass (here the quantile pass, out of fuel) makes the returned result say so."""
    values = np.random.default_rng(4).normal(size=40_000)
    f = wgt.frame(pd.DataFrame({"x": values}), chunk_rows=10_000)
    job = f.x.median().job()
    job.on_error("continue").limits(max_cpu_cycles=400_000)  # the aggregate pass fits, not the next
    result = job.run(on=cluster, cache=False)
    assert not result.ok
    assert any(c.status != "verified" for c in result.outcomes)
    assert any(not p.ok for p in job.query.passes)


@pytest.fixture(scope="module")
def dated() -> pd.DataFrame:
    from wgtlab import samples

    flights = samples.flights()
    flights["date"] = pd.to_datetime(flights[["year", "month", "day"]])
    flights.loc[[5, 77], "date"] = pd.NaT
    flights["flying"] = pd.to_timedelta(flights.air_time, unit="min")
    flights["local"] = flights.date.dt.tz_localize("America/New_York")
    return flights


def test_dates_and_durations_group_count_compare_and_take_extremes(cluster, dated) -> None:
    """Dates, zoned datetimes and durations travel as dictionary codes (sorted by time), so they
    group, count, compare with literals and take min/max exactly as pandas."""
    f = wgt.frame(dated)
    by_day = f.groupby("date").arr_delay.mean().compute(on=cluster)
    pd.testing.assert_series_equal(by_day, dated.groupby("date").arr_delay.mean(), rtol=1e-12)
    for column in ("date", "flying", "local"):
        assert f[column].min().compute(on=cluster) == dated[column].min()
        assert f[column].max().compute(on=cluster) == dated[column].max()
        assert f[column].nunique().compute(on=cluster) == dated[column].nunique()
        assert f[column].count().compute(on=cluster) == dated[column].count()
    pd.testing.assert_series_equal(
        f.date.value_counts().compute(on=cluster), dated.date.value_counts()
    )
    pd.testing.assert_series_equal(
        f.groupby("carrier").date.max().compute(on=cluster), dated.groupby("carrier").date.max()
    )
    for mask, want in [
        (f.date >= "2013-01-20", dated.date >= "2013-01-20"),
        (f.date == pd.Timestamp("2013-01-05"), dated.date == pd.Timestamp("2013-01-05")),
        (f.flying > pd.Timedelta(minutes=300), dated.flying > pd.Timedelta(minutes=300)),
        (f.date.isna(), dated.date.isna()),
    ]:
        assert f[mask].arr_delay.count().compute(on=cluster) == dated[want].arr_delay.count()


def test_dates_refuse_arithmetic_and_means_naming_them(dated) -> None:
    f = wgt.frame(dated)
    with pytest.raises(FrameError, match="column 'date' holds dates or times and cannot take"):
        f.date + 1
    with pytest.raises(FrameError, match="mean needs numbers; column 'date' holds dates or times"):
        f.date.mean()
    with pytest.raises(FrameError, match=r"describe\(\) of column 'flying' \(dates or times\)"):
        f.flying.describe()
