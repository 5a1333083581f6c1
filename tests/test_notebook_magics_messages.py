"""What the %wgt magics say when something is wrong, in a real IPython shell: the variable that
was meant, the failed chunk and why, one flag name for replacing a shard set, plain help."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sandbox_hostile as hostile
from IPython.core.interactiveshell import InteractiveShell
from magics_support import ANSI, run

import wgtlab as wgt
from wgtlab.notebook.magics import PARSERS, MagicError, WgtMagics


def one_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str) -> str:
    """Run a cell that must fail with one line; return the line."""
    capsys.readouterr()
    result = run(ip, code)
    assert not result.success, code
    assert isinstance(result.error_in_exec, MagicError), result.error_in_exec
    lines = [ANSI.sub("", line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def names(ip):
    """A notebook's variables: jobs, a result, a cluster, a pipeline, data and a key, and only
    those (the shell is shared with other modules, whose variables are set aside meanwhile)."""
    kept = {"In", "Out", "get_ipython", "exit", "quit", "wgt"}
    aside = {k: v for k, v in ip.user_ns.items() if not k.startswith("_") and k not in kept}
    for name in aside:
        del ip.user_ns[name]
    cluster = wgt.LocalCluster(workers=2)
    by_carrier = wgt.Job("by-carrier").input(np.arange(10.0), chunk_rows=5)
    by_carrier.kernel(wgt.kernels.sum())
    ip.user_ns.update(
        by_carrier=by_carrier,
        late_flights=wgt.Job("late").input(np.arange(4.0)).kernel(wgt.kernels.sum()),
        result=by_carrier.run(on=cluster),
        my_cluster=cluster,
        pipe=wgt.CESPipeline(bytes(range(32))),
        flights=pd.DataFrame({"carrier": ["AA", "UA"], "dep_delay": [1.0, 2.0]}),
        KEY=bytes(range(32)),
    )
    yield ip
    cluster.close()
    ip.user_ns.update(aside)


def test_a_misspelt_variable_names_the_one_meant(names, capsys, tmp_path):
    ip = names
    for code, line in [
        (
            "%wgt run by_carier",
            "UsageError: no variable 'by_carier' in the namespace (a job or a frame query); did "
            "you mean 'by_carrier'?",
        ),
        # nothing close: the variables of the kind wanted
        (
            "%wgt run nosuch",
            "UsageError: no variable 'nosuch' in the namespace (a job or a frame query); those "
            "in the namespace: 'by_carrier', 'late_flights'",
        ),
        (
            "%wgt verify reslt 1",
            "UsageError: no variable 'reslt' in the namespace (a JobResult); did you mean "
            "'result'?",
        ),
        (
            "%wgt run by_carrier --on my_clustr",
            "UsageError: no variable 'my_clustr' in the namespace (a cluster); did you mean "
            "'my_cluster'?",
        ),
        (
            f"%wgt ces inspect {tmp_path} --pipeline pipes",
            "UsageError: no variable 'pipes' in the namespace (a CESPipeline); did you mean "
            "'pipe'?",
        ),
        (
            f"%wgt ces encode flihgts --to {tmp_path / 's'} --pipeline pipe",
            "UsageError: no variable 'flihgts' in the namespace (the data to encode); did you "
            "mean 'flights'?",
        ),
        # a key's variable: the name meant, never the value
        (
            f"%wgt ces encode flights --to {tmp_path / 's'} --key KEYS",
            "UsageError: --key takes the name of a variable that holds the key (bytes or 64 hex "
            "characters), and there is no such variable (did you mean 'KEY'?); never type a key "
            "into a cell",
        ),
    ]:
        assert one_line(ip, capsys, code) == line


def test_a_failed_chunk_is_one_line_saying_which_and_why(names, capsys):
    ip = names
    run(ip, "%%wgt wat spin\n" + hostile.INFINITE_LOOP)
    run(
        ip,
        "greedy = wgt.Job('too-greedy')\n"
        "greedy.input(b'x' * 10_000, chunk_bytes=10_000)\n"  # one chunk
        "greedy.kernel(spin)\n"
        "greedy.limits(max_cpu_cycles=1_000_000)",
    )
    failed = (
        "ChunkFailed: job 'too-greedy': chunk 0 failed: OutOfFuel: the task used up its CPU "
        "budget: max_cpu_cycles=1,000,000 fuel; raise max_cpu_cycles or give it smaller chunks; "
        "0 chunks verified"
    )
    line = one_line(ip, capsys, "%wgt run greedy --on my_cluster --progress none")
    assert line == f"{failed}; run with -o VAR to keep the partial JobResult"
    line = one_line(ip, capsys, "%wgt run greedy --on my_cluster --progress none -o partial")
    assert line == f"{failed}; the partial JobResult is in partial (see partial.chunks)"
    assert ip.user_ns["partial"].outcomes[0].status == "error"


def test_force_replaces_a_shard_set_as_in_the_cli_and_the_error_says_so(names, capsys, tmp_path):
    ip = names
    where = tmp_path / "shards"
    assert run(ip, f"%wgt ces encode flights --to {where} --pipeline pipe").success
    line = one_line(ip, capsys, f"%wgt ces encode flights --to {where} --pipeline pipe")
    assert line == (
        f"ConfigError: '{where}' already holds a shard set; pass overwrite=True (CLI: --force) "
        "to replace it, or choose an empty location"
    )
    assert run(ip, f"%wgt ces encode flights --to {where} --pipeline pipe --force").success
    line = one_line(ip, capsys, f"%wgt ces encode flights --to {where} --overwrite")
    assert line == "UsageError: unrecognized arguments: --overwrite"


def test_help_is_plain_text(ip, capsys):
    for command, function in PARSERS.items():
        text = function.parser.format_help()
        assert "``" not in text, command
        capsys.readouterr()
        run(ip, f"%wgt {command} --help")
        assert "``" not in capsys.readouterr().out, command
    assert "``" not in (WgtMagics.wgt.__doc__ or "")
    run(ip, "%wgt help")
    overview = capsys.readouterr().out
    assert "``" not in overview and "what %wgt run and job.run() use by default" in overview
