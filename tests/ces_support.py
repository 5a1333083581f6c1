"""What the CES tests share: one test key, the smallest segment size, small pipelines, and
sample data with both compressible and incompressible segments."""

from __future__ import annotations

import random

import wgtlab as wgt

KEY = bytes(range(32))
SEGMENT = 1024  # the smallest segment: many segments from small inputs


def pipeline(k: int, m: int, **options: object) -> wgt.CESPipeline:
    """A pipeline under the test key with ``k`` data and ``m`` parity shards, 1 KiB segments."""
    return wgt.CESPipeline(KEY, data_shards=k, parity_shards=m, segment_size=SEGMENT, **options)


def sample(n: int, seed: int = 0) -> bytes:
    """``n`` bytes alternating 1 KiB of CSV-like text and 1 KiB of noise: both kinds of segment."""
    rng = random.Random(seed)
    text = b"".join(b"%d,%s,%.3f\n" % (i, b"abc"[i % 3 :], i / 7) for i in range(n // 8 + 1))
    noise = rng.randbytes(n)
    return b"".join(
        (text if (i // 1024) % 2 == 0 else noise)[i : min(n, i + 1024)] for i in range(0, n, 1024)
    )
