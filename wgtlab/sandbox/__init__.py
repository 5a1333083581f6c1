"""The WebAssembly sandbox: limits, modules, the ABI runner, built-in kernels, Python UDFs."""

from wgtlab.sandbox.cache import compile_cached
from wgtlab.sandbox.limits import ModuleCaps, ResourceLimits
from wgtlab.sandbox.module import ExportSpec, ImportSpec, WasmModule
from wgtlab.sandbox.runner import Sandbox, TaskResult
from wgtlab.sandbox.traps import classify_trap

__all__ = [
    "ExportSpec",
    "ImportSpec",
    "ModuleCaps",
    "ResourceLimits",
    "Sandbox",
    "TaskResult",
    "WasmModule",
    "classify_trap",
    "compile_cached",
]
