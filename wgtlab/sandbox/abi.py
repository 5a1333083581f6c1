"""The WASM ABI, version 1: what a kernel module exports, and the one call the host makes into it.

A kernel exports ``memory``, ``wgt_alloc(size: i32) -> i32`` (room for the input) and
``wgt_run(ptr: i32, len: i32) -> i64`` (returns ``(out_ptr << 32) | out_len``). The host writes
the input where ``wgt_alloc`` says and reads the output only once it lies inside memory and under
the output cap; anything else is an AbiError. Input and output move through the memory's base
pointer (one memcpy each way).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import wasmtime

from wgtlab import defaults
from wgtlab.errors import AbiError, InvalidModule
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.traps import classify_module_trap, memory_limit_error

__all__ = ["ABI_EXPORTS", "ABI_TEXT", "AbiOutput", "call_v1", "check_exports"]

# export name -> (kind, signature as printed by module.ExportSpec)
ABI_EXPORTS = {
    "memory": ("memory", "memory32"),
    "wgt_alloc": ("func", "(i32) -> (i32)"),
    "wgt_run": ("func", "(i32, i32) -> (i64)"),
}
ABI_TEXT = "ABI v1 needs: memory, wgt_alloc(i32) -> i32, wgt_run(i32, i32) -> i64"

_PAGE = 1 << 16
_U32 = 0xFFFFFFFF


def check_exports(module_name: str, exports: Mapping[str, tuple[str, str]]) -> None:
    """Raise InvalidModule unless ``exports`` (name -> (kind, signature)) has what ABI v1 needs."""
    missing = [name for name in ABI_EXPORTS if name not in exports]
    if missing:
        raise InvalidModule(f"{module_name} does not export {', '.join(missing)}; {ABI_TEXT}")
    for name, (kind, signature) in ABI_EXPORTS.items():
        found_kind, found_signature = exports[name]
        if (found_kind, found_signature) != (kind, signature):
            raise InvalidModule(
                f"{module_name} exports {name} as {found_kind} {found_signature}, expected "
                f"{kind} {signature}; {ABI_TEXT}"
            )


@dataclass(frozen=True)
class AbiOutput:
    """What one ABI v1 call returned: the output bytes, and the memory size at the end."""

    output: bytes
    memory_bytes: int


def call_v1(
    pre: wasmtime.InstancePre,
    store: wasmtime.Store,
    data: bytes | memoryview,
    *,
    limits: ResourceLimits,
    module_name: str,
    memory_limit: int | None = None,
) -> AbiOutput:
    """Instantiate ``pre`` in ``store`` and run it over ``data`` (bytes, or a byte-format
    memoryview), by ABI v1: ``wgt_alloc``, copy the input in, ``wgt_run``, check and copy the
    output out.

    ``store`` already carries the task's limits; ``memory_limit`` is what its linear memory may
    grow to (``max_memory_bytes`` less what tables may take). Raises exactly one SandboxError
    for anything the module does wrong, mapped from wasmtime's errors by
    ``traps.classify_module_trap``.
    """
    if memory_limit is None:
        memory_limit = limits.max_memory_bytes
    size = len(data)
    memory: wasmtime.Memory | None = None
    baseline = 0  # memory size when the call now running began
    try:
        exports = pre.instantiate(store).exports(store)
        memory = cast(wasmtime.Memory, exports["memory"])
        wgt_alloc = cast(wasmtime.Func, exports["wgt_alloc"])
        wgt_run = cast(wasmtime.Func, exports["wgt_run"])
        baseline = memory.data_len(store)
        if size >= defaults.HUGEPAGE_INPUT_BYTES:
            _advise_huge_pages(_address(memory, store), size + 2 * _PAGE)
        in_ptr = wgt_alloc(store, size) & _U32
        mem_size = memory.data_len(store)
        if in_ptr + size > mem_size:
            if mem_size + size > memory_limit:
                raise memory_limit_error(
                    limits, f"wgt_alloc could not make room for {size:,} input bytes"
                )
            raise AbiError(
                f"{module_name}: wgt_alloc({size}) returned {in_ptr:#x}, but the input would "
                f"end past its memory ({mem_size:,} bytes); wgt_alloc must return room for the "
                "whole input"
            )
        if size:
            _copy_in(_address(memory, store) + in_ptr, data, size)
        baseline = mem_size
        packed = wgt_run(store, in_ptr, size)
        out_ptr, out_len = (packed >> 32) & _U32, packed & _U32
        mem_size = memory.data_len(store)
        if out_len > limits.max_output_bytes:
            raise AbiError(
                f"{module_name} returned {out_len:,} output bytes, over "
                f"max_output_bytes={limits.max_output_bytes:,}; raise max_output_bytes or "
                "return less"
            )
        if out_ptr + out_len > mem_size:
            raise AbiError(
                f"{module_name} returned output at {out_ptr:#x}+{out_len:,}, past the end of "
                f"its memory ({mem_size:,} bytes); wgt_run must return "
                "(out_ptr << 32) | out_len of bytes inside memory"
            )
        output = ctypes.string_at(_address(memory, store) + out_ptr, out_len)
    except (wasmtime.Trap, wasmtime.WasmtimeError, AbiError) as exc:
        raise classify_module_trap(exc, limits, store, memory, baseline, memory_limit) from None
    return AbiOutput(output=output, memory_bytes=memory.data_len(store))


# --- moving bytes through the memory's base pointer ----------------------------------------------


def _address(memory: wasmtime.Memory, store: wasmtime.Store) -> int:
    return ctypes.addressof(memory.data_ptr(store).contents)


def _copy_in(address: int, data: bytes | memoryview, size: int) -> None:
    if isinstance(data, bytes):
        ctypes.memmove(address, data, size)
    else:
        memoryview((ctypes.c_char * size).from_address(address)).cast("B")[:] = data


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
