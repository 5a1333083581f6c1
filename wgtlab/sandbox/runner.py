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
from wgtlab.errors import SandboxError
from wgtlab.sandbox import abi
from wgtlab.sandbox.binary import TableShape
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.traps import memory_limit_error, out_of_fuel, process_exit, time_limit_exceeded
from wgtlab.sandbox.wasi import set_task_wasi, task_stop

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
    (``max_execution_time_ms``), store limits (``max_memory_bytes``, shared by linear memory and
    tables) on the engine of its stack limit (``max_stack_bytes``), and, only if the module
    imports it, a WASI with nothing in it whose every call pays fuel and checks the deadline.
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
        budget = MemoryBudget.of(module.tables, self.limits)
        data = self._task_input(module, data, budget)
        prepared = module.prepared(self._engine)
        limits, engine = self.limits, self._engine

        started = time.perf_counter()
        store = wasmtime.Store(engine.engine)
        logs = None
        try:
            # The lease keeps the engine's epoch ticker running until the task is over.
            with engine.lease(limits.max_execution_time_ms) as deadline_ticks:
                _limit_store(store, limits, deadline_ticks, budget, len(module.tables))
                if prepared.uses_wasi:
                    deadline = time.monotonic() + limits.max_execution_time_ms / 1000
                    logs = set_task_wasi(limits.max_log_bytes, deadline)
                try:
                    result = abi.call_v1(
                        prepared.pre,
                        store,
                        data,
                        limits=limits,
                        module_name=module.name,
                        memory_limit=budget.memory_bytes,
                    )
                except SandboxError as exc:
                    # A WASI call that stopped the task (fuel, deadline, proc_exit) left it to
                    # trap at its next fuel check, or to fail some other way: the stop decides.
                    stopped = _stopped_by_wasi(limits) if prepared.uses_wasi else None
                    raise (stopped or exc) from None
                stopped = _stopped_by_wasi(limits) if prepared.uses_wasi else None
                if stopped is not None:  # ... or even to return
                    raise stopped
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

    def _task_input(
        self, module: WasmModule, data: Any, budget: MemoryBudget
    ) -> bytes | memoryview:
        """``data`` as bytes or a byte-format memoryview, once it fits under the memory limit."""
        limits = self.limits
        if not isinstance(data, bytes):
            try:
                data = memoryview(data).cast("B")
            except TypeError:
                raise TypeError(_input_type_error(data)) from None
        size = len(data)
        tables = budget.note()
        if module.initial_memory_bytes > budget.memory_bytes:
            raise memory_limit_error(
                limits,
                f"{module.name} declares an initial memory of {module.initial_memory_bytes:,} "
                f"bytes{tables}",
                "declare a smaller initial memory",
            )
        if size + module.initial_memory_bytes > budget.memory_bytes or size > _U32:
            raise memory_limit_error(limits, f"the input alone is {size:,} bytes{tables}")
        return data


@dataclass(frozen=True)
class MemoryBudget:
    """How one task's ``max_memory_bytes`` is shared between its linear memory and its tables.

    A table element is host memory too (8 bytes), and wasmtime limits tables one at a time, so
    100 tables of 1M elements once grew a task 256 MiB-limited by 800 MiB. Each table may hold
    ``table_elements`` (together at most ``TABLE_MEMORY_SHARE`` of the limit); what the
    module's tables could reach (a table's declared maximum, else that) is taken off what the
    linear memory may grow to, so the two together stay under ``max_memory_bytes``.
    """

    memory_bytes: int
    table_elements: int
    table_bytes: int

    @classmethod
    def of(cls, tables: tuple[TableShape, ...], limits: ResourceLimits) -> MemoryBudget:
        if not tables:
            return cls(limits.max_memory_bytes, 0, 0)
        element = defaults.TABLE_ELEMENT_BYTES
        share = int(limits.max_memory_bytes * defaults.TABLE_MEMORY_SHARE)
        per_table = min(defaults.MAX_TABLE_ELEMENTS, share // (element * len(tables)))
        reachable = sum(
            per_table if t.maximum is None else min(t.maximum, per_table) for t in tables
        )
        return cls(limits.max_memory_bytes - reachable * element, per_table, reachable * element)

    def note(self) -> str:
        """What the tables take, for memory errors ("" without tables)."""
        if not self.table_bytes:
            return ""
        return (
            f" (its tables may take {self.table_bytes:,} bytes of the limit, leaving "
            f"{self.memory_bytes:,} for linear memory)"
        )


def _limit_store(
    store: wasmtime.Store,
    limits: ResourceLimits,
    deadline_ticks: int,
    budget: MemoryBudget,
    tables: int,
) -> None:
    """Put one task's fuel, wall-clock deadline and memory limits on its fresh ``store``."""
    store.set_fuel(limits.max_cpu_cycles)
    store.set_epoch_deadline(deadline_ticks)
    store.set_limits(
        memory_size=budget.memory_bytes,
        table_elements=budget.table_elements,
        tables=tables,
        memories=1,
    )


def _stopped_by_wasi(limits: ResourceLimits) -> SandboxError | None:
    """The typed error for the limit a WASI call of this task stopped it at, if one did."""
    stop = task_stop()
    if stop is None:
        return None
    if stop.reason == "time":
        return time_limit_exceeded(limits)
    if stop.reason == "exit":
        return process_exit(stop.code)
    return out_of_fuel(limits)


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
