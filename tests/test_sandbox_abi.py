"""ABI v1 at its edges: an output or input that ends exactly at the end of memory, or exactly at
the output cap, is fine; one byte further is an AbiError (or, past the cap, the same)."""

from __future__ import annotations

import pytest

import wgtlab as wgt
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox

PAGE = 1 << 16

pytestmark = pytest.mark.usefixtures("private_cache")


def returns(out_ptr: int, out_len: int, *, alloc: int = 0, fill: bool = True) -> WasmModule:
    """One page of memory (filled with 0x5A by wgt_run, unless not ``fill``); wgt_alloc returns
    ``alloc``, wgt_run ``(out_ptr << 32) | out_len``."""
    packed = (out_ptr << 32) | out_len
    body = f"(memory.fill (i32.const 0) (i32.const 0x5A) (i32.const {PAGE}))" if fill else ""
    return WasmModule.from_wat(
        f"""(module
  (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const {alloc}))
  (func (export "wgt_run") (param i32 i32) (result i64) {body} (i64.const {packed})))"""
    )


@pytest.mark.parametrize(("out_ptr", "out_len"), [(PAGE - 10, 10), (0, PAGE), (PAGE, 0), (123, 0)])
def test_an_output_that_ends_at_the_end_of_memory_is_read(out_ptr: int, out_len: int) -> None:
    result = Sandbox().run(returns(out_ptr, out_len))
    assert result.output == b"\x5a" * out_len
    assert result.memory_bytes == PAGE


@pytest.mark.parametrize(
    ("out_ptr", "out_len"),
    [(PAGE - 10, 11), (0, PAGE + 1), (PAGE, 1), (PAGE + 1, 0), (0xFFFFFFFF, 2)],
)
def test_an_output_one_byte_past_memory_is_an_abi_error(out_ptr: int, out_len: int) -> None:
    with pytest.raises(wgt.AbiError) as caught:
        Sandbox().run(returns(out_ptr, out_len))
    assert str(caught.value) == (
        f"{returns(out_ptr, out_len).name} returned output at {out_ptr:#x}+{out_len:,}, past "
        f"the end of its memory ({PAGE:,} bytes); wgt_run must return "
        "(out_ptr << 32) | out_len of bytes inside memory"
    )


def test_the_output_cap_is_inclusive() -> None:
    limits = wgt.ResourceLimits(max_output_bytes=100)
    assert Sandbox(limits).run(returns(0, 100)).output == b"\x5a" * 100
    with pytest.raises(wgt.AbiError, match=r"returned 101 output bytes, over max_output_bytes=100"):
        Sandbox(limits).run(returns(0, 101))


def test_an_input_that_ends_at_the_end_of_memory_is_written() -> None:
    module = returns(PAGE - 4, 4, alloc=PAGE - 4, fill=False)  # hands the input back
    assert Sandbox().run(module, b"abcd").output == b"abcd"
    with pytest.raises(wgt.AbiError, match=r"wgt_alloc\(5\) returned 0xfffc, but the input"):
        Sandbox().run(module, b"abcde")
