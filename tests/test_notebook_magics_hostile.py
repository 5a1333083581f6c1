"""The %wgt magics against a careless or hostile notebook, in a real IPython shell: quoted
paths."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from test_notebook_magics import ANSI, run

import wgtlab as wgt
from wgtlab.jobs import runtime
from wgtlab.notebook.magics import MagicError


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgtlab")
    shell.run_cell("import wgtlab as wgt", store_history=False)
    yield shell
    shell.run_line_magic("unload_ext", "wgtlab")
    runtime.set_session_cluster(None)


def everything_printed(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str
) -> tuple[Any, str]:
    """Run a cell; return its result and all it printed (stdout and stderr, colours removed)."""
    capsys.readouterr()
    result = run(ip, code)
    captured = capsys.readouterr()
    return result, ANSI.sub("", captured.out + captured.err)


def one_failure_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str) -> str:
    result, printed = everything_printed(ip, capsys, code)
    assert not result.success, f"{code!r} did not fail"
    assert isinstance(result.error_in_exec, MagicError), result.error_in_exec
    lines = printed.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- quoting: a quoted path is the path, not a name with quotes in it ----------------------------


def test_quoted_paths_with_spaces_are_taken_whole(ip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a path that kept its quotes would be written here, relative
    home = tmp_path / "dir with spaces"
    home.mkdir()
    frame = pd.DataFrame({"carrier": ["AA", "UA"] * 200, "delay": np.arange(400.0)})
    ip.user_ns.update(frame=frame, key=bytes(range(32)))
    shards = home / "flight shards"

    report = run(ip, f'%wgt ces encode frame --to "{shards}" --key key').result
    assert report is not None and report.recoverable and report.counts() == {"ok": 12}
    assert (shards / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir with spaces"]

    report = run(ip, f"%wgt ces inspect '{shards}'").result
    assert report.counts() == {"ok": 12}
    escaped = str(shards).replace(" ", "\\ ")  # a shell's other way of writing the same path
    assert run(ip, f"%wgt ces inspect {escaped}").result.counts() == {"ok": 12}
    assert run(ip, f'%wgt ces decode "{shards}" -o back --key key').success
    pd.testing.assert_frame_equal(ip.user_ns["back"], frame)

    ledger = home / "trust ledger.db"
    cluster = run(ip, f'%wgt cluster local 2 --ledger "{ledger}"').result
    assert isinstance(cluster, wgt.LocalCluster) and runtime.session_cluster() is cluster
    assert ledger.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir with spaces"]


def test_an_unclosed_quote_is_one_line(ip, capsys):
    line = one_failure_line(ip, capsys, '%wgt ces inspect "/tmp/no end')
    assert line == "UsageError: the line has a quote that is never closed; close it, or escape it"
