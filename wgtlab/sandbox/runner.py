"""Sandbox.run: one task of ABI v1 in a fresh wasmtime Store, under all four resource limits.

Input goes in and output comes out through the memory's base pointer (one memcpy each way); every
failure leaves as exactly one typed SandboxError, and the host is unchanged afterwards.
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import wasmtime

from wgtlab import defaults
from wgtlab.errors import AbiError, MemoryLimitExceeded, SandboxError, WasmTrap
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.traps import classify_trap, memory_limit_error, trap_message
from wgtlab.sandbox.wasi import TaskLogs, begin_task, wasi_config

__all__ = ["Sandbox", "TaskResult"]

_PAGE = 1 << 16
_U32 = 0xFFFFFFFF
# Traps that code hits after memory.grow answered -1: abort() / an allocation-failure handler,
# or an access through the -1 (as a page number: address 0xFFFF0000) it got back.
_AFTER_REFUSED_GROWTH = (wasmtime.TrapCode.UNREACHABLE, wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS)


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


if sys.platform == "linux":
    _libc = ctypes.CDLL(None, use_errno=True)
    _madvise = _libc.madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _madvise.restype = ctypes.c_int
    _MADV_HUGEPAGE = 14
    _HUGE = 2 << 20

    def _advise_huge_pages(base: int, size: int) -> None:
        # A fresh linear memory is faulted in 4 KiB at a time: for inputs of megabytes that is
        # most of the task's cost. Huge pages cut the faults 512-fold. Advisory only.
        start = base & ~(_HUGE - 1)
        _madvise(start, (base + size - start + _HUGE - 1) & ~(_HUGE - 1), _MADV_HUGEPAGE)
else:  # pragma: no cover

    def _advise_huge_pages(base: int, size: int) -> None:
        pass


def _address(memory: wasmtime.Memory, store: wasmtime.Store) -> int:
    return ctypes.addressof(memory.data_ptr(store).contents)


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
        limits = self.limits
        if isinstance(data, bytes):
            size = len(data)
        else:
            try:
                data = memoryview(data).cast("B")
            except TypeError:
                raise TypeError(_input_type_error(data)) from None
            size = data.nbytes
        if module.initial_memory_bytes > limits.max_memory_bytes:
            raise memory_limit_error(
                limits,
                f"{module.name} declares an initial memory of {module.initial_memory_bytes:,} "
                "bytes",
                "declare a smaller initial memory",
            )
        if size + module.initial_memory_bytes > limits.max_memory_bytes or size > _U32:
            raise memory_limit_error(limits, f"the input alone is {size:,} bytes")
        prepared = module.prepared(self._engine)
        engine = self._engine

        started = time.perf_counter()
        store = wasmtime.Store(engine.engine)
        logs = None
        memory = None
        baseline = 0  # memory size when the call now running began
        try:
            # The lease keeps the engine's epoch ticker running until the task is over.
            with engine.lease(limits.max_execution_time_ms) as deadline_ticks:
                store.set_fuel(limits.max_cpu_cycles)
                store.set_epoch_deadline(deadline_ticks)
                store.set_limits(
                    memory_size=limits.max_memory_bytes,
                    table_elements=defaults.MAX_TABLE_ELEMENTS,
                    memories=1,
                )
                if prepared.uses_wasi:
                    logs = TaskLogs(limits.max_log_bytes)
                    store.set_wasi(wasi_config(logs))
                    begin_task()
                try:
                    exports = prepared.pre.instantiate(store).exports(store)
                    memory = exports["memory"]
                    baseline = memory.data_len(store)
                    if size >= defaults.HUGEPAGE_INPUT_BYTES:
                        _advise_huge_pages(_address(memory, store), size + 2 * _PAGE)
                    in_ptr = exports["wgt_alloc"](store, size) & _U32
                    mem_size = memory.data_len(store)
                    if in_ptr + size > mem_size:
                        if mem_size + size > limits.max_memory_bytes:
                            raise memory_limit_error(
                                limits, f"wgt_alloc could not make room for {size:,} input bytes"
                            )
                        raise AbiError(
                            f"{module.name}: wgt_alloc({size}) returned {in_ptr:#x}, but the "
                            f"input would end past its memory ({mem_size:,} bytes); wgt_alloc "
                            "must return room for the whole input"
                        )
                    if size:
                        _copy_in(_address(memory, store) + in_ptr, data, size)
                    baseline = mem_size
                    packed = exports["wgt_run"](store, in_ptr, size)
                    out_ptr, out_len = (packed >> 32) & _U32, packed & _U32
                    mem_size = memory.data_len(store)
                    if out_len > limits.max_output_bytes:
                        raise AbiError(
                            f"{module.name} returned {out_len:,} output bytes, over "
                            f"max_output_bytes={limits.max_output_bytes:,}; raise "
                            "max_output_bytes or return less"
                        )
                    if out_ptr + out_len > mem_size:
                        raise AbiError(
                            f"{module.name} returned output at {out_ptr:#x}+{out_len:,}, past the "
                            f"end of its memory ({mem_size:,} bytes); wgt_run must return "
                            "(out_ptr << 32) | out_len of bytes inside memory"
                        )
                    output = ctypes.string_at(_address(memory, store) + out_ptr, out_len)
                except (wasmtime.Trap, wasmtime.WasmtimeError, AbiError) as exc:
                    raise self._failure(exc, store, memory, baseline) from None
            fuel_used = limits.max_cpu_cycles - store.get_fuel()
            memory_bytes = memory.data_len(store)
        finally:
            # Free the linear memory now, not when the last traceback referencing it goes.
            store.close()
        wall_ms = (time.perf_counter() - started) * 1000.0
        return TaskResult(
            output=output,
            output_sha256=hashlib.sha256(output).hexdigest(),
            fuel_used=fuel_used,
            wall_ms=wall_ms,
            memory_bytes=memory_bytes,
            module_digest=module.digest,
            stdout=logs.stdout.getvalue() if logs else b"",
            stderr=logs.stderr.getvalue() if logs else b"",
            logs_truncated=bool(logs and (logs.stdout.truncated or logs.stderr.truncated)),
        )

    def _failure(
        self,
        exc: BaseException,
        store: wasmtime.Store,
        memory: wasmtime.Memory | None,
        baseline: int,
    ) -> SandboxError:
        """The typed error for ``exc``, raised while the call that began at ``baseline`` bytes of
        memory ran.

        ``memory.grow`` past the store limit only returns -1 to the guest, and wasmtime-py tells
        the host nothing about it (``Store.set_limits`` has no callback, and the guest's code
        cannot be instrumented without rewriting it). So a refused growth is inferred from what
        the host can see when the guest then fails:

        1. its memory is within one page of the limit: any growth would have been refused;
        2. or it trapped the way code does when ``memory.grow`` answers -1 (``unreachable``, as
           C's ``abort()`` and Rust's allocation-failure handler compile to, or an out-of-bounds
           access through the -1 it got back), after growing by ``grown`` bytes during this
           call, and one more step of that size would pass the limit. A guest that grew in
           steps of at most ``grown`` bytes (any fixed or geometric step) is caught wherever its
           last step stopped; one that failed after its very first growth request is caught
           only by rule 1.

        Neither applies if the module declares a maximum no larger than the limit: then the
        module's own maximum, not ``max_memory_bytes``, refused the growth. Any other trap
        (divide by zero, fuel, deadline, stack) keeps its own type.
        """
        error = classify_trap(exc, self.limits)
        if isinstance(error, MemoryLimitExceeded) or memory is None:
            return error
        limit = self.limits.max_memory_bytes
        memory_type = memory.type(store)
        page = 1 << memory_type.page_size_log2
        declared = memory_type.limits.max
        if declared is not None and declared * page <= limit:
            return error
        used = memory.data_len(store)
        if used + page > limit:
            return memory_limit_error(
                self.limits,
                f"its memory reached {used:,} bytes, memory.grow was refused and it then failed "
                f"({error})",
            )
        grown = used - baseline
        if (
            isinstance(error, WasmTrap)
            and getattr(exc, "trap_code", None) in _AFTER_REFUSED_GROWTH
            and grown > 0
            and used + grown > limit
        ):
            return memory_limit_error(
                self.limits,
                f"its memory grew by {grown:,} bytes to {used:,} bytes during the call, then it "
                f"trapped ({trap_message(exc)}) as code does when memory.grow is refused, and a "
                "further growth of that size would pass the limit",
            )
        return error


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


def _copy_in(address: int, data: Any, size: int) -> None:
    if isinstance(data, bytes):
        ctypes.memmove(address, data, size)
    else:
        memoryview((ctypes.c_char * size).from_address(address)).cast("B")[:] = data
