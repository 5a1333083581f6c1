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
