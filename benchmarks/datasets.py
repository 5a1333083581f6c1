"""Deterministic benchmark inputs: a realistic CSV of taxi trips and incompressible bytes.

Every benchmark uses these, so figures are comparable between areas and runs; nothing is
downloaded. The same (size, seed) always gives the same bytes.
"""

from __future__ import annotations

import io

import numpy as np

MIB = 1 << 20

# ~260 zones, like the NYC taxi zone table: names repeat, as in real trip logs.
_BOROUGHS = ("Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR")
_PAYMENTS = ("card", "cash", "no charge", "dispute")
_VENDORS = ("CMT", "VTS", "DDS")
_ROWS_PER_BLOCK = 50_000  # ~5 MiB of CSV per block; keeps memory small while generating


def random_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` incompressible bytes, the same for the same seed."""
    return np.random.default_rng(seed).bytes(n)


def realistic_csv(n_bytes: int = 64 * MIB, seed: int = 0) -> bytes:
    """A CSV of taxi trips of at most ``n_bytes``, ending at a row boundary.

    The columns mix what real exports contain (ids, timestamps, coordinates, categories, skewed
    floats), so
    zstd level 3 compresses it about 3x, like real trip logs. With ``n_bytes`` under the size of
    the header row the result is the header cut to ``n_bytes``.
    """
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    rng = np.random.default_rng(seed)
    zones = np.array(
        [f"{_BOROUGHS[i % len(_BOROUGHS)]} zone {i:03d}" for i in range(263)], dtype=object
    )
    zone_weights = rng.lognormal(0.0, 1.0, size=len(zones))
    zone_weights /= zone_weights.sum()

    out = io.BytesIO()
    header = (
        b"trip_id,vendor,pickup_datetime,dropoff_datetime,passenger_count,trip_distance,"
        b"pickup_longitude,pickup_latitude,dropoff_longitude,dropoff_latitude,pickup_zone,dropoff_zone,"
        b"payment_type,fare_amount,tip_amount,total_amount\n"
    )
    out.write(header)
    start = np.datetime64("2024-01-01T00:00:00", "s")
    trip_id, clock = 1_000_000, 0
    while out.tell() < n_bytes:
        n = _ROWS_PER_BLOCK
        gaps = rng.exponential(1.5, size=n).astype(np.int64)
        pickups = clock + np.cumsum(gaps)
        clock = int(pickups[-1])
        distance = np.round(rng.lognormal(0.6, 0.8, size=n), 2)
        duration = (distance * rng.uniform(120, 420, size=n)).astype(np.int64) + 60
        fare = np.round(3.0 + distance * 2.5 + duration / 60 * 0.5, 2)
        payment = rng.choice(len(_PAYMENTS), size=n, p=(0.7, 0.27, 0.02, 0.01))
        tip = np.where(payment == 0, np.round(fare * rng.choice([0, 0.15, 0.2, 0.25], n), 2), 0.0)
        table = {
            "trip_id": np.arange(trip_id, trip_id + n),
            "vendor": np.array(_VENDORS, dtype=object)[rng.choice(3, size=n, p=(0.4, 0.55, 0.05))],
            "pickup": (start + pickups).astype(str),
            "dropoff": (start + pickups + duration).astype(str),
            "passengers": rng.choice(6, size=n, p=(0.7, 0.15, 0.05, 0.04, 0.03, 0.03)) + 1,
            "distance": distance,
            "lon": rng.normal(-73.97, 0.04, size=n),
            "lat": rng.normal(40.75, 0.03, size=n),
            "dlon": rng.normal(-73.97, 0.05, size=n),
            "dlat": rng.normal(40.75, 0.04, size=n),
            "pu": zones[rng.choice(len(zones), size=n, p=zone_weights)],
            "do": zones[rng.choice(len(zones), size=n, p=zone_weights)],
            "payment": np.array(_PAYMENTS, dtype=object)[payment],
            "fare": fare,
            "tip": tip,
            "total": np.round(fare + tip + 0.5, 2),
        }
        trip_id += n
        rows = [
            f"{a},{b},{c.replace('T', ' ')},{d.replace('T', ' ')},{e},{f:.2f},{x:.6f},{y:.6f},"
            f"{u:.6f},{v:.6f},{g},{h},{i},{j:.2f},{k:.2f},{m:.2f}\n"
            for a, b, c, d, e, f, x, y, u, v, g, h, i, j, k, m in zip(*table.values(), strict=True)
        ]
        out.write("".join(rows).encode())
    data = out.getbuffer()[:n_bytes]
    cut = bytes(data).rfind(b"\n") + 1
    return bytes(data[:cut]) if cut else bytes(data)


if __name__ == "__main__":  # a quick look: size, first rows, zstd ratio
    import time

    import zstandard

    t = time.perf_counter()
    sample = realistic_csv(64 * MIB)
    took = time.perf_counter() - t
    ratio = len(sample) / len(zstandard.ZstdCompressor(level=3).compress(sample))
    print(sample[:400].decode())
    print(f"{len(sample) / MIB:.1f} MiB in {took:.1f} s; zstd level 3 ratio {ratio:.2f}")
