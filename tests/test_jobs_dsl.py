"""The job DSL: thread-local definitions, eager validation, the seed system's decorator form."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import wgtlab as wgt
from wgtlab.jobs.chunking import InputSpec, iter_chunks


def test_module_level_calls_reach_the_job_of_their_own_thread():
    barrier = threading.Barrier(8)
    jobs: dict[int, wgt.Job] = {}
    errors: list[BaseException] = []

    def define(i: int) -> None:
        try:
            with wgt.Job(f"job-{i}") as job:
                barrier.wait()
                wgt.input(np.arange(i + 1, dtype=np.float64), chunk_rows=1)
                barrier.wait()
                wgt.kernel(wgt.kernels.sum())
                wgt.verify("hash")
                wgt.limits(max_cpu_cycles=1_000_000 + i)
            jobs[i] = job
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=define, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, job in jobs.items():
        assert len(job.input_spec.source) == i + 1
        assert job.resource_limits.max_cpu_cycles == 1_000_000 + i
        assert job.kernel_obj.name == "sum"


def test_dsl_outside_a_job_block_is_a_clear_error():
    with pytest.raises(wgt.JobDefinitionError, match=r"inside `with wgt\.Job"):
        wgt.input(b"data")
    with pytest.raises(wgt.JobDefinitionError):
        wgt.verify("hash")


def test_nested_jobs_and_exceptions_leave_nothing_behind():
    with wgt.Job("outer") as outer:
        with wgt.Job("inner") as inner:
            wgt.input(b"abc")
        wgt.input(b"outer-data")
    assert inner.input_spec.source == b"abc"
    assert outer.input_spec.source == b"outer-data"
    with pytest.raises(RuntimeError), wgt.Job("broken"):
        raise RuntimeError("boom")
    with pytest.raises(wgt.JobDefinitionError):
        wgt.input(b"x")  # the broken job's block is closed


def test_verify_is_both_the_package_and_the_dsl_call():
    assert wgt.verify.merkle_root([b"a"]) == wgt.verify.MerkleTree([b"a"]).root
    with wgt.Job("v") as job:
        wgt.verify("redundancy", replicas=3)
    assert (job.verification.mode, job.verification.replicas) == ("redundancy", 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda j: j.verify("magic"), "unknown verification mode"),
        (lambda j: j.verify("hash", replicas=2), "runs each chunk once"),
        (lambda j: j.verify("redundancy", replicas=0), "positive int"),
        (lambda j: j.verify("redundancy", replicas=3, max_replicas=2), "max_replicas"),
        (lambda j: j.retries(-1), "retries"),
        (lambda j: j.on_error("ignore"), "on_error"),
        (lambda j: j.limits(max_memory_bytes=0), "max_memory_bytes"),
        (lambda j: j.input(b"x", chunk_rows=10), "chunk_rows applies"),
        (lambda j: j.input(b"x", chunk_bytes=0), "chunk_bytes"),
        (lambda j: j.input({"a": 1}), "cannot use a dict"),
        (lambda j: j.input(Path("/no/such/file.csv")), "'/no/such/file.csv' does not exist"),
        (lambda j: j.input(Path(__file__).parent), "is a directory, not a file"),
        (lambda j: j.kernel(42), "cannot use a int as a kernel"),
    ],
)
def test_definition_errors_are_raised_when_defined(call, message):
    with pytest.raises(wgt.JobDefinitionError, match=message):
        call(wgt.Job("bad"))


def test_kernel_and_input_must_fit():
    job = wgt.Job("mismatch").input(b"bytes of text")
    with pytest.raises(wgt.JobDefinitionError, match="takes float64 input"):
        job.kernel(wgt.kernels.histogram(bins=4, lo=0, hi=1))


def test_missing_parts_and_too_many_replicas_fail_before_anything_runs():
    with wgt.LocalCluster(workers=2) as cluster:
        with pytest.raises(wgt.JobDefinitionError, match="no input"):
            wgt.Job("x").kernel(wgt.kernels.sum()).run(on=cluster)
        with pytest.raises(wgt.JobDefinitionError, match="no kernel"):
            wgt.Job("x").input([1.0]).run(on=cluster)
        job = wgt.Job("x").input([1.0]).kernel(wgt.kernels.sum()).verify("redundancy", replicas=3)
        with pytest.raises(wgt.JobDefinitionError, match="3 replicas but the cluster has 2"):
            job.run(on=cluster)


def test_text_chunks_never_split_a_word(tmp_path):
    text = " ".join(f"word{i}" for i in range(5000))
    for source in (text, tmp_path / "t.txt"):
        if not isinstance(source, str):
            source.write_text(text)
        spec = InputSpec(source, chunk_bytes=1000)
        chunks = list(iter_chunks(spec, "text"))
        assert b"".join(chunks) == text.encode()
        assert all(len(c) <= 1000 for c in chunks)
        assert sum(len(c.split()) for c in chunks) == 5000


def test_line_chunks_keep_whole_lines(tmp_path):
    lines = [f"row {i}\n" for i in range(1003)]
    path = tmp_path / "rows.txt"
    path.write_text("".join(lines))
    for source in (path, "".join(lines).encode()):
        chunks = list(iter_chunks(InputSpec(source, chunk_lines=100), "bytes"))
        assert len(chunks) == 11
        assert [c.count(b"\n") for c in chunks] == [100] * 10 + [3]


def test_row_chunks_cover_the_frame_in_order():
    df = pd.DataFrame({"a": np.arange(1000.0), "b": np.arange(1000) % 7})
    chunks = list(iter_chunks(InputSpec(df, chunk_rows=300), "records"))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    pd.testing.assert_frame_equal(pd.concat(chunks), df)
