"""Where a frame's rows come from (a Parquet file or fsspec URL, a CES shard set, a DataFrame
under Dask), and what its results carry (receipts, the verified-result cache), end to end on
real files, shards, sandboxes and a real Dask cluster with TLS."""

from __future__ import annotations

import pandas as pd
import pytest

import wgtlab as wgt
from wgtlab import ces, samples
from wgtlab.frame.source import ParquetSource

pytestmark = pytest.mark.usefixtures("private_cache")

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return samples.flights()


def summary(f):
    return (
        f[f.distance > 500]
        .groupby("carrier")
        .agg(m=("arr_delay", "mean"), n=("arr_delay", "size"), p=("arr_delay", "median"))
    )


def test_a_parquet_file_reads_only_the_columns_a_query_needs(cluster, flights, tmp_path):
    path = tmp_path / "flights.parquet"
    flights.to_parquet(path, row_group_size=5_000)
    f = wgt.frame(path)
    got = summary(f).compute(on=cluster)
    pd.testing.assert_frame_equal(got, summary(flights), check_exact=False, rtol=1e-12)
    source = f._source
    assert isinstance(source, ParquetSource)
    assert set(source._series) == {"distance", "carrier", "arr_delay"}  # nothing else was read


def test_a_parquet_url_through_fsspec(cluster, flights):
    import fsspec

    with fsspec.open("memory://frames/flights.parquet", "wb") as out:
        flights.to_parquet(out)
    got = wgt.frame("memory://frames/flights.parquet").arr_delay.quantile(0.9).compute(on=cluster)
    assert got == flights.arr_delay.quantile(0.9)


def test_a_parquet_file_that_is_not_one_is_a_frame_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(wgt.FrameError, match="cannot read"):
        wgt.frame(bad)


def test_a_ces_shard_set_with_shards_lost(cluster, flights, tmp_path):
    pipe = wgt.CESPipeline(key=KEY, data_shards=4, parity_shards=2)
    shards = ces.shard_dataframe(flights, pipe)
    shards[1] = shards[4] = None  # two lost: any 4 of 6 rebuild the table
    got = summary(wgt.frame(shards, pipeline=pipe)).compute(on=cluster)
    pd.testing.assert_frame_equal(got, summary(flights), check_exact=False, rtol=1e-12)
    url = tmp_path / "shards"
    ces.save(ces.shard_dataframe(flights, pipe), str(url))
    count = wgt.frame(str(url), pipeline=pipe).dest.nunique().compute(on=cluster)
    assert count == flights.dest.nunique()


def test_a_ces_shard_set_under_the_wrong_key_fails_before_any_chunk(flights):
    shards = ces.shard_dataframe(flights, wgt.CESPipeline(key=KEY))
    with pytest.raises(wgt.KeyMismatchError):
        wgt.frame(shards, pipeline=wgt.CESPipeline(key=bytes(32)))


def test_a_frame_result_has_a_receipt_that_verifies(cluster, flights):
    q = summary(wgt.frame(flights))
    result = q.run(on=cluster)
    receipt = result.receipt()
    receipt.verify()
    assert receipt.statement["predicate"]["kernel"]["digest"] == result.kernel_digest
    # the median took more passes: the receipt commits to every pass's Merkle root, and each
    # pass has its own result (and receipt)
    recorded = receipt.statement["predicate"]["kernel"]["params"]["passes"]
    assert [p["merkle_root"] for p in recorded] == [p.merkle_root for p in q.passes]
    assert len(q.passes) >= 2
    for one in q.passes:
        one.receipt().verify()


def test_a_repeated_query_is_served_by_the_verified_result_cache(
    cluster, flights, tmp_path, monkeypatch
):
    monkeypatch.setenv("WGTLAB_RESULT_CACHE", str(tmp_path / "results.sqlite"))
    q = summary(wgt.frame(flights, chunk_rows=5_000))
    first = q.run(on=cluster)
    again = summary(wgt.frame(flights, chunk_rows=5_000)).run(on=cluster)
    assert not any(c.cached for c in first.outcomes)
    assert all(c.cached for c in again.outcomes)
    pd.testing.assert_frame_equal(again.value, first.value)
    fresh = summary(wgt.frame(flights, chunk_rows=5_000)).run(on=cluster, cache=False)
    assert not any(c.cached for c in fresh.outcomes)


def test_chunk_rows_is_checked():
    with pytest.raises(wgt.FrameError, match="chunk_rows"):
        wgt.frame(pd.DataFrame({"x": [1.0]}), chunk_rows=0)


def test_the_same_query_on_a_dask_cluster_with_tls(flights):
    with wgt.DaskCluster.local(n_workers=2, tls=True) as dask:
        f = wgt.frame(flights, chunk_rows=4_000)
        got = summary(f).run(on=dask, verify="redundancy", replicas=2)
        sql = wgt.sql(
            "SELECT origin, COUNT(DISTINCT dest) AS d FROM t GROUP BY origin ORDER BY origin", t=f
        ).compute(on=dask)
    pd.testing.assert_frame_equal(got.value, summary(flights), check_exact=False, rtol=1e-12)
    assert got.ok and got.mode == "redundancy" and len(got.outcomes) == 7
    want = flights.groupby("origin").dest.nunique().rename("d").reset_index()
    pd.testing.assert_frame_equal(sql, want)
