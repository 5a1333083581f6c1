"""Sandbox.run: one task of ABI v1 in a fresh wasmtime Store, under all four resource limits.

Every failure leaves as exactly one typed SandboxError, and the host is unchanged afterwards. The
call itself (exports, pointers, bounds) is abi.py's; the WASI a kernel may import is wasi.py's.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import wasmtime

from wgtlab import defaults
from wgtlab.sandbox import abi
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.traps import memory_limit_error
from wgtlab.sandbox.wasi import set_task_wasi

__all__ = ["Sandbox", "TaskResult"]

_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class TaskResult:
    """What one task produced, and what it used."""

    output: bytes
    output_sha256: str  # hex
    fuel_used: int
    wall_ms: float
    memory_bytes: int  # linear memory size when the task ended
    module_digest: str
    stdout: bytes = b""
    stderr: bytes = b""
    logs_truncated: bool = False  # stdout or stderr went past max_log_bytes

    def __repr__(self) -> str:
        return (
            f"TaskResult({len(self.output):,} bytes, sha256={self.output_sha256[:16]}..., "
            f"fuel_used={self.fuel_used:,}, wall_ms={self.wall_ms:.3f}, "
            f"memory_bytes={self.memory_bytes:,})"
        )

    def _repr_html_(self) -> str:
        from wgtlab.views import task_result_html

        return task_result_html(self)


class Sandbox:
    """Runs ABI v1 modules under ``limits``; one Sandbox may be shared by any number of threads.

    Each ``run`` gets a fresh Store: fuel (``max_cpu_cycles``), an epoch deadline
    (``max_execution_time_ms``), store limits (``max_memory_bytes``) on the engine of its stack
    limit (``max_stack_bytes``), and, only if the module imports it, a WASI with nothing in it.
    """

    def __init__(self, limits: ResourceLimits | None = None) -> None:
        if limits is None:
            limits = ResourceLimits()
        elif not isinstance(limits, ResourceLimits):
            raise TypeError(f"Sandbox needs a ResourceLimits, got {type(limits).__name__}")
        self.limits = limits
        self._engine = get_engine(limits.max_stack_bytes)

    def __repr__(self) -> str:
        return f"Sandbox({self.limits!r})"

    def run(self, module: WasmModule, data: Any = b"") -> TaskResult:
        """Run ``module`` over ``data`` (bytes or any contiguous buffer) and return its output.

        Raises one SandboxError subclass for anything the module does wrong (see wgtlab.errors).
        """
        if not isinstance(module, WasmModule):
            raise TypeError(f"Sandbox.run needs a WasmModule, got {type(module).__name__}")
        data = self._task_input(module, data)
        prepared = module.prepared(self._engine)
        limits, engine = self.limits, self._engine

        started = time.perf_counter()
        store = wasmtime.Store(engine.engine)
        logs = None
        try:
            # The lease keeps the engine's epoch ticker running until the task is over.
            with engine.lease(limits.max_execution_time_ms) as deadline_ticks:
                _limit_store(store, limits, deadline_ticks)
                if prepared.uses_wasi:
                    logs = set_task_wasi(store, limits.max_log_bytes)
                result = abi.call_v1(
                    prepared.pre, store, data, limits=limits, module_name=module.name
                )
            fuel_used = limits.max_cpu_cycles - store.get_fuel()
        finally:
            # Free the linear memory now, not when the last traceback referencing it goes.
            store.close()
        wall_ms = (time.perf_counter() - started) * 1000.0
        return TaskResult(
            output=result.output,
            output_sha256=hashlib.sha256(result.output).hexdigest(),
            fuel_used=fuel_used,
            wall_ms=wall_ms,
            memory_bytes=result.memory_bytes,
            module_digest=module.digest,
            stdout=logs.stdout.getvalue() if logs else b"",
            stderr=logs.stderr.getvalue() if logs else b"",
            logs_truncated=bool(logs and (logs.stdout.truncated or logs.stderr.truncated)),
        )

    def _task_input(self, module: WasmModule, data: Any) -> bytes | memoryview:
        """``data`` as bytes or a byte-format memoryview, once it fits under the memory limit."""
        limits = self.limits
        if not isinstance(data, bytes):
            try:
                data = memoryview(data).cast("B")
            except TypeError:
                raise TypeError(_input_type_error(data)) from None
        size = len(data)
        if module.initial_memory_bytes > limits.max_memory_bytes:
            raise memory_limit_error(
                limits,
                f"{module.name} declares an initial memory of {module.initial_memory_bytes:,} "
                "bytes",
                "declare a smaller initial memory",
            )
        if size + module.initial_memory_bytes > limits.max_memory_bytes or size > _U32:
            raise memory_limit_error(limits, f"the input alone is {size:,} bytes")
        return data


def _limit_store(store: wasmtime.Store, limits: ResourceLimits, deadline_ticks: int) -> None:
    """Put one task's fuel, wall-clock deadline and memory limits on its fresh ``store``."""
    store.set_fuel(limits.max_cpu_cycles)
    store.set_epoch_deadline(deadline_ticks)
    store.set_limits(
        memory_size=limits.max_memory_bytes,
        table_elements=defaults.MAX_TABLE_ELEMENTS,
        memories=1,
    )


def _input_type_error(data: Any) -> str:
    """Why ``data`` cannot be a task's input, and what to pass instead."""
    kind = type(data).__name__
    if isinstance(data, str):
        return (
            "Sandbox.run input must be bytes or a contiguous buffer, got str; encode text "
            "first, e.g. data.encode('utf-8')"
        )
    try:
        memoryview(data)
    except TypeError:
        return (
            f"Sandbox.run input must be bytes or a contiguous buffer (bytearray, memoryview, "
            f"numpy array), got {kind}"
        )
    return (
        f"Sandbox.run input must be a contiguous buffer, but this {kind} is not C-contiguous "
        "(a slice with a step, or a transposed array); copy it into one first, e.g. "
        "numpy.ascontiguousarray(x) or bytes(x)"
    )
