"""In a real Jupyter kernel: the dashboard is a live widget, a running job stays interruptible,
and the extension unloads cleanly."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from jupyter_client.manager import start_new_kernel

# Generous bounds for a loaded machine; the stalled task would take ten minutes.
REPLY_S = 60
INTERRUPT_S = 30


@pytest.fixture
def kernel(tmp_path) -> Iterator[Any]:
    env_cache = {"WGTLAB_CACHE_DIR": str(tmp_path / "cache"), "WGTLAB_DATA_DIR": str(tmp_path)}
    manager, client = start_new_kernel(
        kernel_name="python3", env={**os.environ, **env_cache}, cwd=str(tmp_path)
    )
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_until_idle(client: Any, code: str, timeout: float = REPLY_S) -> list[dict]:
    """Execute ``code`` and return its iopub messages up to the kernel going idle."""
    msg_id = client.execute(code)
    messages = []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


def test_interrupting_a_running_job(kernel) -> None:
    _manager, client = kernel
    setup = run_until_idle(
        client,
        "%load_ext wgtlab\n"
        "import wgtlab as wgt\n"
        "stalled = wgt.LocalCluster(workers=2, faults={\n"
        "    'local-0': wgt.faults.Stall(rate=1.0, seconds=600),\n"
        "    'local-1': wgt.faults.Stall(rate=1.0, seconds=600)})\n"
        "job = wgt.Job('stuck').input(list(range(100)), chunk_rows=10)\n"
        "job.kernel(wgt.kernels.sum())",
    )
    assert not [m for m in setup if m["msg_type"] == "error"]
    msg_id = client.execute("%wgt run job --on stalled")
    shown = False
    states: list[str] = []
    # The dashboard appears as a widget view, then says "running" once the job has started.
    while not (states and ">running<" in states[-1]):
        msg = client.get_iopub_msg(timeout=REPLY_S)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "display_data":
            assert "application/vnd.jupyter.widget-view+json" in msg["content"]["data"]
            shown = True
        elif msg["msg_type"] == "comm_msg":
            value = msg["content"]["data"].get("state", {}).get("value", "")
            if isinstance(value, str) and "verified ·" in value:
                states.append(value)
    assert shown
    kernel[0].interrupt_kernel()
    error = None
    try:
        while error is None:
            msg = client.get_iopub_msg(timeout=INTERRUPT_S)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "error":
                error = msg["content"]
            elif msg["msg_type"] == "comm_msg":
                value = msg["content"]["data"].get("state", {}).get("value", "")
                if isinstance(value, str) and "verified ·" in value:
                    states.append(value)
    except queue.Empty:
        pytest.fail(f"no KeyboardInterrupt within {INTERRUPT_S} s of the interrupt")
    assert error["ename"] == "KeyboardInterrupt"
    assert states and ">interrupted<" in states[-1]
    while not (
        msg["parent_header"].get("msg_id") == msg_id
        and msg["msg_type"] == "status"
        and msg["content"]["execution_state"] == "idle"
    ):
        msg = client.get_iopub_msg(timeout=REPLY_S)
    # The kernel is still usable.
    after = run_until_idle(client, "6 * 7")
    results = [m for m in after if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "42"


def test_unload_removes_magics_and_completion() -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgtlab")
    shell.run_line_magic("load_ext", "wgtlab")  # twice: still one completion matcher
    names = [getattr(m, "__name__", "") for m in shell.Completer.custom_matchers]
    assert names.count("wgt_completions") == 1
    shell.run_line_magic("unload_ext", "wgtlab")
    assert shell.find_line_magic("wgt") is None and shell.find_cell_magic("wgt") is None
    names = [getattr(m, "__name__", "") for m in shell.Completer.custom_matchers]
    assert "wgt_completions" not in names
