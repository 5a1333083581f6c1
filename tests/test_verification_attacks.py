"""Workers that cooperate to lie, claim timeouts they never hit, or shape their output to break
the trusted side: each attack on a real LocalCluster, with the exact outcome asserted."""

from __future__ import annotations

import numpy as np
import pytest

import wgtlab as wgt
from wgtlab.cluster.faults import Fault
from wgtlab.cluster.manager import TIMEOUT_REFUTED
from wgtlab.cluster.task import Task

VALUES = np.arange(6_000, dtype=float)
CHUNK_ROWS = 100  # 60 chunks


def _job(replicas: int) -> wgt.Job:
    job = wgt.Job("collusion").input(VALUES, chunk_rows=CHUNK_ROWS).kernel(wgt.kernels.sum())
    return job.verify("redundancy", replicas=replicas)


@pytest.fixture(scope="module")
def honest_digests() -> list[str]:
    with wgt.LocalCluster(workers=2) as cluster:
        result = _job(replicas=2).run(on=cluster)
    return list(result.chunks.digest)


# (workers, colluder indexes, replicas): fewer colluders than replicas, honest workers a
# majority of the pool; colluders first, last, spread, and lying always or on half the chunks.
ARRANGEMENTS = [
    (3, (0,), 2, 1.0),
    (5, (0, 1), 3, 1.0),
    (5, (3, 4), 3, 1.0),
    (5, (1, 3), 3, 0.5),
    (5, (4,), 2, 1.0),
    (7, (0, 2, 4), 4, 1.0),
    (7, (4, 5, 6), 4, 0.5),
]


@pytest.mark.parametrize(("workers", "colluders", "replicas", "rate"), ARRANGEMENTS)
def test_colluders_fewer_than_replicas_never_get_a_wrong_result_accepted(
    honest_digests, workers, colluders, replicas, rate
):
    faults = {i: wgt.faults.Colluder(rate=rate, seed=7) for i in colluders}
    with wgt.LocalCluster(workers=workers, faults=faults, seed=3) as cluster:
        result = _job(replicas).run(on=cluster)
        history = cluster.ledger.history()
    assert result.ok and result.value == VALUES.sum()
    # 0 wrong results accepted: every chunk's agreed outcome is the honest one
    assert list(result.chunks.digest) == honest_digests
    assert all(len(c.workers) >= replicas for c in result.outcomes)
    bad = {f"local-{i}" for i in colluders}
    # the colluders were caught lying, and no honest worker was ever proven wrong
    dissents = history[~history.ok]
    assert set(dissents.label) <= bad and len(dissents) > 0
    assert result.assurance.startswith(
        f"60/60 chunks agreed by {replicas} workers (0 spot-checked); "
    )
    assert result.assurance.endswith(f"0 wrong answers possible unless {replicas} workers collude")


def test_as_many_colluders_as_replicas_is_outside_the_guarantee(honest_digests):
    # The guarantee's condition matters: two colluders, two replicas, both chosen for a chunk,
    # agree unanimously. (This is why the README states the condition.)
    faults = {0: wgt.faults.Colluder(seed=7), 1: wgt.faults.Colluder(seed=7)}
    with wgt.LocalCluster(workers=2, faults=faults) as cluster:
        result = _job(replicas=2).run(on=cluster)
    assert result.ok
    assert all(d != h for d, h in zip(result.chunks.digest, honest_digests, strict=True))


def test_counts_in_chunks_and_verification_tables_agree():
    faults = {"local-0": wgt.faults.Liar(rate=1.0, seed=2)}  # lies until quarantined
    with wgt.LocalCluster(workers=4, faults=faults, seed=4) as cluster:
        result = _job(replicas=2).run(on=cluster)
    table = result.verification
    voted = table[(table.role == "replica") & table.outcome.isin(["agreed", "dissented"])]
    for chunk in result.outcomes:
        rows = voted[voted.chunk == chunk.index]
        assert chunk.replicas == len(rows)
        assert set(chunk.workers) == set(rows.worker[rows.outcome == "agreed"])
        assert set(chunk.dissenters) == set(rows.worker[rows.outcome == "dissented"])
    resolved = sum(1 for c in result.outcomes if c.dissenters)
    assert resolved > 0 and f"; {resolved} disagreements resolved; " in result.assurance
    assert result.spot_checked == 0


def test_hash_and_merkle_assurance_say_what_they_do_not_catch():
    with wgt.LocalCluster(workers=2) as cluster:
        job = wgt.Job("h").input(VALUES, chunk_rows=1_000).kernel(wgt.kernels.sum())
        hashed = job.run(on=cluster)
        merkled = job.verify("merkle").run(on=cluster)
    assert hashed.assurance == (
        "6/6 chunks verified by hash on one worker each; digests and signatures checked, but a "
        "worker that lies consistently is caught only by verify('redundancy')"
    )
    assert merkled.assurance.startswith(
        f"6/6 chunks verified by hash on one worker each, committed to Merkle root "
        f"{merkled.merkle_root[:16]}... (size 6); "
    )


# --- timeout claims ---------------------------------------------------------------------------


def test_a_refuted_timeout_claim_costs_trust_and_the_claimant_is_quarantined():
    faults = {"local-0": wgt.faults.FakeTimeout()}
    with wgt.LocalCluster(workers=3, faults=faults, seed=0) as cluster:
        # 200 chunks: however trust-weighted choice spreads them, the claimant gets far more
        # than the 5 it takes to be quarantined
        job = wgt.Job("claims").input(VALUES, chunk_rows=30).kernel(wgt.kernels.sum())
        result = job.run(on=cluster)
        liar = cluster.fingerprint("local-0")
        history = cluster.ledger.history()
        quarantined = cluster.policy.is_quarantined(liar)
    assert result.ok and result.value == VALUES.sum()
    claims = result.verification[result.verification.outcome == "timed out"]
    assert len(claims) >= 5 and set(claims.worker) == {"local-0"}
    refuted = history[history.reason == TIMEOUT_REFUTED]
    assert len(refuted) >= 5 and set(refuted.label) == {"local-0"}
    assert not refuted.ok.any()
    assert quarantined  # it can no longer fail chunks by claiming timeouts
    # nobody else lost trust
    assert history[~history.ok].label.unique().tolist() == ["local-0"]


def test_a_corroborated_timeout_costs_nothing(hostile_loop):
    with wgt.LocalCluster(workers=3) as cluster:
        job = wgt.Job("slow").input(b"x" * 200, chunk_bytes=100).kernel(hostile_loop)
        job.limits(max_cpu_cycles=10**15, max_execution_time_ms=50).retries(1)
        with pytest.raises(wgt.ChunkFailed):
            job.run(on=cluster)
        assert cluster.ledger.history().empty


@pytest.fixture
def hostile_loop() -> wgt.WasmModule:
    import sandbox_hostile as hostile

    return wgt.WasmModule.from_wat(hostile.INFINITE_LOOP)


# --- output shaped to break the trusted side -----------------------------------------------------


class ShapedOutput(Fault):
    """Replaces its output by ``shape`` (signed as its own: only decoding can reject it)."""

    shape: bytes = b""

    def tamper(self, task: Task, output: bytes) -> bytes:
        return self.shape


class DeepNesting(ShapedOutput):
    shape = b"[" * 100_000


class ValueBomb(ShapedOutput):
    shape = b"[" + b"0," * 5_000_000 + b"0]"  # 10 MiB, 5M values


@wgt.udf
def count_rows(rows):
    return len(rows)


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (DeepNesting(), "AbiError: count_rows returned JSON nested too deep to decode"),
        (ValueBomb(), "AbiError: count_rows returned about 5,000,001 JSON values, over"),
    ],
)
def test_output_shaped_to_break_the_decoder_is_a_typed_rejection(fault, why):
    with wgt.LocalCluster(workers=2, faults={"local-0": fault}) as cluster:
        job = wgt.Job("shaped").input(list(range(400)), chunk_rows=100)
        job.kernel(count_rows, combine=sum)
        result = job.run(on=cluster)
    assert result.ok and result.value == 400
    rejected = result.verification[result.verification.outcome == "rejected"]
    assert len(rejected) >= 1 and set(rejected.worker) == {"local-0"}
    assert all(
        reason.startswith(f"rejected: output could not be decoded: {why}")
        for reason in rejected.reason
    )
