"""What the magics tests share: running cells in the real IPython shell of the ``ip`` fixture
(tests/conftest.py), and the colour codes to strip from what it prints."""

from __future__ import annotations

import re
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from wgtlab.notebook.magics import MagicError

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(ip: InteractiveShell, code: str) -> Any:  # an ExecutionResult (IPython types .result None)
    return ip.run_cell(code, store_history=False)


def failure_lines(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str) -> list[str]:
    """Run a cell that must fail; return what IPython printed for the error."""
    capsys.readouterr()
    result = run(ip, code)
    assert not result.success
    assert isinstance(result.error_in_exec, MagicError)
    return [ANSI.sub("", line) for line in capsys.readouterr().out.strip().splitlines()]
