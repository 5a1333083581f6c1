"""HTML views and figures: results, errors, modules, ledgers, shard sets, clusters."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import sandbox_hostile as hostile
from IPython.core.interactiveshell import InteractiveShell
from matplotlib.colors import to_hex

import wgtlab as wgt
from wgtlab.notebook.shardmap import shard_map
from wgtlab.views import SHARD_COLOURS

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def html():
    """IPython's HTML formatter, without ``%load_ext wgtlab``: every object draws itself."""
    shell = InteractiveShell.instance()
    formatter = shell.display_formatter.formatters["text/html"]
    assert not any(k.startswith("wgtlab") for k in formatter.deferred_printers)
    return formatter


@pytest.fixture(scope="module")
def extension():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgtlab")
    yield shell
    shell.run_line_magic("unload_ext", "wgtlab")


def test_task_result_view(html):
    module = wgt.WasmModule.from_wat(hostile.ECHO, name="echo")
    result = wgt.Sandbox().run(module, b"<b>hi</b>")
    page = html(result)
    assert "TaskResult" in page and result.output_sha256 in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi</b>" not in page
    assert f"{result.fuel_used:,}" in page


def test_sandbox_error_view(html):
    module = wgt.WasmModule.from_wat(hostile.INFINITE_LOOP, name="spin")
    with pytest.raises(wgt.OutOfFuel) as caught:
        wgt.Sandbox(wgt.ResourceLimits(max_cpu_cycles=50_000)).run(module, b"x")
    page = html(caught.value)
    assert ">OutOfFuel<" in page and ">SandboxError<" in page
    assert str(caught.value).split(";")[0].replace("'", "&#x27;") in page


def test_module_view(html):
    module = wgt.WasmModule.from_wat(hostile.ECHO, name="echo")
    page = html(module)
    assert module.digest in page and "none" in page and "wgt_run" in page


def test_ledger_view(html, tmp_path):
    ledger = wgt.TrustLedger(tmp_path / "trust.sqlite3")
    for _ in range(10):
        ledger.record("ed25519:" + "a" * 32, False, label="local-0")
    ledger.record("ed25519:" + "b" * 32, True, label="local-1")
    page = html(ledger)
    assert "2 workers" in page and str(tmp_path) in page
    row0 = page[page.index(">local-0</td>") :].split("</tr>")[0]
    assert "quarantined" in row0 and "0.174" in row0
    row1 = page[page.index(">local-1</td>") :].split("</tr>")[0]
    assert "active" in row1 and "0.550" in row1


def damaged_set() -> tuple[list[bytes | None], wgt.CESPipeline]:
    pipeline = wgt.CESPipeline(KEY)
    shards: list[bytes | None] = list(pipeline.process(b"flight data " * 20_000))
    shards[1] = shards[5] = None
    broken = bytearray(shards[9])
    broken[-10] ^= 1
    shards[9] = bytes(broken)
    return shards, pipeline


def test_shard_report_view_and_map(html):
    shards, pipeline = damaged_set()
    report = wgt.ces.inspect(shards, key=pipeline)
    page = html(report)
    assert "recoverable" in page and "9 usable, 8 needed" in page
    assert "9 ok · 1 damaged · 2 missing" in page
    fig = shard_map(report)
    squares = [p for p in fig.axes[0].patches if p.get_width() < 1]
    assert len(squares) == 12
    edges = [to_hex(p.get_edgecolor()).upper() for p in squares]
    assert edges[1] == edges[5] == SHARD_COLOURS["missing"]
    assert edges[9] == SHARD_COLOURS["damaged"]
    assert edges.count(SHARD_COLOURS["ok"]) == 9
    assert "9 usable, 8 needed — recoverable" in fig.axes[0].get_title()

    shards[2] = shards[3] = None
    lost = wgt.ces.inspect(shards, key=pipeline)
    assert "NOT recoverable" in html(lost)
    assert "NOT recoverable" in shard_map(lost).axes[0].get_title()


def test_job_result_and_cluster_views():
    faults = {"local-1": wgt.faults.Liar(rate=1.0, seed=3)}
    # three honest workers: the liar's dissent escalates each chunk to a fourth replica
    with wgt.LocalCluster(workers=4, faults=faults) as cluster:
        job = wgt.Job("<script>alert(1)</script>")
        job.input(np.arange(4_000.0), chunk_rows=1_000)
        job.kernel(wgt.kernels.sum())
        job.verify("redundancy", replicas=3)
        result = job.run(on=cluster)
        page = result._repr_html_()
        assert "<script>" not in page and "&lt;script&gt;" in page
        assert "4 of 4 chunks verified" in page and result.merkle_root in page
        assert "mode <b>redundancy</b> · replicas 3" in page
        card = cluster._repr_html_()
        assert "4 sandboxed workers, 1 with simulated faults" in card
        assert "Liar (100% of tasks)" in card
        assert cluster.fingerprint("local-2") in card


def test_figures_render_as_png(extension):
    png = extension.display_formatter.formatters["image/png"]
    shards, pipeline = damaged_set()
    data = png(shard_map(wgt.ces.inspect(shards, key=pipeline)))
    assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
