"""Turns whatever wasmtime raised while a task ran into exactly one typed SandboxError.

Core-module traps carry a trap code; component traps arrive as WasmtimeError with text only, so
both are classified, the text by the stable phrases wasmtime prints for each trap.
"""

from __future__ import annotations

import re

import wasmtime

from wgtlab.errors import (
    InvalidModule,
    MemoryLimitExceeded,
    OutOfFuel,
    ProcessExit,
    SandboxError,
    StackOverflow,
    TimeLimitExceeded,
    WasmTrap,
)
from wgtlab.sandbox.limits import ResourceLimits

__all__ = [
    "classify_trap",
    "memory_limit_error",
    "out_of_fuel",
    "stack_overflow",
    "time_limit_exceeded",
    "trap_message",
]

# The phrases wasmtime 50 prints after "wasm trap: " (and for store-limit refusals).
_FUEL = "all fuel consumed"
_INTERRUPT = "wasm trap: interrupt"
_STACK = "call stack exhausted"
_MEMORY = (
    "exceeds memory limits",  # "memory minimum size of N pages exceeds memory limits"
    "exceeds table limits",  # a table is host memory too
    "table count too high",
    "instance count too high",
)
_TRAP_LINE = re.compile(r"wasm trap: (.+)")
_MIN_PAGES = re.compile(r"memory minimum size of (\d+) pages")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def out_of_fuel(limits: ResourceLimits) -> OutOfFuel:
    return OutOfFuel(
        f"the task used up its CPU budget: max_cpu_cycles={limits.max_cpu_cycles:,} fuel; "
        "raise max_cpu_cycles or give it smaller chunks"
    )


def time_limit_exceeded(limits: ResourceLimits) -> TimeLimitExceeded:
    return TimeLimitExceeded(
        f"the task ran past its wall-clock limit: max_execution_time_ms="
        f"{limits.max_execution_time_ms:,}; raise max_execution_time_ms or give it smaller chunks"
    )


def stack_overflow(limits: ResourceLimits) -> StackOverflow:
    return StackOverflow(
        f"the task recursed past its stack limit: max_stack_bytes={limits.max_stack_bytes:,} "
        f"({_mib(limits.max_stack_bytes)}); raise max_stack_bytes or recurse less deeply"
    )


def memory_limit_error(
    limits: ResourceLimits, detail: str, remedy: str = "give it smaller chunks"
) -> MemoryLimitExceeded:
    return MemoryLimitExceeded(
        f"the task needs more memory than allowed: {detail}; max_memory_bytes="
        f"{limits.max_memory_bytes:,} ({_mib(limits.max_memory_bytes)}); raise "
        f"max_memory_bytes or {remedy}"
    )


def trap_message(error: BaseException) -> str:
    """The one-line reason inside a wasmtime error (its backtrace dropped)."""
    text = str(error)
    found = _TRAP_LINE.findall(text)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def classify_trap(error: BaseException, limits: ResourceLimits) -> SandboxError:
    """The typed error for ``error``, raised by wasmtime while running under ``limits``.

    Handles ``wasmtime.Trap`` (by trap code), ``wasmtime.ExitTrap`` (WASI ``proc_exit``) and
    ``wasmtime.WasmtimeError`` (components and instantiation, by message). A SandboxError passes
    through unchanged; anything else becomes a WasmTrap carrying its text.
    """
    if isinstance(error, SandboxError):
        return error
    if isinstance(error, wasmtime.ExitTrap):
        return ProcessExit(
            f"the module called WASI proc_exit({error.code}) instead of returning a result; "
            "kernels must return from wgt_run",
            code=error.code,
        )
    code = getattr(error, "trap_code", None) if isinstance(error, wasmtime.Trap) else None
    text = str(error)
    if code == wasmtime.TrapCode.OUT_OF_FUEL or _FUEL in text:
        return out_of_fuel(limits)
    if code == wasmtime.TrapCode.INTERRUPT or _INTERRUPT in text:
        return time_limit_exceeded(limits)
    if code == wasmtime.TrapCode.STACK_OVERFLOW or _STACK in text:
        return stack_overflow(limits)
    if "memory count too high" in text:  # the store allows one linear memory
        return InvalidModule(
            "the module defines more than one linear memory; ABI v1 kernels have exactly one, "
            "exported as `memory`"
        )
    if any(phrase in text for phrase in _MEMORY):
        pages = _MIN_PAGES.search(text)
        if pages:
            detail = f"its initial memory is {_mib(int(pages.group(1)) << 16)}"
            return memory_limit_error(limits, detail, "declare a smaller initial memory")
        return memory_limit_error(limits, trap_message(error))
    return WasmTrap(f"the module trapped: {trap_message(error)}")
