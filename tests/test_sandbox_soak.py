"""Hostile modules run hundreds of times in one process, and one Sandbox shared by many threads:
no thread, file handle or memory may leak, and every result must be exact."""

from __future__ import annotations

import gc
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import sandbox_hostile as hostile

import wgtlab as wgt
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox

MiB = 1 << 20


pytestmark = pytest.mark.usefixtures("private_cache")


def test_hostile_runs_leak_no_threads_handles_or_memory():
    limits = wgt.ResourceLimits(
        max_memory_bytes=8 * MiB,
        max_cpu_cycles=2_000_000,
        max_execution_time_ms=5_000,
        max_stack_bytes=128 << 10,
        max_output_bytes=1 * MiB,
        max_log_bytes=512,
    )
    sandbox = Sandbox(limits)
    timed = Sandbox(limits.replace(max_cpu_cycles=1 << 62, max_execution_time_ms=20))
    # its 1,000 WASI calls pay 1e8 fuel for the host's work
    chatty = Sandbox(limits.replace(max_cpu_cycles=1_000_000_000))
    cases = [
        (sandbox, hostile.INFINITE_LOOP, wgt.OutOfFuel),
        (timed, hostile.INFINITE_LOOP, wgt.TimeLimitExceeded),
        (sandbox, hostile.MEMORY_BOMB, wgt.MemoryLimitExceeded),
        (sandbox, hostile.HUGE_INITIAL_MEMORY, wgt.MemoryLimitExceeded),
        (sandbox, hostile.RECURSION, wgt.StackOverflow),
        (sandbox, hostile.UNREACHABLE, wgt.WasmTrap),
        (sandbox, hostile.DIVIDE_BY_ZERO, wgt.WasmTrap),
        (sandbox, hostile.OUTPUT_OUT_OF_BOUNDS, wgt.AbiError),
        (sandbox, hostile.OUTPUT_TOO_LARGE, wgt.AbiError),
        (sandbox, hostile.PROC_EXIT, wgt.ProcessExit),
        (sandbox, hostile.START_LOOPS, wgt.OutOfFuel),
        (chatty, hostile.CHATTY_STDOUT, None),  # succeeds, output capped
        (sandbox, hostile.WASI_PROBE, None),
    ]
    modules = [(sb, WasmModule.from_wat(wat), expected) for sb, wat, expected in cases]
    refused = [hostile.FORBIDDEN_IMPORTS, hostile.MISSING_EXPORTS, hostile.WRONG_RUN_TYPE]
    echo = WasmModule.from_wat(hostile.ECHO)

    def one_round() -> int:
        runs = 0
        for sb, module, expected in modules:
            if expected is None:
                sb.run(module, b"payload")
            else:
                with pytest.raises(expected):
                    sb.run(module, b"payload")
            runs += 1
        for wat in refused:  # validation failures leave nothing behind either
            with pytest.raises((wgt.ForbiddenImport, wgt.InvalidModule)):
                WasmModule.from_wat(wat)
            runs += 1
        assert sandbox.run(echo, b"alive").output == b"alive"
        return runs

    process = psutil.Process()
    for _ in range(3):  # warm up: engines, ticker threads, caches, allocator pools
        one_round()
    gc.collect()
    threads, fds, rss = threading.active_count(), process.num_fds(), process.memory_info().rss

    total = 0
    while total < 520:
        total += one_round()
    gc.collect()

    assert threading.active_count() == threads
    assert process.num_fds() == fds
    growth = process.memory_info().rss - rss
    assert growth < 48 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over {total} hostile runs"


def test_threads_sharing_one_sandbox_get_exact_results():
    sandbox = Sandbox()
    upper = WasmModule.from_wat(hostile.UPPER)
    spin = WasmModule.from_wat(hostile.SPIN)

    def task(i: int) -> None:
        text = f"task {i} says hello ".encode() * (1 + i % 50)
        result = sandbox.run(upper, text)
        assert result.output == text.upper()
        assert result.output_sha256 == hashlib.sha256(text.upper()).hexdigest()
        data = bytes([i % 256]) * 64
        spun = sandbox.run(spin, data)
        assert int.from_bytes(spun.output, "little") == 1000 * 64 * (i % 256)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(task, range(400)))


def test_threads_see_their_own_failures_only():
    limits = wgt.ResourceLimits(max_cpu_cycles=1_000_000)
    sandbox = Sandbox(limits)
    loop = WasmModule.from_wat(hostile.INFINITE_LOOP)
    echo = WasmModule.from_wat(hostile.ECHO)

    def task(i: int) -> str:
        if i % 2:
            with pytest.raises(wgt.OutOfFuel):
                sandbox.run(loop, b"")
            return "stopped"
        return sandbox.run(echo, str(i).encode()).output.decode()

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(task, range(120)))
    assert results == [str(i) if i % 2 == 0 else "stopped" for i in range(120)]
