"""Turns whatever wasmtime raised while a task ran into exactly one typed SandboxError.

Core-module traps carry a trap code; component traps arrive as WasmtimeError with text only, so
both are classified, the text by the stable phrases wasmtime prints for each trap. The one place
wasmtime's errors become the project's: ``classify_module_trap`` for kernels (abi.py),
``classify_component_trap`` for the Python runner (python/task.py).
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
    "classify_component_trap",
    "classify_module_trap",
    "classify_trap",
    "memory_limit_error",
    "out_of_fuel",
    "process_exit",
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
# Traps that code hits after memory.grow answered -1: abort() / an allocation-failure handler,
# or an access through the -1 (as a page number: address 0xFFFF0000) it got back.
_AFTER_REFUSED_GROWTH = (wasmtime.TrapCode.UNREACHABLE, wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS)


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


def process_exit(code: int) -> ProcessExit:
    return ProcessExit(
        f"the module called WASI proc_exit({code}) instead of returning a result; "
        "kernels must return from wgt_run",
        code=code,
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
        return process_exit(error.code)
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


def classify_module_trap(
    error: BaseException,
    limits: ResourceLimits,
    store: wasmtime.Store,
    memory: wasmtime.Memory | None,
    baseline: int,
    memory_limit: int | None = None,
) -> SandboxError:
    """The typed error for ``error``, raised while a kernel's call that began at ``baseline``
    bytes of ``memory`` ran (``memory`` is None before the kernel was instantiated), when
    linear memory may grow to ``memory_limit`` (default ``max_memory_bytes``).

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
    module's own maximum, not ``max_memory_bytes``, refused the growth. Only plain traps
    (WasmTrap) are reclassified: fuel, deadline, stack and exit keep their own type.
    """
    classified = classify_trap(error, limits)
    if type(classified) is not WasmTrap or memory is None:
        return classified
    limit = limits.max_memory_bytes if memory_limit is None else memory_limit
    memory_type = memory.type(store)
    page = 1 << memory_type.page_size_log2
    declared = memory_type.limits.max
    if declared is not None and declared * page <= limit:
        return classified
    used = memory.data_len(store)
    if used + page > limit:
        return memory_limit_error(
            limits,
            f"its memory reached {used:,} bytes, memory.grow was refused and it then failed "
            f"({classified})",
        )
    grown = used - baseline
    if (
        getattr(error, "trap_code", None) in _AFTER_REFUSED_GROWTH
        and grown > 0
        and used + grown > limit
    ):
        return memory_limit_error(
            limits,
            f"its memory grew by {grown:,} bytes to {used:,} bytes during the call, then it "
            f"trapped ({trap_message(error)}) as code does when memory.grow is refused, and a "
            "further growth of that size would pass the limit",
        )
    return classified


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


# A Rust panic in componentize-py's runtime prints its message through the stderr stub, which
# traps: the stub's frame is there, but the cause is the panic (and the frames under it).
_RUNTIME_FRAME = re.compile(r"componentize_py_runtime\.wasm!(\S+)")
_PANIC_FRAMES = ("rust_begin_unwind", "std::panicking")


def _runtime_panic(text: str) -> str | None:
    """What a panic of the runner's runtime was doing (its outermost runtime frame), if the trap
    in ``text`` is one."""
    if not any(frame in text for frame in _PANIC_FRAMES):
        return None
    frames = _RUNTIME_FRAME.findall(text)
    return frames[-1] if frames else "componentize-py's runtime"


def classify_component_trap(error: BaseException, limits: ResourceLimits) -> SandboxError:
    """The typed error for ``error``, raised by wasmtime while the Python runner ran under
    ``limits``: a runner too big for the memory limit, a panic of the runner's own runtime, or
    a call into a trapping WASI stub, is told apart from the traps ``classify_trap`` names."""
    classified = classify_trap(error, limits)
    text = str(error)
    if isinstance(classified, MemoryLimitExceeded) and "minimum size" in text:
        return MemoryLimitExceeded(
            f"the Python runner alone needs more memory than max_memory_bytes="
            f"{limits.max_memory_bytes:,} allows ({classified}); give @wgt.udf tasks at least "
            "32 MiB (64 MiB or more for real chunks)"
        )
    if type(classified) is WasmTrap:
        panic = _runtime_panic(text)
        if panic is not None and "pop_string" in panic:
            return WasmTrap(
                "the Python runner could not hand a string back to the host: it was not valid "
                "UTF-8 text (a lone surrogate, e.g. from bytes decoded with "
                "errors='surrogateescape', in the result, the printed output or the error)"
            )
        if panic is not None:
            return WasmTrap(
                f"the Python runner's own runtime failed (a panic in {panic}), not the function "
                "itself; if it happens again with this function, please report it"
            )
        service = _stub_service(text)
        if service is not None:
            return WasmTrap(
                f"the Python function tried to use {service}, which the sandbox does not "
                "provide; compute only from the chunk"
            )
    return classified
