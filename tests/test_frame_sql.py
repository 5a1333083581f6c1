"""``wgt.sql`` against DuckDB: the same query text on the same data, run by both, gives the same
DataFrame (names, dtypes, values, order). Everything runs for real: generated WebAssembly on a
LocalCluster, verified; DuckDB is the oracle.

Normalisations, each on purpose: DuckDB's integer literals are INTEGER (int32) where wgt.sql
computes int64, and its SUM of integers is HUGEINT, which ``.df()`` turns into float64 where
wgt.sql keeps the exact int64; ``check`` widens exactly those columns and no others.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import wgtlab as wgt
from wgtlab.errors import FrameError
from wgtlab.frame.api import QueryJob

pytestmark = pytest.mark.usefixtures("private_cache")

FLIGHTS = Path(__file__).resolve().parent.parent / "data" / "flights-2013-01.csv"
NAN = np.nan


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return pd.read_csv(FLIGHTS)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    """NULL string keys (None), NaN values, an all-NULL group ('c'), bool and int columns."""
    return pd.DataFrame(
        {
            "k": pd.array(["a", None, "b", "a", None, "c", "b", "a", "d"], dtype="str"),
            "g": np.array([1, 1, 2, 2, 3, 3, 3, 1, 2], dtype=np.int64),
            "x": [1.5, NAN, 3.0, NAN, 5.0, NAN, -2.0, 4.0, 0.25],
            "i": np.array([1, 2, 3, 4, 5, 6, 7, 8, -9], dtype=np.int64),
            "flag": [True, False, True, True, False, True, False, False, True],
        }
    )


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    """600 rows: four keys and NULL, 20% NaN values, and a key whose values are all NaN."""
    rng = np.random.default_rng(20130101)
    rows = 600
    keys = rng.choice(np.array(["ant", "bee", "cat", "dog", None], dtype=object), rows)
    x = rng.normal(10.0, 25.0, rows)
    x[rng.random(rows) < 0.2] = NAN
    x[keys == "dog"] = NAN
    return pd.DataFrame(
        {
            "key": pd.array(keys, dtype="str"),
            "x": x,
            "n": rng.integers(-50, 50, rows).astype(np.int64),
        }
    )


def duck(text: str, **tables: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return con.execute(text).df()


def check(
    cluster: wgt.LocalCluster,
    text: str,
    *,
    approx: tuple[str, ...] = (),
    integer_sums: tuple[str, ...] = (),
    **tables: pd.DataFrame,
) -> pd.DataFrame:
    """wgt.sql's answer equals DuckDB's: exactly, except ``approx`` columns (sums, means,
    variances: summation order differs) to rtol 1e-12. ``integer_sums``: SUMs of integers."""
    ours = wgt.sql(text, **tables).compute(on=cluster)
    theirs = duck(text, **tables)
    assert list(ours.columns) == list(theirs.columns)
    for name in theirs.columns:
        if theirs[name].dtype == np.int32:  # DuckDB's INTEGER literals; wgt.sql's are int64
            theirs[name] = theirs[name].astype(np.int64)
    for name in integer_sums:  # DuckDB: HUGEINT -> float64; wgt.sql: exact int64 (Int64 if NULL)
        assert theirs[name].dtype == np.float64
        ours[name] = ours[name].astype(np.float64)
    exact = [c for c in ours.columns if c not in approx]
    assert_frame_equal(ours[exact], theirs[exact], check_exact=True)
    if approx:
        assert_frame_equal(ours[list(approx)], theirs[list(approx)], rtol=1e-12, atol=0)
    return ours


# --- the flights ---------------------------------------------------------------------------


def test_the_issue_example(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    text = (
        "SELECT carrier, AVG(arr_delay) AS m, COUNT(*) AS n FROM flights WHERE distance > 500 "
        "GROUP BY carrier ORDER BY m DESC"
    )
    ours = check(cluster, text, approx=("m",), flights=flights)
    assert len(ours) == 15 and ours["carrier"].iloc[0] == "OO"


def test_every_aggregate_with_duckdb_names(
    cluster: wgt.LocalCluster, flights: pd.DataFrame
) -> None:
    text = """
        SELECT origin, count(*), count(arr_delay), count(DISTINCT dest), sum(arr_delay),
               avg(dep_delay), min(dep_time), max(air_time), min(dest), stddev(arr_delay),
               stddev_samp(dep_delay), variance(arr_delay), VAR_SAMP(dep_delay), median(arr_delay),
               median(flight), percentile_cont(0.9) WITHIN GROUP (ORDER BY arr_delay),
               percentile_cont(0.25) WITHIN GROUP (ORDER BY dep_delay DESC),
               quantile_cont(dep_delay, 0.1)
        FROM flights GROUP BY origin ORDER BY origin
    """
    approx = ("sum(arr_delay)", "avg(dep_delay)", "stddev(arr_delay)", "stddev_samp(dep_delay)",
              "variance(arr_delay)", "var_samp(dep_delay)")  # fmt: skip
    ours = check(cluster, text, approx=approx, flights=flights)
    assert list(ours.columns[:3]) == ["origin", "count_star()", "count(arr_delay)"]
    assert "quantile_cont(0.9 ORDER BY arr_delay)" in ours.columns


def test_ungrouped_aggregates(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    text = """
        SELECT COUNT(*) AS n, SUM(flight) AS flights_sum, AVG(arr_delay) AS m,
               MIN(carrier) AS first, MAX(dep_delay) AS worst, MEDIAN(air_time) AS med,
               quantile_cont(arr_delay, 0.25) AS q1, STDDEV(arr_delay) AS sd,
               COUNT(DISTINCT carrier) AS carriers, SUM(arr_delay) / COUNT(arr_delay) AS mean2
        FROM flights WHERE origin = 'JFK'
    """
    check(
        cluster, text, approx=("m", "sd", "mean2"), integer_sums=("flights_sum",), flights=flights
    )


def test_two_keys_having_order_limit_offset(
    cluster: wgt.LocalCluster, flights: pd.DataFrame
) -> None:
    text = """
        SELECT origin, carrier, COUNT(*) AS n, MAX(arr_delay) AS worst
        FROM flights
        GROUP BY origin, carrier
        HAVING COUNT(*) > 100 AND MAX(arr_delay) IS NOT NULL
        ORDER BY origin, n DESC, carrier
        LIMIT 10 OFFSET 2
    """
    ours = check(cluster, text, flights=flights)
    assert len(ours) == 10


def test_row_conditions(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    """Each condition counted by COUNT(CASE WHEN ... THEN 1 END): the same code as WHERE, NULL
    rows neither TRUE nor FALSE (NOT and <> must not let them through)."""
    conditions = [
        "dep_delay IN (0, 1, 2)",
        "carrier NOT IN ('UA', 'AA')",
        "dep_delay NOT IN (0, NULL)",
        "dep_delay IN (-1, NULL)",
        "arr_delay BETWEEN -5 AND 5",
        "arr_delay NOT BETWEEN -5 AND 5",
        "air_time IS NULL",
        "air_time IS NOT NULL",
        "NOT (arr_delay > 0)",
        "arr_delay <> 0",
        "NOT (arr_delay <> 0)",
        "arr_delay > 10 OR dep_delay > 10",
        "NOT (arr_delay > 10 OR dep_delay > 10)",
        "NOT (arr_delay > 10 AND carrier = 'UA')",
        "arr_delay - dep_delay > 10",
        "distance % 7 = 3",
        "arr_delay % 4 = -1",
        "air_time / 60 > 2",
        "-dep_delay < -5",
        "ABS(arr_delay) < 5",
        "SQRT(distance) > 20",
        "carrier = 'UA'",
        "'UA' <> carrier",
        "origin >= 'JFK'",
        "dest < 'M'",
        "arr_delay = NULL",
        "TRUE",
        "CASE WHEN origin = 'JFK' THEN arr_delay ELSE dep_delay END > 30",
        "CASE carrier WHEN 'UA' THEN 1 WHEN 'AA' THEN 2 END = 2",
        "dep_time * 2 + 1 > 1000 AND NOT carrier IN ('UA')",
        "(arr_delay + 0.5) * 2 >= 3.5",
    ]
    columns = ", ".join(
        f"COUNT(CASE WHEN {c} THEN 1 END) AS c{i}" for i, c in enumerate(conditions)
    )
    ours = check(cluster, f"SELECT {columns} FROM flights", flights=flights)
    assert ours.loc[0, "c2"] == 0 and ours.loc[0, "c25"] == 0  # NOT IN (..NULL), = NULL


def test_where_clause(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    text = """
        SELECT dest, COUNT(*) AS n, SUM(arr_delay) AS s FROM flights
        WHERE NOT (arr_delay <= 0 OR carrier IN ('UA', 'AA')) AND air_time IS NOT NULL
              AND distance BETWEEN 200 AND 2000 AND dest <> 'ATL'
        GROUP BY dest ORDER BY n DESC, dest
    """
    check(cluster, text, approx=("s",), flights=flights)


def test_expressions_after_aggregation(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    text = """
        SELECT carrier, SUM(arr_delay) / COUNT(*) AS per_flight, AVG(arr_delay) * 2 AS twice,
               CASE WHEN AVG(arr_delay) > 10 THEN 'late' WHEN AVG(arr_delay) > 0 THEN 'slow'
                    ELSE 'fine' END AS verdict,
               ABS(MIN(arr_delay)) AS best, SQRT(VARIANCE(arr_delay)) AS sd,
               -SUM(dep_delay) AS negated, MAX(arr_delay) - MIN(arr_delay) AS spread,
               COUNT(*) % 7 AS n7, AVG(arr_delay) > 5 AS late, carrier IN ('UA', 'AA') AS big,
               COUNT(*) BETWEEN 100 AND 1000 AS mid, NOT (COUNT(*) > 500) AS few,
               MIN(air_time) IS NULL AS none, (COUNT(*) + 1) * 3 AS arithmetic,
               CASE WHEN COUNT(*) > 1000 THEN MAX(arr_delay) END AS big_worst
        FROM flights GROUP BY carrier ORDER BY carrier
    """
    check(cluster, text, approx=("per_flight", "twice", "sd", "negated"), flights=flights)


def test_duckdb_default_names(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    text = """
        SELECT carrier, count(*), avg(arr_delay), count(DISTINCT dest), sum(arr_delay) / count(*),
               min(arr_delay) IS NULL, -max(dep_delay), count(*) > 10 AND avg(arr_delay) < 0,
               CASE WHEN count(*) > 1000 THEN 'big' ELSE 'small' END, count(*),
               NOT (count(*) IS NULL), count(*) * -1
        FROM flights GROUP BY carrier ORDER BY carrier
    """
    ours = check(
        cluster, text, approx=("avg(arr_delay)", "(sum(arr_delay) / count_star())"), flights=flights
    )
    assert list(ours.columns) == [
        "carrier", "count_star()", "avg(arr_delay)", "count(DISTINCT dest)",
        "(sum(arr_delay) / count_star())", "(min(arr_delay) IS NULL)", "(-(max(dep_delay)))",
        "((count_star() > 10) AND (avg(arr_delay) < 0))",
        "CASE  WHEN ((count_star() > 1000)) THEN ('big') ELSE 'small' END", "count_star()_1",
        "(NOT (count_star() IS NULL))", "(count_star() * -1)",
    ]  # fmt: skip


def test_aliases_positions_and_identifiers(
    cluster: wgt.LocalCluster, flights: pd.DataFrame
) -> None:
    text = """
        SELECT f.Origin AS airport, COUNT(*) AS n, n * 2 AS twice
        FROM Flights AS f WHERE F.distance > 1000
        GROUP BY airport HAVING n > 10 ORDER BY 2 DESC
    """
    check(cluster, text, flights=flights)
    text = "SELECT carrier, origin, AVG(arr_delay) AS m FROM flights GROUP BY 2, 1 ORDER BY m, 1"
    check(cluster, text, approx=("m",), flights=flights)


# --- NULLs, empties and small frames ---------------------------------------------------------


def test_null_keys_and_an_all_null_group(cluster: wgt.LocalCluster, small: pd.DataFrame) -> None:
    text = """
        SELECT k, COUNT(*) AS rows, COUNT(x) AS xs, SUM(x) AS s, AVG(x) AS m, MIN(x) AS lo,
               MAX(i) AS hi, MIN(k) AS kmin, STDDEV(x) AS sd, VARIANCE(x) AS v, MEDIAN(x) AS med,
               quantile_cont(x, 0.75) AS q3, COUNT(DISTINCT g) AS gs, SUM(i) AS si
        FROM t GROUP BY k ORDER BY k
    """
    ours = check(cluster, text, approx=("s", "m", "sd", "v"), integer_sums=("si",), t=small)
    c = ours[ours["k"] == "c"].iloc[0]
    assert c["xs"] == 0 and np.isnan(c["s"]) and np.isnan(c["m"]) and np.isnan(c["lo"])
    assert pd.isna(ours["k"].iloc[-1])  # NULL keys are a group, ordered last


@pytest.mark.parametrize(
    "order",
    ["s", "s DESC", "s ASC NULLS FIRST", "s DESC NULLS LAST", "s DESC NULLS FIRST", "k DESC"],
)
def test_null_ordering(cluster: wgt.LocalCluster, small: pd.DataFrame, order: str) -> None:
    check(cluster, f"SELECT k, SUM(x) AS s FROM t GROUP BY k ORDER BY {order}", t=small)


def test_generated_frame(cluster: wgt.LocalCluster, generated: pd.DataFrame) -> None:
    text = """
        SELECT key, COUNT(*) AS rows, COUNT(x) AS xs, SUM(x) AS s, AVG(x) AS m, MIN(x) AS lo,
               MAX(x) AS hi, MIN(n) AS nlo, STDDEV(x) AS sd, VARIANCE(x) AS v, MEDIAN(x) AS med,
               quantile_cont(x, 0.9) AS q9, COUNT(DISTINCT n) AS distinct_n,
               SUM(n) % 10 AS r
        FROM t WHERE n <> 0 GROUP BY key HAVING COUNT(x) >= 0 ORDER BY m DESC, key
    """
    # q9: DuckDB's interpolation between the two order statistics can round differently in the
    # last bit for values that are not integers (the flights tests compare quantiles exactly)
    check(cluster, text, approx=("s", "m", "sd", "v", "q9"), integer_sums=("r",), t=generated)


def test_empty_after_where(cluster: wgt.LocalCluster, small: pd.DataFrame) -> None:
    grouped = check(
        cluster,
        "SELECT k, COUNT(*) AS n, AVG(x) AS m FROM t WHERE i > 100 GROUP BY k ORDER BY k",
        t=small,
    )
    assert grouped.empty
    ungrouped = check(
        cluster,
        "SELECT COUNT(*) AS n, SUM(x) AS s, AVG(x) AS m, MIN(x) AS lo, MAX(k) AS kmax, "
        "MEDIAN(x) AS med, STDDEV(x) AS sd FROM t WHERE i > 100",
        t=small,
    )
    assert ungrouped.loc[0, "n"] == 0 and np.isnan(ungrouped.loc[0, "s"])  # SUM of nothing: NULL


def test_an_empty_table(cluster: wgt.LocalCluster, small: pd.DataFrame) -> None:
    empty = small.iloc[:0]
    check(
        cluster, "SELECT COUNT(*) AS n, SUM(x) AS s, MAX(k) AS m, MEDIAN(x) AS med FROM t", t=empty
    )
    assert check(cluster, "SELECT k, COUNT(*) AS n FROM t GROUP BY k", t=empty).empty


def test_strings_and_bools_aggregated(cluster: wgt.LocalCluster, small: pd.DataFrame) -> None:
    text = """
        SELECT COUNT(k) AS ck, COUNT(DISTINCT k) AS dk, MIN(k) AS lo, MAX(k) AS hi,
               COUNT(flag) AS cf, MIN(flag) AS mf, MAX(k) = 'd' AS last_is_d FROM t
    """
    check(cluster, text, t=small)


def test_integer_min_max_and_sum_of_nothing_are_null(
    cluster: wgt.LocalCluster, small: pd.DataFrame
) -> None:
    ours = check(cluster, "SELECT MIN(i) AS lo, MAX(g) AS hi FROM t WHERE x > 100", t=small)
    assert str(ours["lo"].dtype) == "Int64" and ours["lo"].isna().all()  # as DuckDB's .df()
    ours = wgt.sql("SELECT SUM(i) AS s FROM t WHERE x > 100", t=small).compute(on=cluster)
    assert ours["s"].isna().all()


def test_single_row(cluster: wgt.LocalCluster) -> None:
    one = pd.DataFrame({"k": pd.array(["only"], dtype="str"), "x": [2.5], "i": [7]})
    text = """
        SELECT k, COUNT(*) AS n, SUM(x) AS s, STDDEV(x) AS sd, MEDIAN(i) AS med,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS q9, MAX(i) - MIN(i) AS spread
        FROM one GROUP BY k
    """
    ours = check(cluster, text, one=one)
    assert np.isnan(ours.loc[0, "sd"])  # the sample deviation of one value is NULL


def test_boolean_integer_and_float_keys(cluster: wgt.LocalCluster, small: pd.DataFrame) -> None:
    text = """
        SELECT flag, g, COUNT(*) AS n, MAX(flag) AS any_flag, AVG(i) AS m FROM t
        WHERE flag OR NOT flag GROUP BY flag, g ORDER BY flag DESC, g
    """
    check(cluster, text, approx=("m",), t=small)
    check(
        cluster,
        "SELECT x, COUNT(*) AS n, SUM(i) AS s FROM t GROUP BY x ORDER BY x",
        integer_sums=("s",),
        t=small,
    )


def test_modulo_by_zero_is_null(cluster: wgt.LocalCluster, small: pd.DataFrame) -> None:
    """DuckDB raises on x % 0; wgt.sql answers NULL, as DuckDB does with
    error_on_division_by_zero off (its TRY)."""
    text = """
        SELECT g, COUNT(i % (g - 2)) AS defined, SUM(i % (4 - g)) AS rs,
               SUM(i) % (g - 2) AS r, SUM(x) / (COUNT(*) - 3) AS q
        FROM t GROUP BY g ORDER BY g
    """
    ours = wgt.sql(text, t=small).compute(on=cluster)
    con = duckdb.connect()
    con.execute("SET error_on_division_by_zero = false")
    con.register("t", small)
    theirs = con.execute(text).df()
    theirs["r"] = theirs["r"].astype("Int64")  # HUGEINT sums -> float64 in DuckDB's .df()
    assert_frame_equal(ours, theirs, check_exact=True)


# --- inputs and running ----------------------------------------------------------------------


def test_frames_and_parquet_files(
    cluster: wgt.LocalCluster, flights: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "flights.parquet"
    flights.to_parquet(path)
    text = (
        "SELECT origin, COUNT(*) AS n, MAX(arr_delay) AS worst FROM t GROUP BY origin "
        "ORDER BY origin"
    )
    expected = duck(text, t=flights)
    assert_frame_equal(wgt.sql(text, t=str(path)).compute(on=cluster), expected)
    assert_frame_equal(wgt.sql(text, t=wgt.frame(flights)).compute(on=cluster), expected)
    jfk = wgt.frame(flights)
    jfk = jfk[jfk.origin == "JFK"]  # a frame's own filter and the WHERE both hold
    ours = wgt.sql("SELECT COUNT(*) AS n FROM t WHERE arr_delay > 0", t=jfk).compute(on=cluster)
    assert ours.loc[0, "n"] == ((flights.origin == "JFK") & (flights.arr_delay > 0)).sum()


def test_run_verified_and_job(cluster: wgt.LocalCluster, flights: pd.DataFrame) -> None:
    query = wgt.sql(
        "SELECT carrier, COUNT(*) AS n FROM flights GROUP BY carrier ORDER BY n DESC",
        flights=flights,
    )
    assert isinstance(query.job(), QueryJob)
    result = query.run(on=cluster, verify="redundancy", replicas=2)
    assert result.ok
    assert_frame_equal(result.value, query.compute(on=cluster))
    assert result.value.loc[0, "carrier"] == "UA"


# --- what is refused, before anything runs ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "SELECT a.carrier, COUNT(*) FROM flights a JOIN flights b ON a.flight = b.flight "
            "GROUP BY a.carrier",
            "JOIN",
        ),
        ("SELECT COUNT(*) FROM flights, other", "more than one table"),
        ("SELECT carrier, COUNT(*) OVER () FROM flights", "window functions (OVER)"),
        ("SELECT COUNT(*) FROM (SELECT * FROM flights)", "subqueries"),
        ("SELECT COUNT(*) FROM flights WHERE dest IN (SELECT dest FROM flights)", "subqueries"),
        ("WITH f AS (SELECT * FROM flights) SELECT COUNT(*) FROM f", "WITH"),
        ("SELECT COUNT(*) FROM flights UNION SELECT COUNT(*) FROM flights", "UNION"),
        ("SELECT DISTINCT carrier FROM flights", "SELECT DISTINCT"),
        ("SELECT * FROM flights", "SELECT *"),
        (
            "SELECT carrier, dest, COUNT(*) FROM flights GROUP BY carrier",
            "'dest' must appear in GROUP BY",
        ),
        ("SELECT carrier FROM flights WHERE distance > 100", "without aggregates"),
        (
            "SELECT carrier, ROUND(AVG(arr_delay)) FROM flights GROUP BY carrier",
            "the function ROUND",
        ),
        ("SELECT carrier, foo(arr_delay) FROM flights GROUP BY carrier", "the function FOO"),
        ("SELECT STDDEV_POP(arr_delay) FROM flights", "the aggregate STDDEV_POP"),
        ("SELECT SUM(arr_delay) FILTER (WHERE carrier = 'UA') FROM flights", "FILTER"),
        ("SELECT SUM(DISTINCT arr_delay) FROM flights", "DISTINCT in SUM"),
        (
            "SELECT COUNT(DISTINCT arr_delay + 1) FROM flights",
            "COUNT(DISTINCT ...) of an expression",
        ),
        ("SELECT COUNT(*) FROM flights WHERE SUM(arr_delay) > 0", "cannot hold the aggregate"),
        ("SELECT SUM(MAX(arr_delay)) FROM flights", "cannot hold the aggregate"),
        ("SELECT COUNT(*) FROM flights GROUP BY distance / 100", "groups by columns"),
        ("SELECT COUNT(*) FROM flights GROUP BY ALL", "GROUP BY ALL"),
        ("SELECT CAST(AVG(arr_delay) AS INT) FROM flights", "CAST"),
        ("SELECT COUNT(*) FROM flights WHERE carrier LIKE 'U%'", "LIKE"),
        ("SELECT SUM(arr_delay > 0) FROM flights", "a condition as a value"),
        ("SELECT COUNT(*) FROM flights QUALIFY COUNT(*) > 1", "QUALIFY"),
        ("SELECT carrier, MAX(arr_delay) || 'x' FROM flights GROUP BY carrier", "concatenation"),
        ("SELECT COUNT(*) FROM flights LIMIT 10%", "LIMIT"),
        ("SELECT COUNT(*) FROM flights; SELECT 1", "several statements"),
    ],
)
def test_unsupported_constructs_are_named(flights: pd.DataFrame, text: str, named: str) -> None:
    with pytest.raises(FrameError) as raised:
        wgt.sql(text, flights=flights)
    message = str(raised.value)
    assert named in message and "\n" not in message


def test_syntax_errors_and_unknown_names(flights: pd.DataFrame) -> None:
    with pytest.raises(FrameError, match="cannot parse") as raised:
        wgt.sql("SELECT COUNT(* FROM flights", flights=flights)
    assert "\n" not in str(raised.value)
    with pytest.raises(FrameError, match=r"no table 'planes'; the tables given: flights"):
        wgt.sql("SELECT COUNT(*) FROM planes", flights=flights)
    with pytest.raises(FrameError, match=r"no column 'delay'.*arr_delay"):
        wgt.sql("SELECT carrier, MAX(delay) FROM flights GROUP BY carrier", flights=flights)
    with pytest.raises(FrameError, match=r"names the table 'g'"):
        wgt.sql("SELECT MAX(g.arr_delay) FROM flights f", flights=flights)
    with pytest.raises(FrameError, match="compares"):  # after aggregation: checked now too
        wgt.sql(
            "SELECT carrier, MAX(arr_delay) > 'x' FROM flights GROUP BY carrier", flights=flights
        )
    with pytest.raises(FrameError, match="strings"):
        wgt.sql("SELECT SUM(carrier) FROM flights", flights=flights)


def test_an_unknown_column_in_where_fails_before_any_chunk_runs(flights: pd.DataFrame) -> None:
    class NoCluster:
        def run(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("nothing should run")

    with pytest.raises(FrameError, match="no column 'dist'"):
        wgt.sql("SELECT COUNT(*) FROM flights WHERE dist > 100", flights=flights).compute(
            on=NoCluster()  # type: ignore[arg-type]
        )
