"""Frames in the notebook: ``%%wgt sql`` over notebook variables and ``%wgt run`` of a lazy
frame query, each pass with its progress view, in a real IPython shell."""

from __future__ import annotations

import pandas as pd
from magics_support import failure_lines, run

import wgtlab as wgt
from wgtlab.notebook.magics import WgtMagics

SQL = (
    "SELECT carrier, AVG(arr_delay) AS m, COUNT(*) AS n FROM flights "
    "WHERE distance > 500 GROUP BY carrier ORDER BY m DESC"
)


def flights() -> pd.DataFrame:
    return pd.read_csv("data/flights-2013-01.csv")


def test_help_lists_the_sql_cell_command() -> None:
    assert "%wgt sql" in WgtMagics.wgt.__doc__


def test_sql_cell_binds_the_answer_and_the_result(ip) -> None:
    run(ip, "%wgt cluster local 2")
    ip.user_ns["flights"] = df = flights()
    result = run(ip, f"%%wgt sql -o out --result res --progress none\n{SQL}")
    assert result.success, result.error_in_exec
    want = (
        df[df.distance > 500]
        .groupby("carrier")
        .agg(m=("arr_delay", "mean"), n=("arr_delay", "size"))
        .sort_values("m", ascending=False, kind="stable")
        .reset_index()
    )
    out = ip.user_ns["out"]
    assert result.result is out
    pd.testing.assert_frame_equal(out, want, check_exact=False, rtol=1e-12)
    res = ip.user_ns["res"]
    assert isinstance(res, wgt.JobResult) and res.ok and res.value is out


def test_sql_cell_with_replicas_runs_every_chunk_twice(ip) -> None:
    run(ip, "%wgt cluster local 3 --liars 1 --seed 2")
    ip.user_ns["flights"] = flights()
    result = run(ip, f"%%wgt sql --replicas 2 --result res --progress text\n{SQL}")
    assert result.success, result.error_in_exec
    res = ip.user_ns["res"]
    assert res.mode == "redundancy" and res.replicas == 2 and res.ok


def test_sql_cell_names_a_missing_table_and_a_bad_query_in_one_line(ip, capsys) -> None:
    ip.user_ns["flights"] = flights()
    lines = failure_lines(ip, capsys, "%%wgt sql\nSELECT AVG(arr_delay) FROM flightz")
    assert lines == [
        "UsageError: the query reads 'flightz', and there is no such variable (did you mean "
        "'flights'?); a table is a notebook variable holding a DataFrame, a Parquet path or a "
        "wgt.frame"
    ]
    lines = failure_lines(ip, capsys, "%%wgt sql\nSELECT a.x FROM flights a JOIN flights b ON 1")
    assert len(lines) == 1 and lines[0].startswith("FrameError: wgt.sql does not support JOIN")
    lines = failure_lines(ip, capsys, "%%wgt sql\nSELECT AVG(nope) FROM flights")
    assert len(lines) == 1 and "'nope'" in lines[0] and lines[0].startswith("FrameError")


def test_sql_is_a_cell_command(ip, capsys) -> None:
    lines = failure_lines(ip, capsys, "%wgt sql")
    assert lines == ["UsageError: %%wgt sql needs a cell body"]


def test_run_takes_a_lazy_frame_query_and_its_job(ip) -> None:
    run(ip, "%wgt cluster local 2")
    ip.user_ns["df"] = df = flights()
    run(ip, "q = wgt.frame(df).groupby('origin').arr_delay.median()")
    result = run(ip, "%wgt run q -o res --progress text")
    assert result.success, result.error_in_exec
    res = ip.user_ns["res"]
    pd.testing.assert_series_equal(res.value, df.groupby("origin").arr_delay.median())
    assert "verified passes" in res.note  # the aggregate pass, then the quantile passes
    run(ip, "job = q.job()")
    result = run(ip, "%wgt run job --replicas 2 -o res2 --progress none")
    assert result.success, result.error_in_exec
    res2 = ip.user_ns["res2"]
    assert res2.mode == "redundancy" and res2.value.equals(res.value)
    assert ip.user_ns["job"].verification.mode == "hash"  # the flags were for that run only
