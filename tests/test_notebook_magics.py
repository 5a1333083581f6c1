"""The %wgt magics in a real IPython shell: clusters, jobs, proofs, kernels, CES, completion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import sandbox_hostile as hostile
from IPython.core.completer import provisionalcompleter
from IPython.core.interactiveshell import InteractiveShell
from magics_support import failure_lines, run

import wgtlab as wgt
from wgtlab.jobs import runtime
from wgtlab.notebook.magics import ProofCheck, WgtMagics


def test_trust_plot_draws_the_threshold_of_the_session_clusters_policy(ip, monkeypatch):
    import IPython.display

    from wgtlab.trust.policy import TrustPolicy

    ledger = wgt.TrustLedger(":memory:")
    strict = wgt.LocalCluster(workers=2, policy=TrustPolicy(ledger, quarantine_threshold=0.6))
    for _ in range(3):  # 0.45, 0.405, 0.3645: above the default threshold, below this policy's
        ledger.record(strict.fingerprint("local-0"), False, label="local-0")
    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    previous = runtime.session_cluster()
    runtime.set_session_cluster(strict)
    try:
        assert run(ip, "%wgt trust --plot").result is ledger
    finally:
        runtime.set_session_cluster(previous)
        strict.close()
    [figure] = shown
    ax = figure.axes[0]
    assert "threshold 0.6" in [t.get_text() for t in ax.get_legend().get_texts()]
    [cross] = ax.collections  # local-0's dip below the threshold, marked where it began
    assert cross.get_offsets().tolist() == [[1.0, pytest.approx(0.45)]]


def test_help_shows_every_command_usage():
    doc = WgtMagics.wgt.__doc__
    for usage in ("%wgt cluster", "%wgt run", "%wgt verify", "%wgt ces", "--liars", "--replicas"):
        assert usage in doc


def test_unknown_command_is_one_line_and_fails_the_cell(ip, capsys):
    lines = failure_lines(ip, capsys, "%wgt bogus")
    assert len(lines) == 1
    assert lines[0].startswith("UsageError: unknown %wgt command 'bogus'")


def test_bad_arguments_are_one_line(ip, capsys):
    lines = failure_lines(ip, capsys, "%wgt cluster local four")
    assert lines == ["UsageError: %wgt cluster local N: N must be a number, got 'four'"]
    lines = failure_lines(ip, capsys, "%wgt run")
    assert len(lines) == 1 and "the following arguments are required: job" in lines[0]


def test_dask_cluster_arguments_are_checked_before_connecting(ip, capsys):
    lines = failure_lines(ip, capsys, "%wgt cluster dask")
    assert lines == ["UsageError: %wgt cluster dask ADDRESS: give a tls:// address, or 'local'"]
    lines = failure_lines(ip, capsys, "%wgt cluster dask tls://127.0.0.1:9")
    assert len(lines) == 1
    assert lines[0].startswith("ConfigError: tls://127.0.0.1:9 needs a client certificate")
    lines = failure_lines(ip, capsys, "%wgt cluster dask local --workers 2 --liars 3")
    assert lines == ["UsageError: --liars must be between 0 and the 2 workers"]
    lines = failure_lines(ip, capsys, "%wgt cluster dask tcp://127.0.0.1:9")
    assert lines == [
        "UsageError: %wgt cluster dask: 'tcp://127.0.0.1:9' is not a tls:// address; wgtlab "
        "talks to Dask only over mutual TLS (tls://HOST:PORT with --certs), or use 'local'"
    ]


def test_line_command_given_a_cell_is_refused(ip, capsys):
    lines = failure_lines(ip, capsys, "%%wgt run job\nx = 1")
    assert lines == ["UsageError: run is a line command: write %wgt run (one %)"]


def test_cluster_run_and_verify(ip, capsys):
    result = run(ip, "%wgt cluster local 4 --liars 1 --seed 3 -o cluster")
    cluster = result.result
    assert isinstance(cluster, wgt.LocalCluster)
    assert sorted(cluster.faults) == ["local-0"]
    assert runtime.session_cluster() is cluster is ip.user_ns["cluster"]

    values = np.random.default_rng(5).uniform(0, 100, 20_000)
    ip.user_ns["values"] = values
    run(
        ip,
        "job = wgt.Job('hist')\n"
        "job.input(values, chunk_rows=500)\n"
        "job.kernel(wgt.kernels.histogram(bins=10, lo=0.0, hi=100.0))",
    )
    result = run(ip, "%wgt run job --replicas 3 -o res --progress none")
    assert result.success, result.error_in_exec
    res = ip.user_ns["res"]
    assert result.result is res
    assert res.ok and res.mode == "redundancy" and res.replicas == 3
    assert ip.user_ns["job"].verification.mode == "hash"  # the flags were for that run only
    np.testing.assert_array_equal(res.value, np.histogram(values, bins=10, range=(0, 100))[0])
    dissenters = {w for c in res.outcomes for w in c.dissenters}
    assert res.disagreements > 0 and dissenters == {"local-0"}

    check = run(ip, "%wgt verify res 3").result
    assert isinstance(check, ProofCheck) and check.root.hex() == res.merkle_root
    assert f"root  {res.merkle_root}" in repr(check)
    assert "verified" in check._repr_html_()
    run(ip, f"%wgt verify res 3 --root {res.merkle_root}")

    other = "00" * 32
    lines = failure_lines(ip, capsys, f"%wgt verify res 3 --root {other}")
    assert len(lines) == 1 and lines[0].startswith("ProofError: the audit path of chunk 3 in res")
    lines = failure_lines(ip, capsys, "%wgt verify res 99")
    assert lines == ["ProofError: chunk 99 is not in this result (0..39)"]

    assert run(ip, "%wgt workers").result is cluster
    assert run(ip, "%wgt trust").result is cluster.ledger
    shown = []
    ip.display_pub.publish = lambda data, **kw: shown.append(data)
    try:
        assert run(ip, "%wgt trust --plot").result is cluster.ledger
    finally:
        del ip.display_pub.publish
    assert len(shown) == 1 and shown[0]["text/plain"] == "<Figure size 800x400 with 1 Axes>"
    assert shown[0]["image/png"]
    quarantined = cluster.ledger.state(cluster.fingerprint("local-0")).quarantined
    assert quarantined


def test_failed_job_is_one_line_and_keeps_the_partial_result(ip, capsys):
    run(ip, "%wgt cluster local 2")
    ip.user_ns["data"] = b"x" * 10_000
    run(ip, "%%wgt wat spin\n" + hostile.INFINITE_LOOP)
    run(
        ip,
        "bad = wgt.Job('spin')\n"
        "bad.input(data, chunk_bytes=5_000)\n"
        "bad.kernel(spin)\n"
        "bad.limits(max_cpu_cycles=100_000)",
    )
    lines = failure_lines(ip, capsys, "%wgt run bad -o partial --progress none")
    assert len(lines) == 1
    # Two chunks on two workers: which runs out of fuel first is a matter of timing (the
    # exact line, for one chunk: test_notebook_magics_messages.py).
    first = ip.user_ns["partial"].outcomes[int(lines[0].split("chunk ")[1].split()[0])]
    assert lines[0].startswith(f"ChunkFailed: job 'spin': chunk {first.index} failed: OutOfFuel: ")
    assert lines[0].endswith("the partial JobResult is in partial (see partial.chunks)")
    assert first.status == "error"


def test_wat_cell_binds_a_module_and_bad_wat_is_one_line(ip, capsys):
    module = run(ip, "%%wgt wat echo\n" + hostile.ECHO).result
    assert isinstance(module, wgt.WasmModule) and ip.user_ns["echo"] is module
    assert module.name == "echo"
    lines = failure_lines(ip, capsys, "%%wgt wat broken\n(module (func (export oops)))")
    assert len(lines) == 1 and lines[0].startswith("InvalidModule: the WAT text does not parse")
    assert "broken" not in ip.user_ns


def test_udf_cell_body_and_def(ip):
    ip.user_ns["rows_in"] = [{"x": 1}, {"x": 2}, {"x": 4}]
    body = run(ip, "%%wgt udf total\nreturn sum(r['x'] for r in rows)")
    assert body.success, body.error_in_exec
    total = ip.user_ns["total"]
    assert total.run(ip.user_ns["rows_in"], echo=False) == 7
    as_def = run(ip, "%%wgt udf biggest\ndef largest(rows):\n    return max(r['x'] for r in rows)")
    assert as_def.success, as_def.error_in_exec
    assert ip.user_ns["biggest"].run(ip.user_ns["rows_in"], echo=False) == 4


def test_a_name_that_is_not_a_variable_is_refused_before_anything_runs(ip, capsys):
    for name in ("1bad", "class", "a-b"):
        lines = failure_lines(ip, capsys, f"%%wgt udf {name}\ndef f(rows):\n    return 1")
        assert lines == [
            f"UsageError: {name!r} is not a valid variable name: use a Python identifier"
        ]
    lines = failure_lines(ip, capsys, "%%wgt wat 2x\n(module)")
    assert lines == ["UsageError: '2x' is not a valid variable name: use a Python identifier"]


def test_run_of_a_defined_job_without_data_says_to_give_data(ip, capsys):
    run(
        ip,
        "import wgtlab as wgt\n"
        "@wgt.Job.define\n"
        "def doubled():\n"
        "    wgt.Job.split(lambda data: [data[:2], data[2:]])\n"
        "    wgt.Job.execute(wgt.kernels.sum())\n"
        "    wgt.Job.merge(sum)",
    )
    lines = failure_lines(ip, capsys, "%wgt run doubled")
    assert lines == [
        "UsageError: doubled is a @wgt.Job.define job: give it its input with --data VAR"
    ]


def test_udf_cell_with_two_defs_must_name_one(ip, capsys):
    lines = failure_lines(
        ip, capsys, "%%wgt udf f\ndef a(rows):\n    return 1\ndef b(rows):\n    return 2"
    )
    assert lines == ["UsageError: the cell defines a, b; which one is 'f'?"]


def test_ces_encode_inspect_decode(ip, tmp_path, capsys):
    frame = pd.DataFrame({"carrier": ["AA", "UA", "DL"] * 500, "delay": np.arange(1500.0)})
    ip.user_ns.update(frame=frame, key=bytes(range(32)))
    url = tmp_path / "flights"
    report = run(ip, f"%wgt ces encode frame --to {url} --key key").result
    assert report.recoverable and report.counts() == {"ok": 12}
    for name in sorted(p.name for p in url.iterdir() if p.name != "manifest.json")[:4]:
        (url / name).unlink()
    report = run(ip, f"%wgt ces inspect {url}").result
    assert report.recoverable and report.counts() == {"ok": 8, "missing": 4}
    capsys.readouterr()
    assert run(ip, f"%wgt ces decode {url} -o back --key key").success
    assert "back = DataFrame, 1,500 rows × 2 columns" in capsys.readouterr().out
    pd.testing.assert_frame_equal(ip.user_ns["back"], frame)
    next(p for p in url.iterdir() if p.name.startswith("shard")).unlink()
    lines = failure_lines(ip, capsys, f"%wgt ces decode {url} -o again --key key")
    assert len(lines) == 1 and lines[0].startswith("NotEnoughShardsError:")
    ip.user_ns["other"] = bytes(32)
    url2 = tmp_path / "text"
    run(ip, f"%wgt ces encode frame --to {url2} --key key")
    lines = failure_lines(ip, capsys, f"%wgt ces decode {url2} -o again --key other")
    assert len(lines) == 1 and lines[0].startswith("KeyMismatchError:")


def test_ces_magic_never_echoes_a_typed_key_and_decode_needs_one(ip, tmp_path, capsys, monkeypatch):
    typed = "ab" * 32
    lines = failure_lines(ip, capsys, f"%wgt ces decode {tmp_path} -o back --key {typed}")
    assert len(lines) == 1 and lines[0].startswith(
        "UsageError: the value given to --key looks like key material; it is not shown"
    )
    assert typed not in lines[0] and "abab" not in lines[0]
    lines = failure_lines(ip, capsys, f"%wgt ces decode {tmp_path} -o back --key no_such_key")
    assert len(lines) == 1 and lines[0].startswith("UsageError: --key takes the name of a variable")
    monkeypatch.delenv("CES_ENCRYPTION_KEY", raising=False)
    lines = failure_lines(ip, capsys, f"%wgt ces decode {tmp_path} -o back")
    assert lines == [
        "UsageError: %wgt ces decode needs the key the shards were sealed with: --key VAR, "
        "--pipeline VAR, or CES_ENCRYPTION_KEY in the environment"
    ]


def completions(ip: InteractiveShell, line: str) -> list[str]:
    """What a Jupyter front end offers at the end of ``line`` (the kernel's completion call)."""
    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(line, len(line))]


def test_tab_completion(ip):
    run(ip, "import pandas as pd\na_job = wgt.Job('a')\nnot_a_job = 3")
    run(ip, "a_query = wgt.frame(pd.DataFrame({'x': [1.0]})).x.sum()")
    assert set(completions(ip, "%wgt ")) >= {"cluster", "run", "verify", "ces", "help"}
    assert completions(ip, "%wgt ve") == ["verify", "verify-receipt"]
    assert completions(ip, "%wgt cluster ") == ["local", "dask"]
    assert completions(ip, "%wgt ces i") == ["inspect"]
    assert completions(ip, "%wgt run a") == ["a_job", "a_query"]
    assert "not_a_job" not in completions(ip, "%wgt run ")
    assert completions(ip, "%%wgt ") == ["udf", "wat", "sql"]
    assert completions(ip, "%wgt trust --") == ["--plot"]
    assert completions(ip, "x = 1\n%wgt ces ") == ["encode", "decode", "inspect"]
    with pytest.warns(PendingDeprecationWarning):  # the pre-Jedi path some front ends still use
        assert ip.Completer.complete("", "%wgt cl", 7)[1] == ["cluster"]


def test_command_help(ip, capsys):
    capsys.readouterr()
    assert run(ip, "%wgt verify --help").success
    out = capsys.readouterr().out
    assert out.startswith("%wgt verify [--root ROOT] result chunk")
    assert "the published Merkle root" in out


def test_udf_cell_options(ip):
    made = run(ip, "%%wgt udf lengths --input text --combine list\nreturn len(rows)")
    assert made.success, made.error_in_exec
    lengths = ip.user_ns["lengths"]
    assert lengths.input_kind == "text" and lengths.params["combine"] == "list"
    assert lengths.combine([3, 4]) == [3, 4]


def test_help_prints_the_overview(ip, capsys):
    capsys.readouterr()
    run(ip, "%wgt help")
    out = capsys.readouterr().out
    assert "%wgt cluster" in out and "%wgt ces" in out and "%wgt?" in out
