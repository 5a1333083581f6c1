"""Benchmark for receipts: the size of a receipt per 1,000 chunks and the time to verify it, with
and without the data and an audit re-running 10 chunks in the local sandbox; for one worker's
word per chunk (hash) and for three (redundancy). Each figure is printed with its target."""

from __future__ import annotations

import os
import sys
import tempfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np
import pandas as pd
from timing import best_of, verdict  # benchmarks/timing.py

CHUNKS = 1_000
ROWS_PER_CHUNK = 1_000
AUDIT = 10
SIZE_TARGET = 1 << 20  # bytes per 1,000 chunks
VERIFY_TARGET = 1.0  # seconds per 1,000 chunks, without the data
AUDIT_TARGET = 5.0  # seconds per 1,000 chunks, with the data and an audit of 10


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="wgt-bench-receipts-"))
    os.environ["WGTLAB_IDENTITY"] = str(tmp / "identity.key")  # never the user's own key
    os.environ["WGTLAB_RESULT_CACHE"] = "off"  # every chunk computed and signed in this run
    import wgtlab as wgt

    values = pd.Series(np.random.default_rng(7).random(CHUNKS * ROWS_PER_CHUNK), name="x")
    data = tmp / "data.parquet"
    values.to_frame().to_parquet(data)
    results = []
    with wgt.LocalCluster(workers=4) as cluster:
        for mode, replicas in (("hash", 1), ("redundancy", 3)):
            with wgt.Job(f"bench-{mode}") as job:
                job.input(values, chunk_rows=ROWS_PER_CHUNK)
                job.kernel(wgt.kernels.sum())
                job.verify(mode, replicas=replicas)
            result = job.run(on=cluster, cache=False)
            assert result.ok and len(result.outcomes) == CHUNKS

            made = best_of(result.receipt, 3)
            receipt = result.receipt()
            path = receipt.save(tmp / f"{mode}.json")
            size = path.stat().st_size
            packed = len(zlib.compress(path.read_bytes(), 6))
            loaded = wgt.Receipt.load(path)
            plain = best_of(lambda r=loaded: r.verify(), 5)
            audited = best_of(lambda r=loaded: r.verify(data=data, audit=AUDIT), 3)
            assert loaded.verify(data=data, audit=AUDIT).ok

            per = 1_000 / CHUNKS
            label = f"{mode} ({replicas} signature{'s' if replicas > 1 else ''} per chunk)"
            results.append(size * per <= SIZE_TARGET)
            print(
                f"receipt size, {label}: {size * per / 1024:,.0f} KiB per 1,000 chunks "
                f"({size / CHUNKS:,.0f} bytes a chunk; {packed * per / 1024:,.0f} KiB zlib-"
                f"compressed); target <= {SIZE_TARGET >> 10:,} KiB {verdict(results[-1])}"
            )
            print(f"  made and signed in {made * per * 1e3:,.0f} ms per 1,000 chunks")
            results.append(plain * per <= VERIFY_TARGET)
            print(
                f"  verify (envelope, statement, roots, every worker signature): "
                f"{plain * per * 1e3:,.0f} ms per 1,000 chunks; target <= "
                f"{VERIFY_TARGET * 1e3:,.0f} ms {verdict(results[-1])}"
            )
            results.append(audited * per <= AUDIT_TARGET)
            print(
                f"  verify with the data (all {CHUNKS:,} input digests recomputed from Parquet) "
                f"and an audit of {AUDIT} chunks re-run in the sandbox: {audited * per:,.2f} s "
                f"per 1,000 chunks; target <= {AUDIT_TARGET:,.0f} s {verdict(results[-1])}"
            )
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
