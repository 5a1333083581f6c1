"""``wgtlab demo``: every built-in kernel over January 2013's NYC flights, inside the sandbox.

Until the job layer runs it, this is the demo: chunks of a real dataset go through encode,
``Sandbox.run`` and combine, and each result is checked against numpy / zlib computed directly.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

DATASET = "flights-2013-01.csv"


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the built-in kernels on sample data inside the sandbox",
        description=(
            "Run each built-in kernel (sum, min_max, histogram, count_where, word_count, "
            f"checksum) over {DATASET} (data/ in the repository) in the WebAssembly sandbox, "
            "and print the limits, fuel and time used, and results checked against numpy."
        ),
    )
    demo.add_argument("--rows", type=int, default=20_000, help="sample size (default %(default)s)")
    demo.add_argument(
        "--chunks", type=int, default=8, help="chunks per kernel (default %(default)s)"
    )
    demo.add_argument("--data", metavar="CSV", help=f"another CSV with the columns of {DATASET}")
    demo.set_defaults(handler=run_demo)


def find_dataset() -> Path | None:
    """data/flights-2013-01.csv at the repository root (the package's parent), if present."""
    import wgtlab

    for root in (Path(wgtlab.__file__).resolve().parent.parent, Path.cwd()):
        candidate = root / "data" / DATASET
        if candidate.is_file():
            return candidate
    return None


def _load(path: Path | None, rows: int) -> tuple[Any, bytes, str]:
    import pandas as pd

    if path is not None:
        frame = pd.read_csv(path, nrows=rows)
        return frame, path.read_bytes()[: 1 << 20], f"{path.name}, first {len(frame):,} rows"
    # No dataset next to the package (e.g. an installed wheel): synthetic flights, said so.
    rng = np.random.default_rng(2013)
    frame = pd.DataFrame(
        {
            "dep_delay": np.round(rng.gamma(1.2, 15.0, rows) - 10.0),
            "arr_delay": np.round(rng.normal(5.0, 40.0, rows)),
            "distance": rng.integers(80, 4983, rows).astype(float),
        }
    )
    frame.loc[rng.random(rows) < 0.02, ["dep_delay", "arr_delay"]] = np.nan  # cancelled
    text = frame.to_csv(index=False).encode()
    return frame, text, f"{rows:,} synthetic rows ({DATASET} not found)"


def run_demo(args: argparse.Namespace) -> int:
    import wgtlab as wgt

    path = Path(args.data) if args.data else find_dataset()
    frame, text, source = _load(path, args.rows)
    limits = wgt.ResourceLimits(max_memory_bytes=64 << 20, max_cpu_cycles=50_000_000)
    sandbox = wgt.Sandbox(limits)
    print(f"data:   {source}")
    print(
        f"limits: memory {limits.max_memory_bytes >> 20} MiB, fuel {limits.max_cpu_cycles:,}, "
        f"wall clock {limits.max_execution_time_ms:,} ms, stack {limits.max_stack_bytes >> 10} "
        f"KiB per task; a fresh wasmtime Store per chunk"
    )
    print()

    dep, arr, dist = (frame[c] for c in ("dep_delay", "arr_delay", "distance"))
    text_chunks = [text[i : i + 65_536] for i in range(0, len(text), 65_536)]
    jobs: list[tuple[str, Any, list[Any], Any]] = [
        ("distance", wgt.kernels.sum(), _split(dist, args.chunks), math.fsum(dist.dropna())),
        ("arr_delay", wgt.kernels.min_max(), _split(arr, args.chunks), (arr.min(), arr.max())),
        (
            "dep_delay",
            wgt.kernels.histogram(bins=10, lo=-30.0, hi=120.0),
            _split(dep, args.chunks),
            np.histogram(dep.dropna(), bins=10, range=(-30.0, 120.0))[0],
        ),
        (
            "arr_delay",
            wgt.kernels.count_where(">", 15.0),
            _split(arr, args.chunks),
            int((arr > 15.0).sum()),
        ),
        ("CSV text", wgt.kernels.word_count(), text_chunks, len(text.split())),
        ("CSV bytes", wgt.kernels.checksum(), text_chunks, zlib.adler32(text)),
    ]
    all_match = True
    for column, kernel, chunks, expected in jobs:
        fuel = 0
        started = time.perf_counter()
        partials = []
        for chunk in chunks:
            result = kernel.execute(sandbox, kernel.encode(chunk))
            fuel += result.fuel_used
            partials.append(kernel.decode(result.output))
        value = kernel.combine(partials)
        elapsed = (time.perf_counter() - started) * 1000.0
        match = _equal(value, expected)
        all_match &= match
        print(f"{kernel!r} over {column}")
        print(f"  module  {kernel.module.name} sha256 {kernel.digest[:16]}...")
        print(
            f"  ran     {len(chunks)} chunks, fuel {fuel:,}, {elapsed:.1f} ms "
            "(encode + sandbox + decode)"
        )
        print(f"  result  {_show(value)}")
        print(f"  check   {'matches' if match else 'DIFFERS FROM'} numpy/zlib computed directly")
        print()
    print("all results match" if all_match else "SOME RESULTS DIFFER")
    return 0 if all_match else 1


def _split(series: Any, chunks: int) -> list[Any]:
    bounds = np.linspace(0, len(series), max(1, chunks) + 1).astype(int)
    return [series.iloc[a:b] for a, b in itertools.pairwise(bounds)]


def _equal(value: Any, expected: Any) -> bool:
    if isinstance(value, np.ndarray):
        return bool(np.array_equal(value, expected))
    return value == expected


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "[" + " ".join(str(int(v)) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"
