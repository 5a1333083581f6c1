"""Tried as a new user would: JupyterLab on loopback, 01-quickstart opened in headless Chromium,
Run All, and the live dashboard and the plot really drawn. Screenshots go to benchmarks/output/.

Needs Chromium at /usr/bin/chromium (Debian's package; CI installs it) and the `jupyterlab` and
`playwright` packages; skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01-quickstart.ipynb"
SCREENSHOTS = REPO / "benchmarks" / "output"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 300  # the last cell builds the Python runner from a cold cache (~15-60 s)

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` to run the browser test",
    ),
    pytest.mark.timeout(START_TIMEOUT_S + RUN_TIMEOUT_S + 60),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run after the tutorial: the job again, on the cluster whose liar the first run quarantined.
RUN_AGAIN = "# local-0 is quarantined before this run starts\nagain = %wgt run job"
# Then a first @wgt.udf on a machine whose cache is empty (the server's WGTLAB_CACHE_DIR is
# fresh): building and compiling the runner must say so and show its progress.
FIRST_UDF = "@wgt.udf\ndef first_udf(rows):\n    return len(rows)\n\nfirst_udf.run([1, 2, 3])"


def fresh_copy(directory: Path) -> Path:
    """The tutorial without its stored outputs, so whatever shows was drawn by this run, and
    one more cell (RUN_AGAIN)."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook["cells"].append(_code_cell(RUN_AGAIN))
    notebook["metadata"].pop("widgets", None)
    copy = directory / NOTEBOOK.name
    copy.write_text(json.dumps(notebook), encoding="utf-8")
    # and a notebook of its own for the first @wgt.udf (cells: import, then the udf)
    first = {**notebook, "cells": [_code_cell("import wgtlab as wgt"), _code_cell(FIRST_UDF)]}
    (directory / FIRST_UDF_NOTEBOOK).write_text(json.dumps(first), encoding="utf-8")
    return copy


FIRST_UDF_NOTEBOOK = "first-udf.ipynb"


def _code_cell(source: str) -> dict[str, object]:
    return {
        "cell_type": "code",
        "metadata": {},
        "source": source,
        "outputs": [],
        "execution_count": None,
    }


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on loopback with a random token; every directory it (and its kernels)
    write to is under tmp_path. Yields the notebook's URL."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install jupyterlab)")
    root = tmp_path / "lab"
    root.mkdir()
    fresh_copy(root)
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "MPLCONFIGDIR": str(home / "matplotlib"),
        "WGTLAB_CACHE_DIR": str(home / "wgtlab-cache"),
        "WGTLAB_DATA_DIR": str(home / "wgtlab-data"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",  # no package index queries (the network is shut)
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    # No "get official Jupyter news?" prompt over the notebook (and no attempt to fetch it).
    notification = home / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    log = (tmp_path / "jupyterlab.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        "JupyterLab did not start:\n"
                        + (tmp_path / "jupyterlab.log").read_text(errors="replace")[-3000:]
                    )
                time.sleep(0.5)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}&reset"
    finally:
        request = urllib.request.Request(
            f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
        )
        try:
            urllib.request.urlopen(request, timeout=5).close()
            server.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()


@contextlib.contextmanager
def notebook_run(url: str) -> Iterator[Any]:
    """The notebook at ``url`` opened in headless Chromium, its kernel connected, Run All, and
    done: every code cell has an execution count and the kernel is idle again."""
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=START_TIMEOUT_S * 1000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=START_TIMEOUT_S * 1000)
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                ".connectionStatus === 'connected'",
                timeout=START_TIMEOUT_S * 1000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(
                """() => {
                    const panel = window.jupyterapp.shell.currentWidget;
                    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
                    const kernel = panel.sessionContext.session.kernel;
                    return cells.every(c => c.model.executionCount !== null)
                        && kernel.status === 'idle';
                }""",
                timeout=RUN_TIMEOUT_S * 1000,
                polling=500,
            )
            yield page
        finally:
            browser.close()


def test_quickstart_runs_in_jupyterlab(jupyterlab: str) -> None:
    with notebook_run(jupyterlab) as page:
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
        )
        assert errors.count() == 0, errors.first.inner_text()

        # The live dashboard: a widget view with the overall bar full and the worker rows.
        dashboard = page.locator(".jp-OutputArea-output .widget-vbox").first
        dashboard.scroll_into_view_if_needed()
        dashboard.wait_for(state="visible", timeout=30_000)
        assert "distance-histogram" in dashboard.inner_text()
        assert "28/28 verified" in dashboard.inner_text()
        assert dashboard.locator(".widget-label", has_text="local-0").count() == 1
        assert "quarantined" in dashboard.inner_text()
        bar = dashboard.locator(".progress-bar").first
        assert bar.evaluate("e => parseFloat(e.style.width)") == pytest.approx(100.0)
        dashboard.screenshot(path=str(SCREENSHOTS / "browser-quickstart-dashboard.png"))

        # The second run's dashboard: the liar wears its badge, though nothing in that run
        # quarantined it (it was quarantined before the run started).
        last = page.locator(".jp-Notebook .jp-CodeCell").last
        assert "again = %wgt run job" in last.locator(".jp-InputArea").inner_text()
        assert "Error" not in last.locator(".jp-OutputArea").inner_text()
        again = last.locator(".jp-OutputArea-output .widget-vbox").first
        again.scroll_into_view_if_needed()
        again.wait_for(state="visible", timeout=30_000)
        assert "28/28 verified" in again.inner_text()
        liar = again.locator(".widget-hbox", has=page.locator(".widget-label", has_text="local-0"))
        assert liar.count() == 1 and "quarantined" in liar.inner_text()
        honest = again.locator(
            ".widget-hbox", has=page.locator(".widget-label", has_text="local-1")
        )
        assert honest.count() == 1 and "quarantined" not in honest.inner_text()
        again.screenshot(path=str(SCREENSHOTS / "browser-quickstart-dashboard-again.png"))

        # The trust timeline: a PNG that the browser decoded to a real image.
        plot = page.locator(".jp-RenderedImage img").last
        plot.scroll_into_view_if_needed()
        size = plot.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
        assert size[0] and size[1] > 300 and size[2] > 150, size
        plot.screenshot(path=str(SCREENSHOTS / "browser-quickstart-plot.png"))

        result_card = page.locator(".jp-OutputArea-output .wgt-result").first
        result_card.scroll_into_view_if_needed()
        assert "28 of 28 chunks verified" in result_card.inner_text()
        result_card.screenshot(path=str(SCREENSHOTS / "browser-quickstart-result.png"))
        cluster_card = page.locator(".jp-OutputArea-output .wgt-cluster").first
        cluster_card.scroll_into_view_if_needed()
        assert "4 sandboxed workers, 1 with simulated faults" in cluster_card.inner_text()
        cluster_card.screenshot(path=str(SCREENSHOTS / "browser-quickstart-cluster.png"))
        page.screenshot(path=str(SCREENSHOTS / "browser-quickstart.png"))


def test_the_first_udf_shows_the_runner_build_in_jupyterlab(jupyterlab: str) -> None:
    """The server's wgtlab cache is empty: the first @wgt.udf builds and compiles the runner,
    says so in a line, shows a progress bar (a widget) per step ending with how long it took,
    then answers."""
    url = jupyterlab.replace(NOTEBOOK.name, FIRST_UDF_NOTEBOOK)
    with notebook_run(url) as page:
        cell = page.locator(".jp-Notebook .jp-CodeCell").last
        assert "first_udf.run" in cell.locator(".jp-InputArea").inner_text()
        # tqdm's widget writes figure spaces (U+2007) for its spaces
        shown = cell.locator(".jp-OutputArea").inner_text().replace("\u2007", " ")
        assert "wgtlab: building the Python runner for @wgt.udf, once per machine" in shown
        assert "wgtlab: compiling the Python runner for @wgt.udf, once per machine" in shown
        bars = cell.locator(".jp-OutputArea-output .widget-hprogress")
        assert bars.count() == 2  # building, then compiling: both full once done
        for i in range(2):
            width = bars.nth(i).locator(".progress-bar").evaluate("e => e.style.width")
            assert float(width.rstrip("%")) == pytest.approx(100.0), width
        assert "building the Python runner: done in" in shown
        assert "compiling the Python runner: done in" in shown
        assert shown.rstrip().endswith("3")  # and then the answer
        cell.screenshot(path=str(SCREENSHOTS / "browser-first-udf-progress.png"))
