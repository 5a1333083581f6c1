"""nbval runs each tutorial cell as a test. Here: a time limit per cell, and kernels that keep
their wgtlab cache and data in a private temporary directory, never the user's real ones."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CELL_TIMEOUT_S = 180  # the first Python UDF of a cold cache builds the runner (~40 s here)
_PRIVATE: dict[str, Path] = {}


def _is_notebook_cell(item: pytest.Item) -> bool:
    return item.path.suffix == ".ipynb"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_notebook_cell(item):
            item.add_marker(pytest.mark.timeout(CELL_TIMEOUT_S))


def _private_environment() -> dict[str, str]:
    if not _PRIVATE:
        root = Path(tempfile.mkdtemp(prefix="wgt-notebooks-"))
        _PRIVATE.update(root=root, cache=root / "cache", data=root / "data")
    return {
        "WGTLAB_CACHE_DIR": str(_PRIVATE["cache"]),
        "WGTLAB_DATA_DIR": str(_PRIVATE["data"]),
        # Every tutorial computes what it shows: no chunk comes from an earlier run's cache.
        "WGTLAB_RESULT_CACHE": "off",
        # Receipts are signed with a key of this run's own, never the user's identity.
        "WGTLAB_IDENTITY": str(_PRIVATE["root"] / "identity.key"),
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A notebook's kernel starts during its first cell's setup and inherits this environment;
    the test process itself (and the tests under tests/) keep theirs."""
    if not _is_notebook_cell(item):
        return (yield)
    saved = dict(os.environ)
    os.environ.update(_private_environment())
    try:
        return (yield)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _PRIVATE:
        shutil.rmtree(_PRIVATE["root"], ignore_errors=True)
