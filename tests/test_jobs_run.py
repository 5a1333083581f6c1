"""Jobs on the embedded LocalCluster: exact results, verification, faults, trust, proofs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import wgtlab as wgt
from wgtlab.cluster.faults import Forger, Misdirect
from wgtlab.jobs import events as ev

RNG = np.random.default_rng(2026)
VALUES = RNG.normal(50.0, 30.0, 10_007)  # a prime length: no chunk size divides it evenly


@pytest.fixture
def cluster():
    with wgt.LocalCluster(workers=3) as c:
        yield c


def run(kernel, source, cluster, **input_options):
    with wgt.Job("t") as job:
        wgt.input(source, **input_options)
        wgt.kernel(kernel)
    return job.run(on=cluster)


@pytest.mark.parametrize("chunk_rows", [1000, 1001, 10_007, 20_000])
def test_builtin_kernels_equal_numpy(cluster, chunk_rows):
    series = pd.Series(VALUES)
    counts = run(
        wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0), series, cluster, chunk_rows=chunk_rows
    ).value
    expected, _ = np.histogram(VALUES[(VALUES >= 0) & (VALUES <= 100)], bins=20, range=(0, 100))
    np.testing.assert_array_equal(np.asarray(counts), expected)
    total = run(wgt.kernels.sum(), series, cluster, chunk_rows=chunk_rows).value
    assert total == pytest.approx(math.fsum(VALUES), rel=0, abs=1e-9)
    lo, hi = run(wgt.kernels.min_max(), VALUES, cluster, chunk_rows=chunk_rows).value
    assert (lo, hi) == (VALUES.min(), VALUES.max())
    above = run(wgt.kernels.count_where(">", 75.0), series, cluster, chunk_rows=chunk_rows).value
    assert above == int((VALUES > 75.0).sum())


def test_missing_values_are_skipped_like_pandas(cluster):
    flights = pd.read_csv(wgt_data("flights-2013-01.csv"))
    delay = flights["arr_delay"]
    assert delay.isna().sum() > 0
    total = run(wgt.kernels.sum(), delay, cluster, chunk_rows=4000).value
    assert total == pytest.approx(delay.sum(), abs=1e-6)


def test_byte_and_text_kernels_on_bytes_and_files(cluster, tmp_path):
    text = Path(wgt_data("flights-2013-01.csv")).read_bytes()
    path = tmp_path / "flights.csv"
    path.write_bytes(text)
    words = run(wgt.kernels.word_count(), path, cluster, chunk_bytes=50_000).value
    assert words == len(text.split())
    checksum = run(wgt.kernels.checksum(), text, cluster, chunk_bytes=65_536)
    assert len(checksum.outcomes) == math.ceil(len(text) / 65_536)
    assert checksum.ok


def test_empty_input_is_a_valid_job_with_an_empty_result(cluster):
    result = run(wgt.kernels.sum(), pd.Series([], dtype=float), cluster)
    assert result.ok and result.outcomes == () and result.value == 0.0
    assert result.merkle_root == wgt.verify.EMPTY_ROOT.hex()


def test_every_chunk_has_a_merkle_proof_against_the_root(cluster):
    result = run(wgt.kernels.sum(), VALUES, cluster, chunk_rows=999)
    assert result.tree_size == 11
    for i in range(result.tree_size):
        p = result.proof(i)
        assert wgt.verify.verify_proof(
            p.leaf, p.index, p.tree_size, list(p.path), result.merkle_root
        )
        assert result.record(i).index == i
    forged = result.proof(3)
    assert not wgt.verify.verify_proof(
        forged.leaf, 4, forged.tree_size, list(forged.path), result.merkle_root
    )
    with pytest.raises(wgt.ProofError):
        result.proof(11)


def test_one_liar_among_five_is_caught_and_quarantined():
    cluster = wgt.LocalCluster(workers=5, faults={"local-0": wgt.faults.Liar(rate=1.0, seed=7)})
    series = pd.Series(VALUES)
    with wgt.Job("liar") as job:
        wgt.input(series, chunk_rows=250)
        wgt.kernel(wgt.kernels.histogram(bins=10, lo=0.0, hi=100.0))
        wgt.verify("redundancy", replicas=3)
    with cluster:
        result = job.run(on=cluster)
    expected, _ = np.histogram(VALUES[(VALUES >= 0) & (VALUES <= 100)], bins=10, range=(0, 100))
    np.testing.assert_array_equal(result.value, expected)
    assert result.ok
    liar_rows = result.verification[result.verification.worker == "local-0"]
    assert set(liar_rows.outcome) <= {"dissented"}
    assert len(liar_rows) >= 5  # it lied until quarantined (5 lies: 0.5 * 0.9**5 < 0.3)
    assert cluster.policy.is_quarantined(cluster.fingerprint("local-0"))
    scores = cluster.ledger.scores().set_index("label")["score"]
    assert scores["local-0"] < 0.3
    for honest in ("local-1", "local-2", "local-3", "local-4"):
        assert scores[honest] > 0.5
        assert not cluster.policy.is_quarantined(cluster.fingerprint(honest))


def test_with_hash_only_a_lie_goes_unnoticed():
    # Why redundancy exists: a single worker's signed lie passes every hash check.
    cluster = wgt.LocalCluster(workers=1, faults={"local-0": wgt.faults.Liar(rate=1.0, seed=1)})
    with cluster:
        result = run(wgt.kernels.histogram(bins=10, lo=0, hi=100), VALUES, cluster, chunk_rows=5000)
    expected, _ = np.histogram(VALUES, bins=10, range=(0, 100))
    below, above = int((VALUES < 0).sum()), int((VALUES > 100).sum())
    assert result.ok and result.disagreements == 0
    value = result.value
    truth = np.array_equal(value, expected) and (value.below, value.above) == (below, above)
    assert not truth  # the lie (in a count, or in the out-of-range counts) went unnoticed


def test_crashes_and_stalls_lose_no_chunk():
    faults = {
        "local-0": wgt.faults.Crash(rate=0.5, seed=3),
        # past the task deadline: 1.45 s per task, twice that with one waiting in the queue
        "local-1": wgt.faults.Stall(rate=0.3, seconds=4.0, seed=4),
    }
    cluster = wgt.LocalCluster(workers=4, faults=faults)
    seen: list[ev.Event] = []
    with wgt.Job("faulty") as job:
        wgt.input(VALUES, chunk_rows=500)
        wgt.kernel(wgt.kernels.count_where("<", 50.0))
        wgt.limits(max_execution_time_ms=300)
        wgt.retries(6)
    job.subscribe(seen.append)
    with cluster:
        result = job.run(on=cluster)
    assert result.ok and len(result.outcomes) == 21
    assert result.value == int((VALUES < 50.0).sum())
    outcomes = result.verification.outcome.value_counts().to_dict()
    assert outcomes.get("crashed", 0) > 0 and outcomes.get("stalled", 0) > 0
    verified = [e.chunk for e in seen if e.kind == ev.CHUNK_VERIFIED]
    assert sorted(verified) == list(range(21))  # each chunk verified exactly once
    assert seen[0].kind == ev.JOB_STARTED and seen[-1].kind == ev.JOB_DONE


@pytest.mark.parametrize("fault", [Forger(), Misdirect()])
def test_forged_or_unassigned_results_are_rejected(fault):
    cluster = wgt.LocalCluster(workers=3, faults={"local-0": fault})
    with cluster:
        result = run(wgt.kernels.sum(), VALUES, cluster, chunk_rows=2000)
    assert result.ok
    assert result.value == pytest.approx(math.fsum(VALUES), abs=1e-9)
    rejected = result.verification[result.verification.outcome == "rejected"]
    assert len(rejected) > 0 and set(rejected.worker) == {"local-0"}
    assert "signature" in rejected.reason.iloc[0] or "never assigned" in rejected.reason.iloc[0]
    assert cluster.ledger.score("local-0") < 0.5


HOSTILE_LOOP = """
(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 16))
  (func (export "wgt_run") (param i32 i32) (result i64) (loop (br 0)) (i64.const 0)))
"""


def test_a_sandbox_error_is_the_chunks_result(cluster):
    looping = wgt.WasmModule.from_wat(HOSTILE_LOOP)
    job = wgt.Job("loops").input(b"x" * 1000, chunk_bytes=100).kernel(looping)
    job.limits(max_cpu_cycles=100_000)
    # on_error="fail" (the default) stops at the first chunk that failed, and says why
    with pytest.raises(
        wgt.ChunkFailed, match=r"^job 'loops': chunk \d+ failed: OutOfFuel: "
    ) as info:
        job.run(on=cluster)
    stop = info.value.chunk
    assert "; 0 chunks verified, " in str(info.value)
    result = info.value.result
    for chunk in result.outcomes:  # decided in the same moment, or cancelled
        assert chunk.reason.startswith("OutOfFuel") or (
            chunk.reason == f"cancelled: the job stopped when chunk {stop} failed"
        )
    assert any(c.reason.startswith("cancelled") for c in result.outcomes)  # stopped early
    job.on_error("continue")  # runs every chunk: each one's own outcome
    everything = job.run(on=cluster)
    assert set(everything.chunks.status) == {"error"} and len(everything.outcomes) == 10
    assert everything.chunks.error.str.startswith("OutOfFuel").all()
    assert everything.value == b""


def test_a_wall_clock_timeout_is_no_vote_and_costs_no_trust():
    # How long a task takes depends on the worker's machine and load: replicas that time out
    # must not outvote one that finished, nor lose trust. The chunk runs again elsewhere.
    looping = wgt.WasmModule.from_wat(HOSTILE_LOOP)
    with wgt.LocalCluster(workers=3) as cluster:
        job = wgt.Job("slow").input(b"x" * 200, chunk_bytes=100).kernel(looping)
        job.limits(max_cpu_cycles=10**15, max_execution_time_ms=50).retries(1)
        job.verify("redundancy", replicas=2).on_error("continue")
        result = job.run(on=cluster)
        assert cluster.ledger.history().empty  # nobody's trust moved
    assert set(result.chunks.status) == {"failed"}
    for reason in result.chunks.error:
        assert reason.startswith("gave up after 2 failed tries: local-")
        assert reason.count("timed out: TimeLimitExceeded: ") == 2
    rows = result.verification
    # Two tries per chunk gave up; a retry already on its way may add a third row.
    assert set(rows.outcome) == {"timed out"} and 4 <= len(rows) <= 6


def test_ces_shards_as_input_with_two_missing(cluster):
    data = Path(wgt_data("flights-2013-01.csv")).read_bytes()
    pipe = wgt.CESPipeline(key=bytes(range(32)), data_shards=4, parity_shards=2)
    shards = pipe.process(data)
    shards[0] = shards[3] = None
    result = run(wgt.kernels.word_count(), shards, cluster, pipeline=pipe)
    assert result.value == len(data.split())


def test_a_dataframe_shard_set_feeds_row_kernels(cluster):
    frame = pd.DataFrame({"value": VALUES})
    pipe = wgt.CESPipeline(key=bytes(range(32)), data_shards=4, parity_shards=2)
    shards = wgt.ces.shard_dataframe(frame, pipe)
    shards[1] = shards[4] = None
    total = run(wgt.kernels.sum(), shards, cluster, pipeline=pipe, chunk_rows=1_000)
    assert total.value == pytest.approx(math.fsum(VALUES), rel=0, abs=1e-9)
    assert len(total.outcomes) == 11
    counts = run(wgt.kernels.histogram(bins=4, lo=0, hi=100), shards, cluster, pipeline=pipe)
    expected, _ = np.histogram(VALUES[(VALUES >= 0) & (VALUES <= 100)], bins=4, range=(0, 100))
    np.testing.assert_array_equal(np.asarray(counts.value), expected)
    # Shards of bytes that are not a DataFrame cannot feed a row kernel.
    with pytest.raises(wgt.IntegrityError, match="do not hold a DataFrame"):
        run(wgt.kernels.sum(), pipe.process(b"1 2 3"), cluster, pipeline=pipe)
    # A bytes kernel reads the shard set as bytes: rows mean nothing to it.
    with pytest.raises(wgt.JobDefinitionError, match="use chunk_bytes or chunk_lines"):
        run(wgt.kernels.word_count(), shards, cluster, pipeline=pipe, chunk_rows=10)


def test_a_shard_list_without_a_pipeline_opens_with_the_environment_key(cluster, monkeypatch):
    key = bytes(range(32, 64))
    data = b"alpha beta gamma " * 1_000
    shards = wgt.CESPipeline(key=key).process(data)
    monkeypatch.delenv("CES_ENCRYPTION_KEY", raising=False)
    with pytest.raises(wgt.JobDefinitionError, match=r"CES shard set but no key was given"):
        run(wgt.kernels.word_count(), shards, cluster)
    monkeypatch.setenv("CES_ENCRYPTION_KEY", bytes(32).hex())  # the wrong key
    with pytest.raises(wgt.KeyMismatchError):
        run(wgt.kernels.word_count(), shards, cluster)
    monkeypatch.setenv("CES_ENCRYPTION_KEY", key.hex())
    assert run(wgt.kernels.word_count(), shards, cluster).value == 3_000


def test_decorator_form_with_a_wasm_execute(cluster):
    identity = wgt.WasmModule.from_wat(
        """(module (memory (export "memory") 2)
          (func (export "wgt_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "wgt_run") (param $p i32) (param $n i32) (result i64)
            (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
                    (i64.extend_i32_u (local.get $n)))))"""
    )

    @wgt.Job.define
    def echo_job():
        @wgt.Job.split
        def split(data: bytes) -> list[bytes]:
            return [data[i : i + 4] for i in range(0, len(data), 4)]

        wgt.Job.execute(identity)

        @wgt.Job.merge
        def merge(parts: list[bytes]) -> bytes:
            return b"|".join(parts)

    result = echo_job.run(b"hello world!", on=cluster)
    assert result.value == b"hell|o wo|rld!"
    with pytest.raises(wgt.JobDefinitionError, match=r"no @wgt\.Job\.execute"):

        @wgt.Job.define
        def empty_job():
            pass

    with pytest.raises(wgt.JobDefinitionError, match="inside a function decorated"):
        wgt.Job.split(lambda d: [d])


def wgt_data(name: str) -> str:
    return str(Path(__file__).resolve().parents[1] / "data" / name)


def test_a_udf_over_dataframe_rows_equals_pandas(cluster):
    @wgt.udf(combine="sum")
    def delay_by_carrier(rows):
        totals = {}
        for row in rows:
            if row["arr_delay"] is not None:
                totals[row["carrier"]] = totals.get(row["carrier"], 0) + row["arr_delay"]
        return totals

    flights = pd.read_csv(wgt_data("flights-2013-01.csv"))
    with wgt.Job("udf") as job:
        wgt.input(flights[["carrier", "arr_delay"]], chunk_rows=3000)
        wgt.kernel(delay_by_carrier)
        wgt.verify("redundancy", replicas=2)
    result = job.run(on=cluster)
    known = flights.dropna(subset=["arr_delay"])
    assert result.value == pytest.approx(known.groupby("carrier")["arr_delay"].sum().to_dict())
    assert result.disagreements == 0 and len(result.outcomes) == 10


def test_two_independent_liars_cannot_outvote_the_honest_majority():
    faults = {"local-0": wgt.faults.Liar(seed=1), "local-1": wgt.faults.Liar(seed=1)}
    with wgt.LocalCluster(workers=5, faults=faults) as cluster:
        # 41 chunks: enough votes for both liars to reach quarantine whatever the timing.
        result = run_redundant(cluster, replicas=3, chunk_rows=250)
        assert result.ok and result.value == int((VALUES > 10.0).sum())
        for liar in ("local-0", "local-1"):
            assert cluster.policy.is_quarantined(cluster.fingerprint(liar))


def test_an_honest_worker_on_probation_is_compared_with_the_decided_result():
    with wgt.LocalCluster(workers=4) as cluster:
        suspect = cluster.fingerprint("local-3")
        for _ in range(6):  # a bad past: quarantined before this job starts
            cluster.policy.record(suspect, False, label="local-3", reason="earlier lies")
        assert cluster.policy.is_quarantined(suspect)
        result = run_redundant(cluster, replicas=2)
    assert result.ok
    shadow = result.verification[result.verification.role == "probation"]
    assert len(shadow) > 0 and set(shadow.worker) == {"local-3"}
    assert set(shadow.outcome) == {"agreed"}  # never logged as a liar for telling the truth
    assert result.disagreements == 0
    assert cluster.ledger.score(suspect) > 0.5 * 0.9**6


def test_a_worker_quarantined_for_crashing_earns_its_way_back_in_hash_jobs():
    with wgt.LocalCluster(workers=3) as cluster:
        suspect = cluster.fingerprint("local-2")
        for _ in range(6):  # five crashes and more in earlier hash jobs
            cluster.policy.record(suspect, False, label="local-2", reason="crashed")
        assert cluster.policy.is_quarantined(suspect)
        job = wgt.Job("plain").input(VALUES, chunk_rows=250).kernel(wgt.kernels.sum())
        result = job.run(on=cluster)  # verify("hash"): no quorum, but shadows still compare
        shadow = result.verification[result.verification.role == "probation"]
        assert len(shadow) >= 3 and set(shadow.outcome) == {"agreed"}
        # It decided chunks again only after its third agreed probation task.
        rows = result.verification[result.verification.worker == "local-2"]
        third = sorted(shadow.task)[2]
        assert (rows[rows.role == "replica"].task > third).all()
        assert not cluster.policy.is_quarantined(suspect)  # 3 agreed probation tasks: back


def run_redundant(cluster, replicas: int, chunk_rows: int = 500, on_error: str = "fail"):
    with wgt.Job("redundant") as job:
        wgt.input(VALUES, chunk_rows=chunk_rows)
        wgt.kernel(wgt.kernels.count_where(">", 10.0))
        wgt.verify("redundancy", replicas=replicas)
    return job.on_error(on_error).run(on=cluster)


def test_replicas_that_never_agree_fail_with_their_digests_and_keep_their_rows():
    # Three workers, two independent liars: every chunk gets three different answers and no
    # worker is left to break the tie.
    faults = {"local-0": wgt.faults.Liar(seed=1), "local-1": wgt.faults.Liar(seed=2)}
    with wgt.LocalCluster(workers=3, faults=faults) as cluster:
        before = cluster.ledger.scores().set_index("label")["score"].to_dict()
        result = run_redundant(cluster, replicas=3, chunk_rows=5_000, on_error="continue")
        after = cluster.ledger.scores().set_index("label")["score"].to_dict()
    assert [c.status for c in result.outcomes] == ["failed"] * 3
    for outcome in result.outcomes:
        # Two different answers of three possible already rule out three agreeing replicas:
        # the chunk fails without waiting for a replica that could not change that.
        assert re.match(
            r"no outcome has 3 agreeing replicas and a strict majority of the [23] replies \(",
            outcome.reason,
        )
        assert outcome.reason.count(" from local-") in (2, 3)
        assert outcome.reason.endswith(
            "; even 3 replicas (every worker) could not decide it: add workers or lower replicas"
        )
    rows = result.verification
    assert set(rows.outcome) == {"failed"} and rows.digest.notna().all()
    assert set(rows.groupby("chunk").worker.nunique()) <= {2, 3}
    assert after == before  # no majority, so nobody can be called a liar


def test_when_every_worker_crashed_on_a_chunk_the_error_says_how():
    faults = {f"local-{i}": wgt.faults.Crash() for i in range(2)}
    with wgt.LocalCluster(workers=2, faults=faults) as cluster:
        job = wgt.Job("crashing").retries(3)
        job.input(VALUES[:1_000], chunk_rows=1_000)
        job.kernel(wgt.kernels.sum())
        with pytest.raises(wgt.ChunkFailed) as caught:
            job.run(on=cluster)
    (outcome,) = caught.value.result.outcomes
    assert outcome.reason == (
        "all 2 usable workers (0 quarantined) failed on this chunk [failed tries: "
        + "; ".join(
            f"{w} crashed: SimulatedCrash: simulated crash on chunk 0"
            for w in [r.worker for r in caught.value.result.verification.itertuples()]
        )
        + "]"
    )


def test_a_closed_cluster_refuses_jobs_and_nobody_loses_trust():
    cluster = wgt.LocalCluster(workers=2)
    cluster.close()
    job = wgt.Job("late")
    job.input(VALUES[:1_000], chunk_rows=500)
    job.kernel(wgt.kernels.sum())
    with pytest.raises(wgt.ClusterError, match=r"^this LocalCluster is closed; create a new one$"):
        job.run(on=cluster)
    assert cluster.ledger.scores().empty and cluster.ledger.history().empty


def test_closing_the_cluster_under_a_running_job_stops_it_without_blaming_workers():
    cluster = wgt.LocalCluster(workers=2)
    job = wgt.Job("interrupted")
    job.input(VALUES, chunk_rows=100)
    job.kernel(wgt.kernels.sum())

    def close_on_first_result(event):
        if event.kind == ev.CHUNK_DONE:
            cluster.close()

    job.subscribe(close_on_first_result)
    with pytest.raises(wgt.ClusterError, match=r"^the LocalCluster was closed while job "):
        job.run(on=cluster)
    assert cluster.ledger.history().empty  # no task counted as crashed: nobody lost trust


def test_run_on_something_that_is_not_a_cluster_is_a_config_error():
    job = wgt.Job("where")
    job.input(VALUES[:1_000], chunk_rows=500)
    job.kernel(wgt.kernels.sum())
    with pytest.raises(wgt.ConfigError, match=r"on= takes a cluster .* got str 'nope'"):
        job.run(on="nope")


def test_spot_checking_is_opt_in_and_counted_truthfully():
    data = np.arange(20_000, dtype=float)

    def run_on_fresh_cluster(**verify_options):
        faults = {"local-0": wgt.faults.Liar(rate=0.05, seed=3)}
        with wgt.LocalCluster(workers=5, faults=faults, seed=1) as cluster:
            job = wgt.Job("occasional").input(data, chunk_rows=50).kernel(wgt.kernels.sum())
            job.verify("redundancy", replicas=2, **verify_options)
            return job.run(on=cluster)

    # The default replicates every chunk: two agreeing workers each, the liar always caught,
    # nothing spot-checked (the count used to include every chunk decided early).
    full = run_on_fresh_cluster()
    assert full.spot_checked == 0 and (full.chunks.replicas >= 2).all()
    assert all(c.requested == 2 for c in full.outcomes)
    assert full.value == data.sum()
    assert "spot_checked" not in repr(full)
    assert full.assurance.startswith("400/400 chunks agreed by 2 workers (0 spot-checked); ")
    assert full.assurance.endswith("0 wrong answers possible unless 2 workers collude")
    # Opting in (BOINC's adaptive replication): trusted runs are spot-checked, so some chunks
    # run once, and the result says exactly which and how many.
    spot = run_on_fresh_cluster(spot_check=0.1)
    alone = [c for c in spot.outcomes if c.requested == 1]
    assert spot.spot_checked == len(alone) > 0
    assert all(c.replicas == 1 and len(c.workers) == 1 for c in alone)
    assert f"spot_checked={spot.spot_checked}" in repr(spot)
    n = spot.spot_checked
    assert spot.assurance.startswith(
        f"400/400 chunks verified: {400 - n} agreed by 2 workers, {n} spot-checked (each "
        "accepted on one trusted worker's word); "
    )
    assert spot.assurance.endswith(
        "a wrong answer needs 2 colluding workers, or one lying worker on a spot-checked chunk"
    )
    # adaptive=True is the older spelling of spot_check=0.1
    assert wgt.Job("x").verify("redundancy", adaptive=True).verification.spot_check == 0.1
    assert wgt.Job("x").verify("redundancy", adaptive=False).verification.spot_check is None
    with pytest.raises(wgt.JobDefinitionError, match="adaptive must be True or False"):
        wgt.Job("x").verify("redundancy", adaptive="no")
    for bad in (0, 1.5, -0.1, "0.1", True):
        with pytest.raises(wgt.JobDefinitionError, match="spot_check is the probability"):
            wgt.Job("x").verify("redundancy", spot_check=bad)
    with pytest.raises(wgt.JobDefinitionError, match="spot_check applies to"):
        wgt.Job("x").verify("hash", spot_check=0.1)


def test_a_defined_job_takes_the_job_settings_and_keeps_a_kernels_own_combine(cluster):
    @wgt.Job.define
    def words():
        wgt.Job.split(lambda data: [data[:6], data[6:]])
        wgt.Job.execute(wgt.kernels.word_count())

    assert words.run(b"alpha beta gamma", on=cluster).value == 3  # word_count's own combine
    words.limits(max_cpu_cycles=10).retries(0).on_error("continue")
    assert (words.resource_limits.max_cpu_cycles, words.max_retries) == (10, 0)
    starved = words.run(b"alpha beta gamma", on=cluster)
    assert set(starved.chunks.status) == {"error"} and starved.value == 0
    with pytest.raises(wgt.JobDefinitionError, match="retries must be an int >= 0"):
        words.retries(-1)


def test_a_failing_split_or_combine_is_a_job_error_and_subscribers_see_the_end(cluster):
    ends = []

    @wgt.Job.define
    def broken_split():
        wgt.Job.split(lambda data: 1 / 0)
        wgt.Job.execute(wgt.kernels.word_count())

    broken_split.subscribe(lambda e: ends.append(e.data) if e.kind == ev.JOB_DONE else None)
    with pytest.raises(wgt.JobError, match=r"split\(\) raised ZeroDivisionError: division by"):
        broken_split.run(b"a b c", on=cluster)
    assert ends[-1]["ok"] is False and ends[-1]["error"].startswith("JobError: ")

    job = wgt.Job("mean").input(VALUES, chunk_rows=5_000)
    job.kernel(wgt.kernels.sum(), combine=lambda parts: sum(parts) / 0)
    job.subscribe(lambda e: ends.append(e.data) if e.kind == ev.JOB_DONE else None)
    with pytest.raises(wgt.JobError, match=r"combining the 3 chunk results failed: Zero") as info:
        job.run(on=cluster)
    kept = info.value.result
    assert kept.value is None and kept.ok and len(kept.outcomes) == 3
    assert ends[-1]["ok"] is False


def test_result_json_is_standard_json_even_for_nan_values(cluster):
    result = run(wgt.kernels.min_max(), np.full(100, np.nan), cluster, chunk_rows=50)
    text = result.to_json()
    back = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert back["value"] == [None, None] and back["ok"] is True
    assert back["merkle_root"] == result.merkle_root and len(back["chunks"]) == 2
