"""``wgtlab demo``: the main job, end to end; ``DESCRIPTION`` (its --help) says what it shows."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

DESCRIPTION = """\
The main job, end to end, on real data with one lying worker.

Five sandboxed local workers, one of which lies on every task, run a histogram of January 2013
NYC flight distances with redundancy; the report shows the verified result, the lies caught,
each worker's trust before and after, the Merkle root, and a CES round trip with two shards lost.
"""
DEMO_KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job: a verified histogram with a lying worker, plus a CES round trip",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=5, help="local workers (default 5)")
    parser.add_argument("--replicas", type=int, default=3, help="replicas per chunk (default 3)")
    parser.add_argument("--chunk-rows", type=int, default=1000, help="rows per chunk")
    parser.add_argument(
        "--out", type=Path, default=Path("wgtlab-demo"), help="where the PNG plots go"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import numpy as np

    import wgtlab as wgt
    from wgtlab import defaults, samples
    from wgtlab.jobs.events import TextProgress
    from wgtlab.views import plots

    flights = samples.flights()
    distance = flights["distance"].astype("float64")
    liar = "local-0"
    cluster = wgt.LocalCluster(
        workers=args.workers, faults={liar: wgt.faults.Liar(rate=1.0, seed=7)}, seed=1
    )
    print(
        f"wgtlab demo: {len(flights):,} NYC flights (Jan 2013, {samples.FLIGHTS}), "
        f"{args.workers} sandboxed workers, {liar} lies on every task"
    )
    with wgt.Job("flight-distance-histogram") as job:
        job.input(distance, chunk_rows=args.chunk_rows)
        job.kernel(wgt.kernels.histogram(bins=12, lo=0.0, hi=3000.0))
        job.verify("redundancy", replicas=args.replicas)
    limits = job.resource_limits
    print(
        f"limits: {limits.max_memory_bytes >> 20} MiB memory, {limits.max_cpu_cycles:,} fuel, "
        f"{limits.max_execution_time_ms / 1000:g} s wall clock, {limits.max_stack_bytes >> 10} KiB "
        f"stack; verification: redundancy x{args.replicas} (unanimous, or escalated to a strict "
        "majority)"
    )
    progress = None
    if not args.no_progress:
        progress = job.subscribe(TextProgress(total=math.ceil(len(distance) / args.chunk_rows)))
    with cluster:
        # A demonstration computes every chunk: earlier runs' verified outcomes would leave the
        # liar nothing to lie about.
        result = job.run(on=cluster, cache=False)
    if progress is not None:
        progress.close()

    expected, _ = np.histogram(distance[(distance >= 0) & (distance <= 3000)], 12, (0, 3000))
    exact = bool(np.array_equal(result.value, expected))
    verified = int((result.chunks.status == "verified").sum())
    print(f"\nresult (flights per 250-mile bin): {list(map(int, result.value))}")
    print(f"equals numpy.histogram on the trusted side: {exact}")
    print(
        f"chunks verified: {verified}/{len(result.outcomes)}; lies caught: "
        f"{result.disagreements}; time {result.seconds:.2f} s"
    )
    print(f"merkle root: {result.merkle_root} (tree size {result.tree_size})")
    proof = result.proof(0)
    print(f"proof for chunk 0: {len(proof.path)} hashes, verifies: {proof.verify()}")
    before = result.trust_before.set_index("label")["score"].to_dict()
    after = result.trust.set_index("label")["score"].to_dict()
    print("\ntrust      before  after   state")
    for name in cluster.worker_names():
        state = "quarantined" if cluster.policy.is_quarantined(cluster.fingerprint(name)) else "ok"
        start = float(before.get(name, defaults.TRUST_INITIAL_SCORE))
        end = float(after.get(name, start))  # a worker given no task keeps its score
        print(f"  {name:8} {start:6.3f}  {end:6.3f}  {state}")

    args.out.mkdir(parents=True, exist_ok=True)
    trust_png = args.out / "trust.png"
    grid_png = args.out / "verification.png"
    threshold = cluster.policy.quarantine_threshold
    plots.trust_timeline(cluster.ledger.history(), threshold).savefig(trust_png, dpi=110)
    plots.verification_grid(result.verification).savefig(grid_png, dpi=110)
    print(f"\nplots: {trust_png}, {grid_png}")

    _ces_round_trip()
    return 0 if exact and result.ok else 1


def _ces_round_trip() -> None:
    import wgtlab as wgt
    from wgtlab import samples

    data = samples.path().read_bytes()
    pipe = wgt.CESPipeline(key=DEMO_KEY, data_shards=8, parity_shards=4)
    started = time.perf_counter()
    shards = pipe.process(data)
    sealed = time.perf_counter() - started
    lost = [2, 9]
    for i in lost:
        shards[i] = None
    started = time.perf_counter()
    rebuilt = pipe.reconstruct(shards)
    rebuilt_s = time.perf_counter() - started
    size = sum(len(s) for s in shards if s is not None)
    print(
        f"\nCES: {len(data):,} bytes -> 12 shards (8 data + 4 parity, zstd + XChaCha20-Poly1305) "
        f"in {sealed * 1000:.0f} ms; lost shards {lost}; rebuilt in {rebuilt_s * 1000:.0f} ms "
        f"from {size:,} bytes; exact: {rebuilt == data}"
    )
    print("(the demo uses a fixed key; real data needs your own key or CES_ENCRYPTION_KEY)")
