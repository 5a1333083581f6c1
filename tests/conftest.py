"""Test-suite settings shared by every test module."""

from __future__ import annotations

import os

import pytest
import sandbox_hostile as hostile
from hypothesis import settings

from wgtlab.sandbox.module import WasmModule

# CI runs each property test on the same examples every time: a red CI is a real regression,
# never a newly drawn example. Locally, hypothesis explores freely.
settings.register_profile("ci", derandomize=True, print_blob=True)

# Every test computes what it checks: the verified-result cache is off unless a test turns it
# on with a file of its own (tests/test_result_cache.py).
os.environ["WGTLAB_RESULT_CACHE"] = "off"
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """Compiled modules go to a temporary cache for the module's tests, not the user's.

    Use with ``pytestmark = pytest.mark.usefixtures("private_cache")``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WGTLAB_CACHE_DIR", str(tmp_path_factory.mktemp("wgt-cache")))
        yield


@pytest.fixture(scope="module")
def cluster():
    """Two local sandboxed workers for a module's tests (a module may define its own)."""
    import wgtlab as wgt

    with wgt.LocalCluster(workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def echo() -> WasmModule:
    return WasmModule.from_wat(hostile.ECHO)


@pytest.fixture(scope="module")
def ip():
    """A real IPython shell with ``%load_ext wgtlab``, for a module's magics tests."""
    from IPython.core.interactiveshell import InteractiveShell

    from wgtlab.jobs import runtime

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgtlab")
    shell.run_cell("import wgtlab as wgt", store_history=False)
    yield shell
    shell.run_line_magic("unload_ext", "wgtlab")
    runtime.set_session_cluster(None)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private compiled-code cache for one test (memory layer emptied before and after);
    the directory where its module entries go."""
    from wgtlab.sandbox.cache import clear_memory_cache

    monkeypatch.setenv("WGTLAB_CACHE_DIR", str(tmp_path))
    clear_memory_cache()
    yield tmp_path / "modules"
    clear_memory_cache()
