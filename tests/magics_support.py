"""What the magics tests share: running cells in the real IPython shell of the ``ip`` fixture
(tests/conftest.py), and the colour codes to strip from what it prints."""

from __future__ import annotations

import re
from typing import Any

from IPython.core.interactiveshell import InteractiveShell

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(ip: InteractiveShell, code: str) -> Any:  # an ExecutionResult (IPython types .result None)
    return ip.run_cell(code, store_history=False)
