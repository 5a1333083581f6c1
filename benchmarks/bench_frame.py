"""Verified analytics (issue 13): wgt.frame / wgt.sql against pandas on one 5M-row table.

Every figure is ours next to pandas' in the same run, on LocalCluster(2) with verify="hash" and
``cache=False`` (every chunk computed: the verified-result cache would serve repeats), with the
ratio and its target; DuckDB's time for the same SQL is printed as a reference (no target).

    python benchmarks/bench_frame.py [rows]
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import pandas as pd
from timing import best_of, verdict  # benchmarks/timing.py

import wgtlab as wgt

AIRPORTS = [f"{a}{b}{c}" for a in "ABCDEFG" for b in "KLMN" for c in "XYZ"]  # 84


def flights(rows: int, seed: int = 13) -> pd.DataFrame:
    """A deterministic flights-like table: string origin/dest/carrier, float delays with NaN."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, len(AIRPORTS))
    weights /= weights.sum()
    carriers = np.array([f"C{i:02d}" for i in range(16)], dtype=object)
    origin = np.array(AIRPORTS, dtype=object)[rng.choice(len(AIRPORTS), rows, p=weights)]
    dest = np.array(AIRPORTS, dtype=object)[rng.choice(len(AIRPORTS), rows, p=weights)]
    delay = np.round(rng.gamma(1.2, 25.0, rows) - 20.0, 0)
    delay[rng.random(rows) < 0.03] = np.nan
    distance = np.round(rng.uniform(80, 2600, rows), 0)
    air_time = np.round(distance / rng.uniform(6.5, 8.5, rows), 0)
    air_time[np.isnan(delay)] = np.nan
    return pd.DataFrame(
        {
            "origin": pd.array(origin, dtype="str"),
            "dest": pd.array(dest, dtype="str"),
            "carrier": pd.array(carriers[rng.integers(0, 16, rows)], dtype="str"),
            "arr_delay": delay,
            "dep_delay": np.round(delay * 0.8 + rng.normal(0, 5, rows), 0),
            "distance": distance,
            "air_time": air_time,
        }
    )


def line(what: str, ours: float, theirs: float, target: float | None, reference: str) -> None:
    ratio = ours / theirs
    goal = f" (target <= {target}x: {verdict(ratio <= target)})" if target is not None else ""
    print(
        f"{what}: ours {ours * 1000:,.0f} ms, {reference} {theirs * 1000:,.0f} ms, "
        f"ratio {ratio:.2f}x{goal}"
    )


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000
    df = flights(rows)
    print(f"{rows:,} rows; LocalCluster(2), verify='hash', cache=False\n")
    with wgt.LocalCluster(workers=2) as cluster:

        def ours(make: Callable[[], object], repeat: int = 7) -> float:
            return best_of(lambda: make().compute(on=cluster, cache=False), repeat)  # type: ignore[attr-defined]

        def groupby(f: object) -> object:
            return (
                f[f.arr_delay > 15]
                .groupby(["origin", "dest"])
                .agg(  # type: ignore[index]
                    mean_delay=("arr_delay", "mean"),
                    n=("arr_delay", "size"),
                    worst=("arr_delay", "max"),
                )
            )

        def pandas_groupby() -> object:
            return (
                df[df.arr_delay > 15]
                .groupby(["origin", "dest"])
                .agg(
                    mean_delay=("arr_delay", "mean"),
                    n=("arr_delay", "size"),
                    worst=("arr_delay", "max"),
                )
            )

        warm = wgt.frame(df)
        groupby(warm).compute(on=cluster, cache=False)  # compile once: the module cache's job
        pandas_time = best_of(pandas_groupby, 3)
        first = ours(lambda: groupby(wgt.frame(df)))  # a new frame: dictionary codes made anew
        line(
            "filtered group-by, 2 string keys, mean/size/max, first query",
            first,
            pandas_time,
            1.5,
            "pandas",
        )
        repeat = ours(lambda: groupby(warm))
        line(
            "the same group-by repeated on the same frame (codes cached)",
            repeat,
            pandas_time,
            1.0,
            "pandas",
        )
        hash_time = repeat
        redundant = best_of(
            lambda: groupby(warm).run(on=cluster, verify="redundancy", replicas=2, cache=False),
            3,  # type: ignore[attr-defined]
        )
        print(
            f"the same group-by with verify('redundancy', replicas=2): {redundant * 1000:,.0f} ms, "
            f"{redundant / hash_time:.2f}x its hash time (target <= 2.2x: "
            f"{verdict(redundant / hash_time <= 2.2)})"
        )
        print()
        f = warm
        delay = df.arr_delay
        for what, query, reference in [
            ("sum of a column", lambda: f.arr_delay.sum(), lambda: delay.sum()),
            ("mean of a column", lambda: f.arr_delay.mean(), lambda: delay.mean()),
            (
                "filtered count",
                lambda: f[f.arr_delay > 15].arr_delay.count(),
                lambda: delay[delay > 15].count(),
            ),
            (
                "min and max of a column",
                lambda: f.arr_delay.agg(["min", "max"]),
                lambda: delay.agg(["min", "max"]),
            ),
        ]:
            line(what, ours(query, 11), best_of(reference, 11), 2.0, "pandas")
        line(
            "exact quantile 0.95",
            ours(lambda: f.arr_delay.quantile(0.95)),
            best_of(lambda: delay.quantile(0.95), 3),
            4.0,
            "pandas",
        )
        line(
            "exact median",
            ours(lambda: f.distance.median()),
            best_of(lambda: df.distance.median(), 3),
            4.0,
            "pandas",
        )
        line(
            "nunique of a string column",
            ours(lambda: f.dest.nunique()),
            best_of(lambda: df.dest.nunique(), 3),
            2.0,
            "pandas",
        )
        line(
            "value_counts of a string column",
            ours(lambda: f.carrier.value_counts()),
            best_of(lambda: df.carrier.value_counts(), 3),
            2.0,
            "pandas",
        )

        print()
        rng = np.random.default_rng(3)
        many = pd.DataFrame({"user": rng.integers(0, 1_000_000, rows), "x": rng.normal(size=rows)})
        g = wgt.frame(many)
        tenk = pd.DataFrame({"k": many.user % 10_000, "x": many.x})
        ten_thousand = wgt.frame(tenk)
        for what, query, reference in [
            (
                "sum and count over 1M groups (no target)",
                lambda: g.groupby("user").agg(s=("x", "sum"), n=("x", "count")),
                lambda: many.groupby("user").agg(s=("x", "sum"), n=("x", "count")),
            ),
            (
                "exact median over 10k groups (no target)",
                lambda: ten_thousand.groupby("k").x.median(),
                lambda: tenk.groupby("k").x.median(),
            ),
            (
                "exact median over 1M groups (no target)",
                lambda: g.groupby("user").x.median(),
                lambda: many.groupby("user").x.median(),
            ),
        ]:
            query().compute(on=cluster, cache=False)
            line(what, ours(query, 3), best_of(reference, 3), None, "pandas")

        sql = (
            "SELECT carrier, AVG(arr_delay) AS m, COUNT(*) AS n FROM flights "
            "WHERE distance > 500 GROUP BY carrier ORDER BY m DESC"
        )
        print()
        ours_sql = ours(lambda: wgt.sql(sql, flights=warm))
        try:
            import duckdb
        except ImportError:  # pragma: no cover
            print(f"SQL group-by: ours {ours_sql * 1000:,.0f} ms (duckdb not installed)")
        else:
            con = duckdb.connect()
            con.register("flights", df)
            duck = best_of(lambda: con.execute(sql).df(), 3)
            pandas_sql = best_of(
                lambda: (
                    df[df.distance > 500]
                    .groupby("carrier")
                    .agg(m=("arr_delay", "mean"), n=("arr_delay", "size"))
                    .sort_values("m", ascending=False)
                ),
                3,
            )
            print(
                f"SQL group-by ({sql[:40]}...): ours {ours_sql * 1000:,.0f} ms, pandas "
                f"{pandas_sql * 1000:,.0f} ms, DuckDB {duck * 1000:,.0f} ms (reference, no target)"
            )


if __name__ == "__main__":
    main()
