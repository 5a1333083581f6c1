"""Python functions inside the WebAssembly sandbox: ``@wgt.udf`` on CPython compiled to WASM.

The runner (componentize-py, no imports at all) is built once and cached on disk; see udf.py.
"""

from wgtlab.sandbox.python.component import build_runner, runner_digest, runner_info
from wgtlab.sandbox.python.guest.guest_modules import GUEST_MODULES
from wgtlab.sandbox.python.udf import PythonUdf, natural_combine, udf

__all__ = [
    "GUEST_MODULES",
    "PythonUdf",
    "build_runner",
    "natural_combine",
    "runner_digest",
    "runner_info",
    "udf",
]
