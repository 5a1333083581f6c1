"""Jobs through the embedded LocalCluster: task rate, scaling across workers, redundancy cost.

Prints each figure and its ratio against the reference measured in the same run:
- trivial sandboxed chunks (verify="hash") per second vs dask.distributed's in-process
  LocalCluster running no-op tasks (target >= 1.5x);
- a CPU-bound kernel over 64 chunks on 2 workers vs 1 worker (target >= 1.85x);
- redundancy with replicas=2 vs verify="hash" on the same job (target <= 2.1x the time).
Every run computes every chunk (``cache=False``): the verified-result cache would serve reruns.
"""

from __future__ import annotations

import time

from modules import SPIN, TRIVIAL  # benchmarks/modules.py

import wgtlab as wgt


def job_seconds(
    module, chunks: int, cluster, mode: str = "hash", replicas: int = 1, **verify
) -> float:
    job = wgt.Job("bench").input(b"x" * chunks, chunk_bytes=1).kernel(module)
    job.verify(mode, replicas=replicas if mode == "redundancy" else None, **verify)
    started = time.perf_counter()
    result = job.run(on=cluster, cache=False)  # every chunk computed: no verified-result cache
    elapsed = time.perf_counter() - started
    assert result.ok and len(result.outcomes) == chunks
    return elapsed


def dask_noop_rate(n: int) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as c,
        Client(c) as client,
    ):
        client.gather(client.map(lambda i: i, range(200), pure=False))  # warm up
        started = time.perf_counter()
        client.gather(client.map(lambda i: i, range(n), pure=False))
        return n / (time.perf_counter() - started)


def main() -> None:
    trivial = wgt.WasmModule.from_wat(TRIVIAL)
    spin = wgt.WasmModule.from_wat(SPIN, name="spin")
    n = 2000

    with wgt.LocalCluster(workers=2) as cluster:
        job_seconds(trivial, 200, cluster)  # warm up: compile, engines, ticker
        ours = n / job_seconds(trivial, n, cluster)
    theirs = dask_noop_rate(n)
    print(
        f"trivial sandboxed chunks, LocalCluster(2), verify=hash: {ours:,.0f} tasks/s; dask "
        f"in-process LocalCluster no-op tasks: {theirs:,.0f} tasks/s; ratio {ours / theirs:.2f}x "
        f"(target >= 1.5x)"
    )

    with wgt.LocalCluster(workers=1) as one, wgt.LocalCluster(workers=2) as two:
        job_seconds(spin, 2, one)
        job_seconds(spin, 2, two)
        t1 = min(job_seconds(spin, 64, one) for _ in range(3))
        t2 = min(job_seconds(spin, 64, two) for _ in range(3))
    print(
        f"CPU-bound kernel, 64 chunks: 1 worker {t1:.2f} s, 2 workers {t2:.2f} s; speed-up "
        f"{t1 / t2:.2f}x (target >= 1.85x)"
    )

    # Full replication (the default: spot checking is opt-in).
    with wgt.LocalCluster(workers=2) as hashed, wgt.LocalCluster(workers=2) as replicated:
        job_seconds(spin, 2, hashed)
        job_seconds(spin, 2, replicated, "redundancy", 2)
        th = min(job_seconds(spin, 32, hashed) for _ in range(3))
        tr = min(job_seconds(spin, 32, replicated, "redundancy", 2) for _ in range(3))
    print(
        f"redundancy x2 (every chunk replicated) vs hash, 32 CPU-bound chunks on 2 workers: "
        f"{tr:.2f} s vs {th:.2f} s; ratio {tr / th:.2f}x (target <= 2.1x)"
    )
    with wgt.LocalCluster(workers=2) as spot:
        job_seconds(spin, 32, spot, "redundancy", 2, spot_check=0.1)  # workers build runs
        ta = job_seconds(spin, 32, spot, "redundancy", 2, spot_check=0.1)
    print(
        f"redundancy x2 with spot_check=0.1 (trusted workers replicated 1 chunk in 10): "
        f"{ta:.2f} s; ratio {ta / th:.2f}x of hash"
    )


if __name__ == "__main__":
    main()
