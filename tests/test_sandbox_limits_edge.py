"""Limits at their edges: memory bombs growing in big steps, many stack limits, tiny stacks."""

from __future__ import annotations

import time

import pytest
import sandbox_hostile as hostile
import wasmtime
from sandbox_hostile import check_host_still_works

import wgtlab as wgt
from wgtlab.sandbox import engine as engines
from wgtlab.sandbox.limits import MIN_STACK_BYTES
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox

MiB = 1 << 20
PAGE = 1 << 16

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def small() -> Sandbox:
    return Sandbox(
        wgt.ResourceLimits(
            max_memory_bytes=16 * MiB,  # 256 pages
            max_cpu_cycles=50_000_000,
            max_execution_time_ms=10_000,
        )
    )


# --- 1. memory bombs that grow many pages at a time ---------------------------------------------

# Grows by `step` pages until memory.grow answers -1, then fails the way real code does.
ON_REFUSAL = {
    # C's abort() and Rust's allocation-failure handler compile to `unreachable`
    "unreachable": "(unreachable)",
    # uses the -1 as a page number: writes at 0xFFFF0000, far outside its memory
    "out of bounds": (
        "(i32.store (i32.shl (memory.grow (i32.const {step})) (i32.const 16)) (i32.const 1))"
        " (i64.const 0)"
    ),
}
TRAP_TEXT = {
    "unreachable": "wasm `unreachable` instruction executed",
    "out of bounds": "out of bounds memory access",
}
UNREACHABLE_TRAP = r"^the module trapped: wasm `unreachable` instruction executed$"


def step_bomb(step: int, on_refusal: str, memory: str = "1") -> WasmModule:
    body = f"""
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const {step})) (i32.const -1))))
    {ON_REFUSAL[on_refusal].format(step=step)}
    """
    return WasmModule.from_wat(hostile.abi_module(body, memory=memory))


@pytest.mark.parametrize("on_refusal", sorted(ON_REFUSAL))
@pytest.mark.parametrize("step", [100, 37, 5])
def test_memory_bomb_growing_in_steps_exceeds_the_memory_limit(small, echo, step, on_refusal):
    # 1 page to start with (the empty input fits in it); the step that would pass 256 pages is
    # refused, so the memory ends where the last whole step left it, up to a step short of 16 MiB
    final_pages = 1 + step * ((256 - 1) // step)
    grown = (final_pages - 1) * PAGE
    with pytest.raises(wgt.MemoryLimitExceeded) as caught:
        small.run(step_bomb(step, on_refusal), b"")
    message = str(caught.value)
    assert "max_memory_bytes=16,777,216 (16 MiB)" in message
    assert "raise max_memory_bytes or give it smaller chunks" in message
    if final_pages + 1 > 256:  # within a page of the limit: the long-standing rule
        assert f"its memory reached {final_pages * PAGE:,} bytes, memory.grow was refused" in (
            message
        )
    else:
        assert (
            f"its memory grew by {grown:,} bytes to {final_pages * PAGE:,} bytes during the call"
            in message
        )
        assert f"then it trapped ({TRAP_TEXT[on_refusal]}) as code does when memory.grow" in (
            message
        )
    check_host_still_works(small, echo)


def test_the_100_page_bomb_stops_well_short_of_the_limit(small):
    # the case the one-page rule missed: 201 pages (12.6 MiB) used when 301 was refused
    with pytest.raises(
        wgt.MemoryLimitExceeded, match=r"grew by 13,107,200 bytes to 13,172,736 bytes during"
    ):
        small.run(step_bomb(100, "unreachable"), b"")


def test_plain_unreachable_with_small_memory_is_still_a_trap(small, echo):
    with pytest.raises(wgt.WasmTrap, match=UNREACHABLE_TRAP):
        small.run(WasmModule.from_wat(hostile.UNREACHABLE), b"abc")
    check_host_still_works(small, echo)


def test_trap_after_modest_growth_is_still_a_trap(small, echo):
    # grew 10 pages (nothing refused: another 10 would fit many times over), then a plain bug
    module = WasmModule.from_wat(
        hostile.abi_module("(drop (memory.grow (i32.const 10))) (unreachable)")
    )
    with pytest.raises(wgt.WasmTrap, match=UNREACHABLE_TRAP):
        small.run(module, b"")
    check_host_still_works(small, echo)


def test_other_traps_after_big_growth_keep_their_type(small, echo):
    # 200 pages grown, so another step that size would not fit; but dividing by zero is not what
    # a refused memory.grow leads to
    module = WasmModule.from_wat(
        hostile.abi_module(
            "(drop (memory.grow (i32.const 100))) (drop (memory.grow (i32.const 100)))"
            " (i64.extend_i32_u (i32.div_u (local.get $n) (i32.const 0)))"
        )
    )
    with pytest.raises(wgt.WasmTrap, match=r"^the module trapped: integer divide by zero$"):
        small.run(module, b"")
    check_host_still_works(small, echo)


def test_refusal_by_the_modules_own_maximum_is_not_the_sandbox_limit(small, echo):
    # (memory 1 250): 1 -> 101 -> 201 pages, then its own maximum refuses 301, under 256 allowed
    with pytest.raises(wgt.WasmTrap, match=UNREACHABLE_TRAP):
        small.run(step_bomb(100, "unreachable", memory="1 250"), b"")
    check_host_still_works(small, echo)


def test_growth_for_the_input_does_not_count_against_the_call(echo):
    # wgt_alloc grows 160 pages for a 10 MiB input, then wgt_run hits a bug at once: a trap,
    # not a memory error, though 161 + 160 pages would be past the limit
    sandbox = Sandbox(wgt.ResourceLimits(max_memory_bytes=16 * MiB))
    module = WasmModule.from_wat(hostile.abi_module("(unreachable)"))
    with pytest.raises(wgt.WasmTrap, match=UNREACHABLE_TRAP):
        sandbox.run(module, bytes(10 * MiB))
    check_host_still_works(sandbox, echo)


# --- 2. many stack limits: a bounded number of engines keep ticker threads ----------------------


def ticker_count() -> int:
    return len(engines.live_ticker_threads())


def wait_until(condition, timeout: float = 5.0) -> bool:
    # a retired engine's ticker ends itself within a tick or two of going idle
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def wait_for_tickers_at_most(bound: int) -> int:
    wait_until(lambda: ticker_count() <= bound)
    return ticker_count()


STACK_SIZES = [MIN_STACK_BYTES + i * (24 << 10) for i in range(20)]  # 64 KiB .. 520 KiB


def test_twenty_stack_limits_keep_ticker_threads_bounded(echo):
    bound = engines.MAX_LIVE_ENGINES
    sandboxes = [Sandbox(wgt.ResourceLimits(max_stack_bytes=size)) for size in STACK_SIZES]
    assert len({id(sandbox._engine) for sandbox in sandboxes}) == 20  # one engine per limit
    for round_ in range(2):  # the second round reuses engines retired during the first
        for i, sandbox in enumerate(sandboxes):
            data = f"round {round_} stack {STACK_SIZES[i]}".encode()
            assert sandbox.run(echo, data).output == data
            assert wait_for_tickers_at_most(bound) <= bound
    assert wait_for_tickers_at_most(bound) <= bound
    retired = [s._engine for s in sandboxes if s._engine.retired]
    assert len(retired) == 20 - (bound - 1)  # the default engine holds one live place
    assert wait_until(lambda: not any(engine.ticker_running for engine in retired))
    # asking for a retired engine's limit again revives that same engine: never a twin
    first = sandboxes[0]._engine
    assert first.retired
    assert engines.get_engine(STACK_SIZES[0]) is first
    assert not first.retired
    assert wait_for_tickers_at_most(bound) <= bound


def test_retired_engines_still_enforce_every_limit(echo):
    for size in STACK_SIZES:
        engines.get_engine(size)
    tiny = Sandbox(wgt.ResourceLimits(max_stack_bytes=STACK_SIZES[1]))  # revives it...
    for size in STACK_SIZES[-engines.MAX_LIVE_ENGINES :]:
        engines.get_engine(size)  # ...and retires it again
    assert tiny._engine.retired and not tiny._engine.ticker_running
    with pytest.raises(wgt.StackOverflow, match=r"max_stack_bytes=90,112 \(0\.0859375 MiB\)"):
        tiny.run(WasmModule.from_wat(hostile.RECURSION), b"")
    # the wall clock needs the ticker: it runs again for the task, then stops
    slow = Sandbox(
        wgt.ResourceLimits(
            max_stack_bytes=STACK_SIZES[1], max_cpu_cycles=1 << 60, max_execution_time_ms=200
        )
    )
    assert slow._engine.retired is False  # Sandbox() asked for it: live again
    for size in STACK_SIZES[-engines.MAX_LIVE_ENGINES :]:
        engines.get_engine(size)
    assert slow._engine.retired
    started = time.perf_counter()
    with pytest.raises(wgt.TimeLimitExceeded, match=r"max_execution_time_ms=200;"):
        slow.run(WasmModule.from_wat(hostile.INFINITE_LOOP), b"")
    assert time.perf_counter() - started < 5
    assert wait_for_tickers_at_most(engines.MAX_LIVE_ENGINES) <= engines.MAX_LIVE_ENGINES
    assert wait_until(lambda: not slow._engine.ticker_running)
    assert tiny.run(echo, b"ok").output == b"ok"


def test_unleased_deadline_on_a_retired_engine_keeps_ticking_past_it():
    engine = engines.get_engine(STACK_SIZES[2])
    for size in STACK_SIZES[-engines.MAX_LIVE_ENGINES :]:
        engines.get_engine(size)
    assert engine.retired
    module = wasmtime.Module(engine.engine, '(module (func (export "spin") (loop $l (br $l))))')
    store = wasmtime.Store(engine.engine)
    store.set_fuel(1 << 60)
    store.set_epoch_deadline(engine.deadline_ticks(100))  # as the Python runner does
    spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
    with pytest.raises(wasmtime.Trap) as caught:
        spin(store)
    assert caught.value.trap_code == wasmtime.TrapCode.INTERRUPT
    store.close()
    assert wait_for_tickers_at_most(engines.MAX_LIVE_ENGINES) <= engines.MAX_LIVE_ENGINES
    assert wait_until(lambda: not engine.ticker_running)


def test_default_engine_is_never_retired():
    default = engines.get_engine()
    for size in STACK_SIZES:
        engines.get_engine(size)
    assert not default.retired
    assert engines.get_engine() is default


# --- 3. the stack limit has a floor -------------------------------------------------------------


@pytest.mark.parametrize("value", [10, 4096, MIN_STACK_BYTES - 1])
def test_stack_limit_below_64_kib_is_refused(value):
    expected = (
        f"ResourceLimits.max_stack_bytes must be at least 65,536 (64 KiB), got {value:,}; "
        "a smaller stack overflows in the first calls of real code"
    )
    with pytest.raises(ValueError) as caught:
        wgt.ResourceLimits(max_stack_bytes=value)
    assert str(caught.value) == expected
    with pytest.raises(ValueError) as caught:
        wgt.ResourceLimits().replace(max_stack_bytes=value)
    assert str(caught.value) == expected


def test_stack_limit_of_exactly_64_kib_is_accepted_and_enforced(echo):
    limits = wgt.ResourceLimits(max_stack_bytes=MIN_STACK_BYTES)
    assert limits.max_stack_bytes == 65536
    sandbox = Sandbox(limits)
    assert sandbox.run(echo, b"sixty-four").output == b"sixty-four"
    upper = WasmModule.from_wat(hostile.UPPER)
    assert sandbox.run(upper, b"Tiny stack").output == b"TINY STACK"
    with pytest.raises(wgt.StackOverflow, match=r"max_stack_bytes=65,536 \(0\.0625 MiB\)"):
        sandbox.run(WasmModule.from_wat(hostile.RECURSION), b"")
    check_host_still_works(sandbox, echo)
