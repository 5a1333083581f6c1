"""Jobs that keep their promises: no silent wrong answers (histogram ranges, UDF combines,
DSL calls given twice), and failures found early."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import wgtlab as wgt
from wgtlab.sandbox.kernels import HistogramCounts


@pytest.fixture(scope="module")
def cluster():
    with wgt.LocalCluster(workers=2) as c:
        yield c


def _flights() -> pd.DataFrame:
    from wgtlab import samples

    return samples.flights()


def _histogram(data, kernel, cluster, chunk_rows=5_000):
    return wgt.Job("hist").input(data, chunk_rows=chunk_rows).kernel(kernel).run(on=cluster)


# --- histogram ranges ------------------------------------------------------------------------


def test_histogram_without_a_range_uses_the_datas_like_numpy(cluster):
    distance = _flights()["distance"]
    result = _histogram(distance, wgt.kernels.histogram(bins=20), cluster)
    counts, edges = np.histogram(distance.dropna(), bins=20)
    np.testing.assert_array_equal(result.value, counts)
    np.testing.assert_array_equal(result.value.edges, edges)
    assert result.value.sum() == distance.notna().sum()  # nothing silently left out
    assert (result.value.below, result.value.above) == (0, 0) and result.note == ""


@pytest.mark.parametrize("bins", ["auto", "fd", "sturges", "sqrt"])
def test_histogram_bins_estimators_match_numpy(cluster, bins):
    values = np.random.default_rng(5).gamma(2.0, 30.0, 12_000)
    values[::97] = np.nan
    result = _histogram(values, wgt.kernels.histogram(bins=bins), cluster, chunk_rows=1_000)
    counts, edges = np.histogram(values[~np.isnan(values)], bins=bins)
    np.testing.assert_array_equal(result.value, counts)
    np.testing.assert_array_equal(result.value.edges, edges)


def test_values_outside_an_explicit_range_are_counted_and_shown(cluster):
    distance = _flights()["distance"]
    result = _histogram(distance, wgt.kernels.histogram(bins=10, lo=0.0, hi=1000.0), cluster)
    counts, _ = np.histogram(distance, bins=10, range=(0, 1000))
    np.testing.assert_array_equal(result.value, counts)
    above = int((distance > 1000).sum())
    assert isinstance(result.value, HistogramCounts)
    assert (result.value.below, result.value.above) == (0, above) and above > 0
    note = f"0 values below the range and {above:,} above it were not counted (range 0 .. 1000)"
    assert result.note == note
    assert f"note={note!r}" in repr(result)
    assert note in result._repr_html_()
    assert result.to_dict()["note"] == note


def test_an_empty_input_histogram_is_numpys(cluster):
    result = _histogram(np.array([np.nan, np.nan]), wgt.kernels.histogram(bins=4), cluster)
    np.testing.assert_array_equal(result.value, np.histogram(np.array([]), bins=4)[0])
    np.testing.assert_array_equal(result.value.edges, np.histogram(np.array([]), bins=4)[1])


def test_histogram_arguments_are_checked():
    with pytest.raises(wgt.ConfigError, match="give both lo and hi"):
        wgt.kernels.histogram(bins=5, lo=0.0)
    with pytest.raises(wgt.ConfigError, match="one of auto, fd"):
        wgt.kernels.histogram(bins="many")
    unfitted = wgt.kernels.histogram(bins=5)
    with pytest.raises(wgt.ConfigError, match="takes its bins or range from the data"):
        unfitted.encode(np.arange(3.0))
    fitted = unfitted.fit([np.arange(10.0)])
    assert fitted.params == {"bins": 5, "lo": 0.0, "hi": 9.0}


# --- a DSL call given twice would replace the first silently -------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (
            lambda j: j.kernel(wgt.kernels.sum()),
            lambda j: j.kernel(wgt.kernels.min_max()),
            "a kernel",
        ),
        (lambda j: j.input([1.0]), lambda j: j.input([2.0]), "an input"),
        (lambda j: j.verify("hash"), lambda j: j.verify("redundancy"), "its verification"),
        (lambda j: j.retries(1), lambda j: j.retries(2), "its retries"),
        (lambda j: j.on_error("continue"), lambda j: j.on_error("fail"), "its error policy"),
        (
            lambda j: j.limits(max_cpu_cycles=10**6),
            lambda j: j.limits(max_cpu_cycles=10**7),
            "a max_cpu_cycles limit",
        ),
        (
            lambda j: j.limits(wgt.ResourceLimits()),
            lambda j: j.limits(max_stack_bytes=1 << 17),
            "a max_stack_bytes limit",
        ),
    ],
)
def test_a_setting_given_twice_is_refused_and_the_first_kept(first, second, what):
    job = wgt.Job("twice")
    first(job)
    before = (
        job.kernel_obj,
        job.input_spec,
        job.verification,
        job.max_retries,
        job.resource_limits,
    )
    with pytest.raises(wgt.JobDefinitionError, match=f"job 'twice' already has {what} from"):
        second(job)
    after = (job.kernel_obj, job.input_spec, job.verification, job.max_retries, job.resource_limits)
    assert after == before


def test_the_thread_local_dsl_refuses_a_second_kernel_too():
    with pytest.raises(wgt.JobDefinitionError, match="already has a kernel"), wgt.Job("dsl"):
        wgt.kernel(wgt.kernels.sum())
        wgt.kernel(wgt.kernels.checksum())


def test_limits_for_different_fields_combine_and_copies_start_fresh():
    job = wgt.Job("limits").limits(max_cpu_cycles=10**6).limits(max_stack_bytes=1 << 17)
    assert (job.resource_limits.max_cpu_cycles, job.resource_limits.max_stack_bytes) == (
        10**6,
        1 << 17,
    )
    job.verify("hash")
    variant = job.copy().verify("redundancy", replicas=2)
    assert job.verification.mode == "hash" and variant.verification.mode == "redundancy"


# --- failures found before any chunk runs ----------------------------------------------------


def test_a_misspelt_column_fails_before_any_chunk_runs_and_names_the_closest():
    flights = _flights()

    @wgt.udf(combine="sum")
    def late(rows):
        return sum(1 for row in rows if (row["arr_dely"] or 0) > 15)

    @wgt.udf(rows="columns", combine="sum")
    def total_distance(cols):
        return sum(cols["distanse"])

    with wgt.LocalCluster(workers=1) as cluster:
        seen = []
        job = wgt.Job("late").input(flights, chunk_rows=1_000).kernel(late)
        job.subscribe(seen.append)
        with pytest.raises(
            wgt.JobDefinitionError,
            match=r"udf late reads column 'arr_dely', which the input does not have; did you "
            r"mean 'arr_delay'",
        ):
            job.run(on=cluster)
        assert seen == []  # not one event: nothing was scheduled
        with pytest.raises(wgt.JobDefinitionError, match=r"'distanse'.*did you mean 'distance'"):
            wgt.Job("d").input(flights, chunk_rows=1_000).kernel(total_distance).plan()


def test_columns_read_sees_rows_loops_and_comprehensions_only():
    @wgt.udf
    def reads(rows):
        counts = {"x": 0}
        for row in rows:
            counts["x"] += row["carrier"] == "UA"
        return [r["dest"] for r in rows] + [counts["x"]]

    assert reads.columns_read() == {"carrier", "dest"}  # counts["x"] is its own dict
    reads.check_columns(["carrier", "dest", "origin"])  # nothing missing: no error


# --- chunks sized from the work ------------------------------------------------------------------


def test_udf_chunks_are_sized_from_a_trial_run_and_say_why(cluster):
    flights = _flights()[["distance", "arr_delay"]]

    @wgt.udf(combine="sum")
    def slow(rows):
        total = 0
        for row in rows:
            for i in range(200):  # about the same work on every row
                total += (row["distance"] * i) % 7
        return total

    limits = wgt.ResourceLimits(max_cpu_cycles=2_000_000_000)
    job = wgt.Job("sized").input(flights).kernel(slow).limits(limits)
    plan = job.plan()
    rows = plan.source.input.chunk_rows
    assert isinstance(rows, int) and 1 <= rows < len(flights)
    assert plan.chunking.startswith(f"chunk_rows={rows:,} (auto: a 1,000-row trial used ")
    assert "each chunk aims at 25% of max_cpu_cycles=2,000,000,000" in plan.chunking
    result = job.run(on=cluster)
    assert result.ok and result.chunking == plan.chunking
    assert plan.chunking in result._repr_html_()
    # each chunk used about a quarter of the budget: none near the limit, none tiny
    fuel = result.chunks.fuel[:-1]  # the last chunk holds the remainder
    assert fuel.max() < 0.4 * limits.max_cpu_cycles and fuel.min() > 0.1 * limits.max_cpu_cycles


def test_explicit_chunk_rows_are_kept_and_kernels_without_a_preference_ignore_auto():
    @wgt.udf
    def count(rows):
        return len(rows)

    data = list(range(5_000))
    explicit = wgt.Job("x").input(data, chunk_rows=700).kernel(count).plan()
    assert explicit.source.input.chunk_rows == 700 and explicit.chunking == ""
    builtin = wgt.Job("y").input(np.arange(100.0), chunk_rows="auto").kernel(wgt.kernels.sum())
    assert builtin.plan().chunking == ""


def test_a_udf_too_costly_for_one_row_is_refused_before_any_job_runs():
    @wgt.udf
    def forever(rows):
        while True:
            pass

    job = wgt.Job("z").input(list(range(10))).kernel(forever).limits(max_cpu_cycles=10_000_000)
    with pytest.raises(wgt.JobDefinitionError, match="runs out of fuel on a single row"):
        job.plan()
