"""CES throughput and memory: every figure printed with its reference, measured in the same run.

Targets (issue 3), on a 64 MiB realistic CSV and 64 MiB of random bytes:
  process (8+4, level 3)           >= 0.8x zstd alone at level 3 on both cores
  reconstruct, 4 shards missing    >= 1.0x single-thread zstd decompression
  erasure stage alone              >= 2x zfec (one thread each)
  encryption stage alone           >= 3x PyNaCl (all cores each, as for zstd above)
  process_file / reconstruct_file on a 1 GiB file: peak RSS < 256 MiB (own subprocess each)

Target (issue 16, item 4), on 64 MiB of random bytes (data that does not compress):
  process (8+4, level 3)           >= 0.8x the stage limit: each stage measured alone on the same
                                   bytes in the same run (zstd level 3 on all cores, and per
                                   thread XChaCha20-Poly1305, ISA-L 8+4 encode, BLAKE3 of the
                                   fragments), pipelined over all cores

Run from the repository root: ``python benchmarks/bench_ces.py`` (``--no-file`` skips the 1 GiB
part, ``--incompressible`` runs only the issue 16 figure). Ratios are what to trust on a shared
machine; absolute MB/s move from run to run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import nacl.bindings
import zstandard
from zfec import easyfec

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import datasets  # noqa: E402

import wgtlab as wgt  # noqa: E402
from wgtlab.ces.aead import XChaCha20Poly1305  # noqa: E402
from wgtlab.ces.erasure import ErasureCodec  # noqa: E402

MIB = 1 << 20
SEGMENT = 4 * MIB
RESULTS: list[bool] = []


def best_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def paired_seconds(
    ours: Callable[[], object], reference: Callable[[], object], repeat: int = 5
) -> tuple[float, float]:
    """Best times of two functions run alternately, so both meet the same machine load."""
    best_ours = best_ref = float("inf")
    for _ in range(repeat):
        best_ref = min(best_ref, best_seconds(reference, 1))
        best_ours = min(best_ours, best_seconds(ours, 1))
    return best_ours, best_ref


def report(
    name: str, nbytes: int, seconds: float, ref_name: str, ref_seconds: float, target: float | None
) -> None:
    ours, ref = nbytes / seconds / 1e6, nbytes / ref_seconds / 1e6
    ratio = ours / ref
    verdict = ""
    if target is not None:
        RESULTS.append(ratio >= target)
        verdict = f"  target >= {target:.1f}x: {'met' if ratio >= target else 'MISSED'}"
    print(
        f"  {name:<34} {ours:8.0f} MB/s | {ref_name:<34} {ref:8.0f} MB/s | "
        f"ratio {ratio:5.2f}x{verdict}"
    )


def pipeline_figures(label: str, data: bytes, targets: bool) -> None:
    print(f"\n{label}: {len(data) / MIB:.1f} MiB")
    pipe = wgt.CESPipeline(os.urandom(32), compression_level=3, data_shards=8, parity_shards=4)
    zstd_both = zstandard.ZstdCompressor(level=3, threads=2)
    t_process, t_zstd = paired_seconds(lambda: pipe.process(data), lambda: zstd_both.compress(data))
    report(
        "process (8+4, level 3)",
        len(data),
        t_process,
        "zstd level 3 alone, 2 threads",
        t_zstd,
        0.8 if targets else None,
    )

    frame = zstandard.ZstdCompressor(level=3).compress(data)
    shards = pipe.process(data)
    lost = [None] * 4 + shards[4:]  # four data shards lost: real erasure decoding
    assert pipe.reconstruct(lost) == data
    t_rebuild, t_unzstd = paired_seconds(
        lambda: pipe.reconstruct(lost), lambda: zstandard.ZstdDecompressor().decompress(frame)
    )
    report(
        "reconstruct, 4 of 12 shards lost",
        len(data),
        t_rebuild,
        "zstd decompress, 1 thread",
        t_unzstd,
        1.0 if targets else None,
    )
    stored = sum(len(s) for s in shards)
    print(
        f"  shards hold {stored / len(data):.2f}x the input ({stored / MIB:.1f} MiB, "
        f"zstd level 3 alone: {len(frame) / MIB:.1f} MiB)"
    )


def incompressible_figures(data: bytes, rounds: int = 5) -> None:
    """CES process on bytes that do not compress vs the limit its stages allow (issue 16, 4).

    Each stage runs alone on the same bytes, cut as the pipeline cuts them: zstd level 3 on all
    cores (what compression costs when it is attempted), then per thread XChaCha20-Poly1305 of
    each segment, ISA-L encode of each sealed segment and BLAKE3 of every fragment. Their
    pipelined bound on ``cores`` cores: every core runs every stage on its share, so the
    core-seconds per byte add up: ``cores / (cores/zstd + 1/aead + 1/erasure + 1/blake3)``.
    Stages and process run alternately, ``rounds`` times, best of each: they meet the same load.
    """
    cores = os.cpu_count() or 1
    print(f"\nrandom bytes, stage limit vs CES process: {len(data) / MIB:.1f} MiB, {cores} cores")
    segments = [data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)]
    zstd_all = zstandard.ZstdCompressor(level=3, threads=cores)
    aead, nonce, aad = XChaCha20Poly1305(os.urandom(32)), os.urandom(24), os.urandom(45)
    sealed_out = bytearray(SEGMENT + 16)
    codec = ErasureCodec(8, 4)
    sealed = [bytes(25) + s + bytes(16) for s in segments]  # flags + nonce + ciphertext + tag
    fragments = [codec.encode(s) for s in sealed]
    pipe = wgt.CESPipeline(os.urandom(32), compression_level=3, data_shards=8, parity_shards=4)
    assert pipe.reconstruct([None] * 4 + pipe.process(data)[4:]) == data

    def encrypt() -> None:
        for s in segments:
            aead.encrypt_into(nonce, s, aad, sealed_out[: len(s) + 16])

    def checksums() -> None:
        for parts in fragments:
            for f in parts:
                blake3.blake3(f).digest()

    stages: dict[str, Callable[[], object]] = {
        "zstd level 3": lambda: zstd_all.compress(data),
        "XChaCha20-Poly1305": encrypt,
        "ISA-L 8+4 encode": lambda: [codec.encode(s) for s in sealed],
        "BLAKE3 of fragments": checksums,
        "process": lambda: pipe.process(data),
    }
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(rounds):
        for name, fn in stages.items():
            best[name] = min(best[name], best_seconds(fn, 1))
    rate = {name: len(data) / seconds / 1e6 for name, seconds in best.items()}
    print(f"  {'zstd level 3, ' + str(cores) + ' threads':<34} {rate['zstd level 3']:8.0f} MB/s")
    for name in ("XChaCha20-Poly1305", "ISA-L 8+4 encode", "BLAKE3 of fragments"):
        print(f"  {name + ', per thread':<34} {rate[name]:8.0f} MB/s (of input)")
    per_core = (
        cores / rate["zstd level 3"]
        + 1 / rate["XChaCha20-Poly1305"]
        + 1 / rate["ISA-L 8+4 encode"]
        + 1 / rate["BLAKE3 of fragments"]
    )
    limit_seconds = len(data) / 1e6 * per_core / cores
    report(
        "process (8+4, level 3)",
        len(data),
        best["process"],
        f"stage limit, {cores} cores pipelined",
        limit_seconds,
        0.8,
    )


def erasure_figures(data: bytes) -> None:
    print("\nerasure stage alone, 8+4, 4 MiB segments, one thread")
    segments = [data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)]
    codec = ErasureCodec(8, 4)
    ours = [codec.encode(s) for s in segments]
    zfec_enc, zfec_dec = easyfec.Encoder(8, 12), easyfec.Decoder(8, 12)
    theirs = [zfec_enc.encode(s) for s in segments]
    t_ours, t_zfec = paired_seconds(
        lambda: [codec.encode(s) for s in segments], lambda: [zfec_enc.encode(s) for s in segments]
    )
    report("pyeclib ISA-L encode", len(data), t_ours, "zfec encode", t_zfec, 2.0)

    keep = range(4, 12)  # the four data fragments 0-3 are lost

    def ours_decode() -> None:
        for fragments in ours:
            codec.decode({i: fragments[i] for i in keep})

    def zfec_decode() -> None:
        for segment, blocks in zip(segments, theirs, strict=True):
            pad = len(blocks[0]) * 8 - len(segment)
            zfec_dec.decode([blocks[i] for i in keep], list(keep), pad)

    assert codec.decode({i: ours[0][i] for i in keep}) == segments[0]
    t_ours, t_zfec = paired_seconds(ours_decode, zfec_decode)
    report("pyeclib ISA-L decode, 4 lost", len(data), t_ours, "zfec decode, 4 lost", t_zfec, 2.0)


def encryption_figures(data: bytes) -> None:
    print("\nencryption stage alone, XChaCha20-Poly1305, 4 MiB segments")
    segments = [data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)]
    key, nonce, aad = os.urandom(32), os.urandom(24), os.urandom(44)
    aead = XChaCha20Poly1305(key)
    assert aead.encrypt(nonce, segments[0], aad) == (
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(segments[0], aad, nonce, key)
    )
    buffers = threading.local()

    def ours(segment: bytes) -> None:  # as the pipeline seals: into a reused buffer
        out = getattr(buffers, "out", None)
        if out is None:
            out = buffers.out = bytearray(SEGMENT + 16)
        aead.encrypt_into(nonce, segment, aad, out)

    def sodium(segment: bytes) -> bytes:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(segment, aad, nonce, key)

    # Both cores each, as the pipeline runs its stages (PyNaCl's cffi calls release the GIL too).
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        t_ours, t_nacl = paired_seconds(
            lambda: list(pool.map(ours, segments)), lambda: list(pool.map(sodium, segments))
        )
    report("ours, all cores", len(data), t_ours, "PyNaCl (libsodium), all cores", t_nacl, 3.0)
    # One thread each: PyNaCl allocates its output every call, so its speed here swings with
    # the allocator's state (0.5 - 1.3 GB/s on the reference machine).
    t_ours, t_nacl = paired_seconds(
        lambda: [ours(s) for s in segments], lambda: [sodium(s) for s in segments]
    )
    report("ours, one thread", len(data), t_ours, "PyNaCl (libsodium), one thread", t_nacl, None)


# The child reports its own peak resident set (VmHWM): ru_maxrss would also count the parent's
# memory, which Linux carries across the fork + exec that starts the child.
CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import wgtlab as wgt
    pipe = wgt.CESPipeline(bytes(range(32)))
    start = time.perf_counter()
    if sys.argv[1] == "process":
        pipe.process_file(sys.argv[2], sys.argv[3])
    else:
        pipe.reconstruct_file(sys.argv[2], sys.argv[3])
    seconds = time.perf_counter() - start
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(seconds, int(peak.split()[1]) * 1024)
""")


def file_figures(total: int = 1024 * MIB) -> None:
    print(
        f"\nstreaming files: {total / MIB:.0f} MiB realistic CSV, 8+4, level 3, "
        "each step in its own process"
    )
    with tempfile.TemporaryDirectory(prefix="wgtlab-bench-ces-") as tmp:
        src, shards, out = Path(tmp, "big.csv"), Path(tmp, "shards"), Path(tmp, "rebuilt.csv")
        block = datasets.realistic_csv(64 * MIB, seed=1)
        with open(src, "wb") as f:
            written = 0
            while written < total:
                f.write(block[: total - written])
                written += min(len(block), total - written)
        del block
        script = CHILD.format(root=str(ROOT))
        for step, args in (
            ("process_file", ["process", src, shards]),
            ("reconstruct_file", ["reconstruct", shards, out]),
        ):
            if step == "reconstruct_file":  # lose four shards on the way back
                for i in (0, 3, 6, 9):
                    (shards / f"shard-{i:03d}.ces").unlink()
            result = subprocess.run(
                [sys.executable, "-c", script, *map(str, args)],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, peak = result.stdout.split()
            peak_mib = int(peak) / MIB
            RESULTS.append(peak_mib < 256)
            print(
                f"  {step:<18} {total / float(seconds) / 1e6:6.0f} MB/s, peak RSS "
                f"{peak_mib:5.0f} MiB  target < 256 MiB: {'met' if peak_mib < 256 else 'MISSED'}"
            )
        same = _digest(src) == _digest(out)
        RESULTS.append(same)
        print(f"  rebuilt file identical to the source: {same}")


def _digest(path: Path) -> bytes:
    hasher = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            hasher.update(chunk)
    return hasher.digest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-file", action="store_true", help="skip the 1 GiB file part")
    parser.add_argument(
        "--incompressible", action="store_true", help="only the random bytes vs stage limit figure"
    )
    args = parser.parse_args()
    print(
        f"CES benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"zstandard {zstandard.__version__}"
    )
    if args.incompressible:
        incompressible_figures(datasets.random_bytes(64 * MIB, seed=1))
        print(f"\n{sum(RESULTS)} of {len(RESULTS)} targets met")
        return 0 if all(RESULTS) else 1
    csv = datasets.realistic_csv(64 * MIB)
    noise = datasets.random_bytes(64 * MIB, seed=1)
    pipeline_figures("realistic CSV", csv, targets=True)
    # On incompressible bytes zstd only copies them, so "zstd alone" is a memcpy: these rows show
    # the cost of sealing and sharding 1.5x the data, not a target.
    pipeline_figures("random bytes (no target: zstd stores them raw)", noise, targets=False)
    incompressible_figures(noise)
    erasure_figures(noise)
    encryption_figures(noise)
    if not args.no_file:
        file_figures()
    print(f"\n{sum(RESULTS)} of {len(RESULTS)} targets met")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
