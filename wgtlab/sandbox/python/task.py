"""One task in the Python runner: a fresh Store and instance under all four limits, typed outcome.

A Python exception in the function becomes a UdfError carrying the guest's traceback; a trap
becomes the typed SandboxError for it; nothing from one task survives into the next.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component as wc

from wgtlab.errors import (
    MemoryLimitExceeded,
    SandboxError,
    StackOverflow,
    UdfError,
    WasmTrap,
)
from wgtlab.sandbox.engine import SandboxEngine, get_engine
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.python.component import runner_component, runner_digest
from wgtlab.sandbox.traps import classify_trap, memory_limit_error

__all__ = ["GuestOutcome", "run_in_guest"]

# The guest's interface (guest/runner.wit): what the input and output strings hold.
INPUT_KINDS = ("json", "bytes", "text")
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


_linkers: dict[int, wc.Linker] = {}
_linkers_lock = threading.Lock()
# component -> {export name: ExportIndex}, looked up once per component rather than per call
_exports: weakref.WeakKeyDictionary[wc.Component, dict[str, Any]] = weakref.WeakKeyDictionary()


def _linker(engine: SandboxEngine) -> wc.Linker:
    # The runner imports nothing, so one empty linker per engine serves every task.
    linker = _linkers.get(id(engine))
    if linker is None:
        with _linkers_lock:
            linker = _linkers.setdefault(id(engine), wc.Linker(engine.engine))
    return linker


def _log(text: str, limit: int) -> tuple[bytes, bool]:
    # The guest keeps limit + 1 characters, so a longer stream shows up as truncated here.
    data = text.encode("utf-8", "replace")
    truncated = len(text) > limit or len(data) > limit
    return data[:limit], truncated


def _export(store: wasmtime.Store, instance: wc.Instance, component: wc.Component, name: str):
    indexes = _exports.get(component)
    if indexes is None:
        indexes = _exports.setdefault(component, {})
    index = indexes.get(name)
    if index is None:
        index = indexes.setdefault(name, component.get_export_index(name))
    return instance.get_func(store, index)


def _fresh_instance(
    engine: SandboxEngine, component: wc.Component, limits: ResourceLimits
) -> tuple[wasmtime.Store, wc.Instance]:
    store = wasmtime.Store(engine.engine)
    store.set_fuel(limits.max_cpu_cycles)
    store.set_epoch_deadline(engine.deadline_ticks(limits.max_execution_time_ms))
    store.set_limits(memory_size=limits.max_memory_bytes)
    try:
        return store, _linker(engine).instantiate(store, component)
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
        raise _trap_error(exc, limits) from None
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

    Raises UdfError for a Python exception (MemoryLimitExceeded for a MemoryError,
    StackOverflow for a RecursionError), and the typed SandboxError for a trap.
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
        raise _trap_error(exc, limits) from None
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
    error.stdout = stdout  # type: ignore[attr-defined]
    error.stderr = stderr  # type: ignore[attr-defined]
    return error


# The trapping WASI stubs (componentize-py --stub-wasi) each leave a recognisable libc frame.
_STUB_SERVICES = (
    (
        ("wall_clock", "monotonic_clock", "clock_gettime", "clock_time_get"),
        "the clock "
        "(datetime.now(), date.today() and friends: results must not depend on when they run)",
    ),
    (("filesystem", "preopens"), "the filesystem"),
    (
        ("stdout_get", "stderr_get", "stdin_get", "stdio_get", "terminal_"),
        "the process's "
        "standard streams (os.write and friends; print() and sys.stdout are captured instead)",
    ),
    (("random_get", "insecure_random", "get_random"), "entropy (use random, seeded per task)"),
    (("exit_exit", "proc_exit"), "process exit (os._exit)"),
    (("tcp", "udp", "ip_name_lookup", "network"), "the network"),
    (("environment", "get_arguments"), "the environment"),
    (("poll", "subscribe"), "waiting (time.sleep, select)"),
)
_LIBC_FRAME = re.compile(r"libc\.so!(\w+)")


def _stub_service(text: str) -> str | None:
    if "unreachable" not in text:
        return None
    frames = _LIBC_FRAME.findall(text)
    for frame in frames:
        for needles, service in _STUB_SERVICES:
            if any(needle in frame for needle in needles):
                return service
    return f"an operating-system service (libc {frames[0]})" if frames else None


def _trap_error(exc: BaseException, limits: ResourceLimits) -> SandboxError:
    error = classify_trap(exc, limits)
    text = str(exc)
    if isinstance(error, MemoryLimitExceeded) and "minimum size" in text:
        return MemoryLimitExceeded(
            f"the Python runner alone needs more memory than max_memory_bytes="
            f"{limits.max_memory_bytes:,} allows ({error}); give @wgt.udf tasks at least "
            "32 MiB (64 MiB or more for real chunks)"
        )
    if type(error) is WasmTrap:
        service = _stub_service(text)
        if service is not None:
            return WasmTrap(
                f"the Python function tried to use {service}, which the sandbox does not "
                "provide; compute only from the chunk"
            )
    return error
