"""Jobs on DaskCluster.local (2 worker processes, mutual TLS) against the references it must meet.

Prints each figure and its ratio against the reference measured in the same run (the machine is
shared: each side is measured ROUNDS times, interleaved, and the best of each is compared):
- a CPU-bound kernel over 64 chunks: throughput vs LocalCluster(2) (target >= 0.8x);
- trivial sandboxed chunks: time per task vs bare Dask no-op tasks on the same cluster and
  client (``client.map`` + ``gather``; target <= 2x).
"""

from __future__ import annotations

import time
from typing import Any

from modules import SPIN, TRIVIAL  # benchmarks/modules.py

import wgtlab as wgt
from wgtlab.cluster.base import Cluster
from wgtlab.cluster.dask import DaskCluster

CHUNKS = 64
TASKS = 600
ROUNDS = 3


def noop_task(header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """A bare task with a wgtlab task's arguments, for measuring Dask's own per-task cost.

    Defined in this script, so cloudpickle sends it to the workers by value (under a kilobyte):
    nothing in wgtlab's worker code exists only for this measurement.
    """
    return {"ok": True}


def job_seconds(module: wgt.WasmModule, chunks: int, cluster: Cluster) -> float:
    job = wgt.Job("bench").input(b"x" * chunks, chunk_bytes=1).kernel(module)
    started = time.perf_counter()
    result = job.run(on=cluster, cache=False)
    elapsed = time.perf_counter() - started
    assert result.ok and len(result.outcomes) == chunks
    return elapsed


def bare_dask_seconds(cluster: DaskCluster, n: int) -> float:
    client = cluster.client
    header = {"job_id": "bench", "task_id": 0, "chunk": 0, "replica": 0, "digest": ""}
    started = time.perf_counter()
    client.gather(client.map(noop_task, [header] * n, [b"x"] * n, pure=False))
    return time.perf_counter() - started


def main() -> None:
    spin = wgt.WasmModule.from_wat(SPIN, name="spin")
    trivial = wgt.WasmModule.from_wat(TRIVIAL, name="trivial")
    with wgt.LocalCluster(workers=2) as local, wgt.DaskCluster.local(n_workers=2) as remote:
        for cluster in (local, remote):  # warm up: compile, install, first connections
            job_seconds(spin, 4, cluster)
            job_seconds(trivial, 50, cluster)
        bare_dask_seconds(remote, 100)

        timings: dict[str, list[float]] = {"local": [], "remote": [], "ours": [], "bare": []}
        for _ in range(ROUNDS):
            timings["local"].append(job_seconds(spin, CHUNKS, local))
            timings["remote"].append(job_seconds(spin, CHUNKS, remote))
            timings["ours"].append(job_seconds(trivial, TASKS, remote) / TASKS)
            timings["bare"].append(bare_dask_seconds(remote, TASKS) / TASKS)
        local_s, remote_s, ours, bare = (
            min(timings[k]) for k in ("local", "remote", "ours", "bare")
        )
        ratio = local_s / remote_s
        print(
            f"cpu-bound job, {CHUNKS} chunks: DaskCluster.local(2, TLS) "
            f"{CHUNKS / remote_s:.1f} chunks/s vs LocalCluster(2) {CHUNKS / local_s:.1f} chunks/s"
            f" -> {ratio:.2f}x the local throughput (target >= 0.8x)"
        )

        print(
            f"per task: wgtlab job on DaskCluster {ours * 1e3:.2f} ms vs bare Dask no-op "
            f"{bare * 1e3:.2f} ms on the same cluster -> {ours / bare:.2f}x (target <= 2x)"
        )


if __name__ == "__main__":
    main()
