"""@wgt.udf gives what the same function gives natively: realistic analyses of real flight data.

Each function runs in the sandbox and natively on exactly the rows the sandbox received (the JSON
of the chunk), and the two results must match; then the same through jobs on a LocalCluster.
"""

from __future__ import annotations

import bisect
import collections
import csv
import datetime
import decimal
import fractions
import functools
import hashlib
import heapq
import io
import itertools
import json
import math
import re
import statistics
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from udf_support import ensure_runner

import wgtlab as wgt
from wgtlab.sandbox.python.chunks import chunk_value

DATA = Path(__file__).resolve().parents[1] / "data" / "flights-2013-01.csv"
FLIGHTS = pd.read_csv(DATA)
CHUNK = FLIGHTS.iloc[::9].reset_index(drop=True)  # 3,000 rows from across the month
DISTANCE_EDGES = [250, 500, 1000, 1500, 2500]
ROUTE = re.compile(r",(EWR|JFK|LGA),([A-Z]{3}),")
# CPython in WebAssembly burns ~5e9 fuel per second of work: the default 1e9 is a short budget.
LIMITS = wgt.ResourceLimits(max_cpu_cycles=20_000_000_000)


@pytest.fixture(scope="session", autouse=True)
def runner():
    return ensure_runner()


# --- the analyses ------------------------------------------------------------------------------


def flights_per_carrier(rows):
    return dict(collections.Counter(r["carrier"] for r in rows))


def delay_sums_by_origin(rows):
    sums = {}
    for r in rows:
        if r["arr_delay"] is not None:
            total, count = sums.get(r["origin"], (0.0, 0))
            sums[r["origin"]] = (total + r["arr_delay"], count + 1)
    return {origin: {"sum": s, "n": n} for origin, (s, n) in sums.items()}


def delay_statistics(rows):
    delays = [r["dep_delay"] for r in rows if r["dep_delay"] is not None]
    return {
        "median": statistics.median(delays),
        "quartiles": statistics.quantiles(delays, n=4),
        "pstdev": statistics.pstdev(delays),
        "mode": statistics.mode(r["dest"] for r in rows),
        "correlation": statistics.correlation(
            [r["distance"] for r in rows if r["air_time"] is not None],
            [r["air_time"] for r in rows if r["air_time"] is not None],
        ),
    }


def flights_per_weekday(rows):
    days = collections.Counter()
    for r in rows:
        days[datetime.date(r["year"], r["month"], r["day"]).strftime("%A")] += 1
    return dict(days)


def departures_per_hour(rows):
    hours = collections.Counter()
    for r in rows:
        if r["dep_time"] is None:
            continue
        clock = f"{int(r['dep_time']) % 2400:04d}"
        hours[datetime.datetime.strptime(clock, "%H%M").hour] += 1
    return sorted(hours.items())


def busiest_routes(text):
    routes = collections.Counter(f"{a}-{b}" for a, b in ROUTE.findall(text))
    return routes.most_common(10)


def distance_per_destination(text):
    totals = collections.defaultdict(int)
    for row in csv.DictReader(io.StringIO(text)):
        totals[row["dest"]] += int(row["distance"])
    return dict(totals)


def longest_flights(rows):
    top = heapq.nlargest(5, rows, key=lambda r: (r["distance"], r["flight"]))
    return [(r["carrier"], r["flight"], r["distance"]) for r in top]


def distance_histogram(rows):
    counts = [0] * (len(DISTANCE_EDGES) + 1)
    for r in rows:
        counts[bisect.bisect_right(DISTANCE_EDGES, r["distance"])] += 1
    return counts


def air_hours_exact(rows):
    minutes = sum(decimal.Decimal(str(r["air_time"])) for r in rows if r["air_time"] is not None)
    return str((minutes / 60).quantize(decimal.Decimal("0.01")))


def cancelled_share(rows):
    cancelled = sum(1 for r in rows if r["dep_time"] is None)
    return str(fractions.Fraction(cancelled, len(rows)))


def worst_delay_per_origin(rows):
    ordered = sorted(rows, key=lambda r: r["origin"])
    return {
        origin: functools.reduce(max, (r["dep_delay"] or 0 for r in group))
        for origin, group in itertools.groupby(ordered, key=lambda r: r["origin"])
    }


def row_fingerprint(rows):
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps(r, sort_keys=True).encode())
    return digest.hexdigest()


def slugs(rows):
    def slug(name):
        plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        return re.sub(r"[^a-z0-9]+", "-", plain.casefold()).strip("-")

    return [slug(r["name"]) for r in rows]


def mean_speed(rows):
    speeds = [60 * r["distance"] / r["air_time"] for r in rows if r["air_time"]]
    return math.fsum(speeds) / len(speeds)


RECORD_ANALYSES = [
    flights_per_carrier,
    delay_sums_by_origin,
    delay_statistics,
    flights_per_weekday,
    departures_per_hour,
    longest_flights,
    distance_histogram,
    air_hours_exact,
    cancelled_share,
    worst_delay_per_origin,
    row_fingerprint,
    mean_speed,
]


def same(a, b):
    """Equal, floats to within a few ulps (the guest's sum() is compensated, the host's not)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def as_json(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("analysis", RECORD_ANALYSES, ids=lambda f: f.__name__)
def test_analyses_of_records_match_native(analysis):
    kernel = wgt.udf(analysis)
    rows = chunk_value(kernel.encode(CHUNK))  # exactly what the guest receives
    assert len(rows) == len(CHUNK) and rows[0]["carrier"] == CHUNK["carrier"][0]
    sandboxed = kernel.run(CHUNK)
    assert same(sandboxed, as_json(analysis(rows))), analysis.__name__


@pytest.mark.parametrize("analysis", [busiest_routes, distance_per_destination])
def test_analyses_of_text_match_native(analysis):
    text = DATA.read_text()
    sandboxed = wgt.udf(analysis, input="text").run(text, limits=LIMITS)
    assert same(sandboxed, as_json(analysis(text)))


def test_unicode_survives_the_trip():
    rows = [{"name": "Zürich Flughafen"}, {"name": "São Paulo–Guarulhos"}, {"name": "Øslo ✈"}]
    assert (
        wgt.udf(slugs).run(rows) == slugs(rows) == ["zurich-flughafen", "sao-pauloguarulhos", "slo"]
    )


def test_columns_layout_matches_native():
    def busiest_origin(columns):
        return collections.Counter(columns["origin"]).most_common(1)[0]

    kernel = wgt.udf(busiest_origin, rows="columns")
    columns = chunk_value(kernel.encode(CHUNK))
    assert kernel.run(CHUNK) == as_json(busiest_origin(columns))


def test_partials_combine_to_the_whole():
    kernel = wgt.udf(flights_per_carrier, combine="sum")
    chunks = [FLIGHTS.iloc[i : i + 9000] for i in range(0, len(FLIGHTS), 9000)]
    parts = [kernel.run(chunk, limits=LIMITS) for chunk in chunks]
    assert kernel.combine(parts) == FLIGHTS["carrier"].value_counts().to_dict()
    histogram = wgt.udf(distance_histogram, combine="sum")
    parts = [histogram.run(chunk, limits=LIMITS) for chunk in chunks]
    assert histogram.combine(parts) == distance_histogram(FLIGHTS.to_dict("records"))


# --- through the job layer -----------------------------------------------------------------------


def test_a_udf_job_with_redundancy_on_a_local_cluster():
    with wgt.LocalCluster(workers=2) as cluster:
        with wgt.Job("delays-by-origin") as job:
            wgt.input(FLIGHTS, chunk_rows=7000)
            wgt.kernel(wgt.udf(delay_sums_by_origin, combine="sum"))
            wgt.limits(LIMITS)
            job.verify("redundancy", replicas=2)
        result = job.run(on=cluster)
    assert result.ok
    native = (
        FLIGHTS.dropna(subset=["arr_delay"]).groupby("origin")["arr_delay"].agg(["sum", "count"])
    )
    assert set(result.value) == set(native.index)
    for origin, row in native.iterrows():
        assert result.value[origin]["n"] == row["count"]
        assert result.value[origin]["sum"] == pytest.approx(row["sum"], abs=1e-6)


def long_flights(rows):
    return [
        {"carrier": r["carrier"], "distance": r["distance"]} for r in rows if r["distance"] > 2500
    ]


def test_a_udf_job_can_combine_into_one_dataframe():
    with wgt.LocalCluster(workers=2) as cluster:
        job = wgt.Job("long-flights").input(FLIGHTS, chunk_rows=7000)
        job.kernel(wgt.udf(long_flights, combine="frame")).limits(LIMITS)
        result = job.run(on=cluster)
    native = FLIGHTS.loc[FLIGHTS.distance > 2500, ["carrier", "distance"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.value, native, check_dtype=False)


def test_the_seed_systems_decorator_form_runs_execute_in_the_sandbox():
    @wgt.Job.define
    def upper_job():
        @wgt.Job.split
        def split(data: bytes) -> list[bytes]:
            return [data[i : i + 4096] for i in range(0, len(data), 4096)]

        @wgt.Job.execute
        def execute(chunk: bytes) -> bytes:
            return chunk.upper()

        @wgt.Job.merge
        def merge(parts: list[bytes]) -> bytes:
            return b"".join(parts)

    data = DATA.read_bytes()[:20_000]
    with wgt.LocalCluster(workers=2) as cluster:
        result = upper_job.run(data, on=cluster)
    assert result.value == data.upper()
