"""One task in the Python runner: a fresh Store and instance under all four limits, typed outcome.

A Python exception in the function becomes a UdfError carrying the guest's traceback; a trap
becomes the typed SandboxError for it; nothing from one task survives into the next.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import wasmtime
from wasmtime import component as wc

from wgtlab.errors import SandboxError, StackOverflow, UdfError
from wgtlab.sandbox.engine import SandboxEngine, get_engine
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.python.component import runner_component, runner_digest
from wgtlab.sandbox.traps import classify_component_trap, memory_limit_error
from wgtlab.sandbox.wasi import component_linker

__all__ = ["GuestOutcome", "run_in_guest"]

# The guest's interface (guest/runner.wit): what the input and output strings hold.
INPUT_KINDS = ("json", "columns", "bytes", "text")
OUTPUT_KINDS = ("json", "bytes")


@dataclass(frozen=True)
class GuestOutcome:
    """What one successful call returned: the result text and what the function printed."""

    value: str  # canonical JSON, or bytes as latin-1 text
    stdout: bytes
    stderr: bytes
    logs_truncated: bool
    fuel_used: int
    wall_ms: float


# component -> {export name: ExportIndex}, looked up once per component rather than per call
_exports: weakref.WeakKeyDictionary[wc.Component, dict[str, wc.ExportIndex]] = (
    weakref.WeakKeyDictionary()
)


def _log(text: str, limit: int) -> tuple[bytes, bool]:
    # The guest keeps limit + 1 characters, so a longer stream shows up as truncated here.
    data = text.encode("utf-8", "replace")
    truncated = len(text) > limit or len(data) > limit
    return data[:limit], truncated


def _export(
    store: wasmtime.Store, instance: wc.Instance, component: wc.Component, name: str
) -> wc.Func:
    indexes = _exports.get(component)
    if indexes is None:
        indexes = _exports.setdefault(component, {})
    # The runner's interface (guest/runner.wit) has every name asked for here: never None.
    index = indexes.get(name)
    if index is None:
        index = indexes.setdefault(name, cast(wc.ExportIndex, component.get_export_index(name)))
    return cast(wc.Func, instance.get_func(store, index))


def _fresh_instance(
    engine: SandboxEngine, component: wc.Component, limits: ResourceLimits
) -> tuple[wasmtime.Store, wc.Instance]:
    store = wasmtime.Store(engine.engine)
    store.set_fuel(limits.max_cpu_cycles)
    store.set_epoch_deadline(engine.deadline_ticks(limits.max_execution_time_ms))
    store.set_limits(memory_size=limits.max_memory_bytes)
    try:
        return store, component_linker(engine).instantiate(store, component)
    except BaseException:
        store.close()
        raise


_codes: OrderedDict[str, str] = OrderedDict()  # program digest -> marshalled code object
_codes_lock = threading.Lock()
_CODES_KEPT = 256


def _code(
    engine: SandboxEngine,
    component: wc.Component,
    limits: ResourceLimits,
    source: str,
    name: str,
) -> str:
    """The guest's compiled form of ``source``: compiling costs about half of a small task, so
    it is done once per process, in an instance of its own where none of the source runs."""
    key = hashlib.sha256(f"{runner_digest()}\0{name}\0{source}".encode()).hexdigest()
    code = _codes.get(key)
    if code is not None:
        return code
    try:
        store, instance = _fresh_instance(engine, component, limits)
        try:
            code = _export(store, instance, component, "compile")(store, source, name)
        finally:
            store.close()
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        raise classify_component_trap(exc, limits) from None
    if not isinstance(code, str):  # result<string, failure>: the failure record
        raise _guest_error(code, limits, name, b"", b"")
    with _codes_lock:
        _codes[key] = code
        while len(_codes) > _CODES_KEPT:
            _codes.popitem(last=False)
    return code


def run_in_guest(
    limits: ResourceLimits,
    *,
    source: str,
    name: str,
    seed: int,
    input_kind: str,
    output_kind: str,
    chunk: str,
    root: Path | str | None = None,
) -> GuestOutcome:
    """Run function ``name`` defined by ``source`` on ``chunk`` in a fresh runner instance.

    Raises UdfError for a Python exception (MemoryLimitExceeded for the interpreter's own
    MemoryError, StackOverflow for its RecursionError), and the typed SandboxError for a trap.
    """
    engine = get_engine(limits.max_stack_bytes)
    component = runner_component(engine, root=root)
    code = _code(engine, component, limits, source, name)
    started = time.perf_counter()
    try:
        store, instance = _fresh_instance(engine, component, limits)
        try:
            outcome = _export(store, instance, component, "run")(
                store,
                source,
                code,
                name,
                seed,
                input_kind,
                output_kind,
                chunk,
                min(limits.max_log_bytes + 1, 0xFFFFFFFF),
            )
            fuel_used = limits.max_cpu_cycles - store.get_fuel()
        finally:
            store.close()
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        raise classify_component_trap(exc, limits) from None
    wall_ms = (time.perf_counter() - started) * 1000.0
    stdout, out_cut = _log(outcome.stdout, limits.max_log_bytes)
    stderr, err_cut = _log(outcome.stderr, limits.max_log_bytes)
    value = outcome.value
    if not isinstance(value, str):  # result<string, failure>: the failure record
        raise _guest_error(value, limits, name, stdout, stderr)
    return GuestOutcome(value, stdout, stderr, out_cut or err_cut, fuel_used, wall_ms)


# --- errors ------------------------------------------------------------------------------------


def _guest_error(
    failure: Any, limits: ResourceLimits, name: str, stdout: bytes, stderr: bytes
) -> SandboxError:
    # The guest names built-in classes (by identity) bare and every other class module-
    # qualified, a class of the function's own as "__main__.<qualname>": only the interpreter's
    # own MemoryError / RecursionError arrive as "MemoryError" / "RecursionError".
    exc_type = getattr(failure, "exc-type")
    message = failure.message
    lines = tuple(failure.traceback)
    shown = "\n".join(lines) if lines else f"{exc_type}: {message}"
    error: SandboxError
    if exc_type == "MemoryError":
        error = memory_limit_error(
            limits,
            f"{name} raised MemoryError inside the sandbox (an allocation was refused)",
        )
    elif exc_type == "RecursionError":
        error = StackOverflow(
            f"{name} recursed too deeply inside the sandbox: RecursionError: {message} "
            "(Python's limit of 1000 nested calls); recurse less deeply, or loop instead\n"
            + "\n".join(lines[-6:])
        )
    else:
        error = UdfError(
            f"{name} raised {exc_type}: {message}\n--- traceback inside the sandbox ---\n{shown}",
            exc_type=exc_type,
            exc_message=message,
            traceback=lines,
        )
    # Kept for notebooks and .run(): what the function printed before it failed.
    error.stdout = stdout  # type: ignore[union-attr]
    error.stderr = stderr  # type: ignore[union-attr]
    return error
