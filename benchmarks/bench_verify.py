"""Benchmarks for verification and trust: Merkle build vs flat SHA-256, proofs vs one build, and
the ledger's batched recording rate. Each figure is printed with its ratio to the reference."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from timing import best_of, verdict  # benchmarks/timing.py

from wgtlab.trust import TrustLedger
from wgtlab.verify import MerkleTree, verify_proof

DATA_BYTES = 64 << 20
LEAF_BYTES = 64 << 10
LEDGER_OUTCOMES = 200_000
LEDGER_BATCH = 10_000
LEDGER_TARGET = 20_000  # outcomes per second


def main() -> int:
    data = os.urandom(DATA_BYTES)
    view = memoryview(data)
    leaves = [view[i : i + LEAF_BYTES] for i in range(0, DATA_BYTES, LEAF_BYTES)]

    flat = best_of(lambda: hashlib.sha256(data).digest())
    build = best_of(lambda: MerkleTree(leaves))
    ratio = flat / build
    results = [ratio >= 0.8]
    print(
        f"merkle build, 64 MiB in {len(leaves)} leaves of 64 KiB: "
        f"{DATA_BYTES / build / 1e9:.2f} GB/s; flat hashlib sha256: {DATA_BYTES / flat / 1e9:.2f}"
        f" GB/s; ratio {ratio:.2f}x (target >= 0.80x) {verdict(results[-1])}"
    )

    tree = MerkleTree(leaves)
    proofs = best_of(lambda: [tree.proof(i) for i in range(tree.size)])
    results.append(proofs < build)
    print(
        f"proofs for all {tree.size} leaves: {proofs * 1e3:.2f} ms; one build: {build * 1e3:.1f}"
        f" ms; ratio {proofs / build:.3f} of a build (target < 1) {verdict(results[-1])}"
    )
    all_proofs = [tree.proof(i) for i in range(tree.size)]
    assert all(verify_proof(leaves[p.index], p.index, p.tree_size, p.path, p.root)
               for p in all_proofs)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        ledger = TrustLedger(Path(tmp) / "bench.sqlite3")
        outcomes = [(f"worker-{i % 64}", i % 10 != 0, "bench", i) for i in range(LEDGER_OUTCOMES)]
        start = time.perf_counter()
        for k in range(0, LEDGER_OUTCOMES, LEDGER_BATCH):
            ledger.record_many(outcomes[k : k + LEDGER_BATCH])
        rate = LEDGER_OUTCOMES / (time.perf_counter() - start)
        results.append(rate >= LEDGER_TARGET)
        print(
            f"ledger record_many ({LEDGER_BATCH:,} per transaction, file in WAL mode): "
            f"{rate:,.0f} outcomes/s; target {LEDGER_TARGET:,}/s; ratio {rate / LEDGER_TARGET:.2f}x"
            f" {verdict(results[-1])}"
        )
        start = time.perf_counter()
        for i in range(5_000):
            ledger.record(f"worker-{i % 64}", True, job="single", chunk=i)
        single = 5_000 / (time.perf_counter() - start)
        print(f"ledger record (one transaction each, for reference): {single:,.0f} outcomes/s")
        ledger.close()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
