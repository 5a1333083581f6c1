"""The sandbox against real modules: ABI v1 round trips, and every way a module can misbehave."""

from __future__ import annotations

import hashlib
import pickle
import resource
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sandbox_hostile as hostile
from sandbox_hostile import check_host_still_works

import wgtlab as wgt
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox, TaskResult
from wgtlab.sandbox.wasi import CLOCK_STEP_NS, REALTIME_EPOCH_NS

MiB = 1 << 20


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def small() -> Sandbox:
    """Tight limits, so hostile modules are caught quickly."""
    return Sandbox(
        wgt.ResourceLimits(
            max_memory_bytes=16 * MiB,
            max_cpu_cycles=5_000_000,
            max_execution_time_ms=10_000,
            max_stack_bytes=256 << 10,
            max_output_bytes=1 * MiB,
            max_log_bytes=1024,
        )
    )


# --- the ABI, when a module behaves -------------------------------------------------------------


def test_echo_round_trip_reports_output_digest_and_usage(echo):
    data = bytes(range(256)) * 4
    result = Sandbox().run(echo, data)
    assert isinstance(result, TaskResult)
    assert result.output == data
    assert result.output_sha256 == __import__("hashlib").sha256(data).hexdigest()
    assert result.fuel_used > 0
    assert result.wall_ms > 0
    assert result.memory_bytes == 2 * 65536  # one result page + one input page
    assert result.module_digest == echo.digest
    assert (result.stdout, result.stderr, result.logs_truncated) == (b"", b"", False)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * MiB + 5])
def test_input_of_any_size_comes_back_exactly(echo, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert Sandbox().run(echo, data).output == data


def test_buffers_other_than_bytes_are_accepted(echo):
    values = np.arange(1000, dtype="<f8")
    sandbox = Sandbox()
    assert sandbox.run(echo, values).output == values.tobytes()
    assert sandbox.run(echo, bytearray(b"abc")).output == b"abc"
    assert sandbox.run(echo, memoryview(b"xyz")).output == b"xyz"


def test_module_does_real_work():
    upper = WasmModule.from_wat(hostile.UPPER)
    assert Sandbox().run(upper, b"Hello, wasm!").output == b"HELLO, WASM!"


def test_nan_results_are_canonical(echo):
    output = Sandbox().run(WasmModule.from_wat(hostile.NAN_BITS), b"").output
    assert output[:16] == bytes.fromhex("000000000000f87f") * 2  # f64 canonical NaN, LE
    assert output[16:] == bytes.fromhex("0000c07f") * 4  # f32 lanes


def test_module_metadata(echo):
    assert len(echo.digest) == 64
    assert echo.digest == __import__("hashlib").sha256(echo.wasm).hexdigest()
    assert [e.name for e in echo.exports] == ["memory", "wgt_alloc", "wgt_run"]
    assert str(echo.exports[2]) == "wgt_run (func (i32, i32) -> (i64))"
    assert echo.imports == ()
    assert echo.initial_memory_bytes == 65536
    assert pickle.loads(pickle.dumps(echo)) == echo
    assert WasmModule.from_bytes(echo.wasm).digest == echo.digest


def test_from_file_reads_binary_and_text(tmp_path, echo):
    (tmp_path / "echo.wasm").write_bytes(echo.wasm)
    (tmp_path / "echo.wat").write_text(hostile.ECHO)
    assert WasmModule.from_file(tmp_path / "echo.wasm").digest == echo.digest
    assert WasmModule.from_file(tmp_path / "echo.wat").digest == echo.digest
    with pytest.raises(wgt.InvalidModule, match="cannot read"):
        WasmModule.from_file(tmp_path / "missing.wasm")


def test_limits_are_reported_in_errors_and_usage_is_bounded(echo):
    fuel = 1_000
    result = Sandbox(wgt.ResourceLimits(max_cpu_cycles=fuel)).run(echo, b"x")
    assert 0 < result.fuel_used <= fuel


# --- refused before anything runs ---------------------------------------------------------------


def test_malformed_bytes_are_invalid():
    with pytest.raises(wgt.InvalidModule, match="not a WebAssembly binary"):
        WasmModule.from_bytes(b"MZ\x90\x00 this is an exe")
    with pytest.raises(wgt.InvalidModule, match="not a valid WebAssembly module"):
        WasmModule.from_bytes(b"\0asm\x01\x00\x00\x00\x05\xff\xff")
    with pytest.raises(wgt.InvalidModule, match="not a core WebAssembly module"):
        WasmModule.from_bytes(b"\0asm\x0d\x00\x01\x00")
    with pytest.raises(wgt.InvalidModule, match="does not parse"):
        WasmModule.from_wat("(module (func (export oops")


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        (hostile.MISSING_EXPORTS, "does not export wgt_run"),
        (hostile.NO_MEMORY, "does not export memory"),
        (hostile.WRONG_RUN_TYPE, r"exports wgt_run as func \(i32, i32\) -> \(i32\), expected"),
        (hostile.RUN_IS_A_GLOBAL, "exports wgt_run as global i32, expected func"),
        (hostile.WASI_WRONG_SIGNATURE, "fd_write"),
        (hostile.SHARED_MEMORY, "exports memory as memory shared memory32, expected"),
        (hostile.MEMORY64, "exports memory as memory memory64, expected memory memory32"),
    ],
)
def test_exports_that_break_the_abi_are_invalid(wat, message):
    with pytest.raises(wgt.InvalidModule, match=message):
        WasmModule.from_wat(wat)


def test_forbidden_imports_are_named_before_instantiation():
    with pytest.raises(wgt.ForbiddenImport) as caught:
        WasmModule.from_wat(hostile.FORBIDDEN_IMPORTS)
    assert caught.value.imports == ("env.system", "env.socket")
    assert "env.system" in str(caught.value) and "env.socket" in str(caught.value)
    with pytest.raises(wgt.ForbiddenImport, match="sock_open"):
        WasmModule.from_wat(hostile.WASI_UNKNOWN_FUNCTION)
    with pytest.raises(wgt.ForbiddenImport, match=r"wasi_snapshot_preview1\.memory"):
        WasmModule.from_wat(hostile.WASI_MEMORY_IMPORT)


def test_huge_initial_memory_is_refused_before_instantiation(small, echo):
    module = WasmModule.from_wat(hostile.HUGE_INITIAL_MEMORY)
    with pytest.raises(wgt.MemoryLimitExceeded, match="initial memory of 131,072,000 bytes"):
        small.run(module, b"x")
    check_host_still_works(small, echo)


def test_input_larger_than_memory_limit_is_refused(small, echo):
    with pytest.raises(wgt.MemoryLimitExceeded, match="the input alone"):
        small.run(echo, bytes(17 * MiB))


# --- stopped while running, each by the limit that caught it -------------------------------------


def test_infinite_loop_runs_out_of_fuel(small, echo):
    module = WasmModule.from_wat(hostile.INFINITE_LOOP)
    with pytest.raises(wgt.OutOfFuel, match="max_cpu_cycles=5,000,000"):
        small.run(module, b"")
    check_host_still_works(small, echo)


def test_infinite_loop_with_plenty_of_fuel_hits_the_wall_clock(echo):
    limits = wgt.ResourceLimits(max_cpu_cycles=1 << 62, max_execution_time_ms=100)
    module = WasmModule.from_wat(hostile.INFINITE_LOOP)
    started = time.perf_counter()
    with pytest.raises(wgt.TimeLimitExceeded, match="max_execution_time_ms=100"):
        Sandbox(limits).run(module, b"")
    # generous: without the epoch deadline this loop would run for days
    assert time.perf_counter() - started < 10
    check_host_still_works(Sandbox(limits), echo)


def test_start_function_is_metered_too(small):
    with pytest.raises(wgt.OutOfFuel):
        small.run(WasmModule.from_wat(hostile.START_LOOPS), b"")


@pytest.mark.parametrize("wat", [hostile.MEMORY_BOMB])
def test_memory_bomb_is_stopped_at_the_memory_limit(small, echo, wat):
    with pytest.raises(wgt.MemoryLimitExceeded, match="max_memory_bytes=16,777,216"):
        small.run(WasmModule.from_wat(wat), b"")
    check_host_still_works(small, echo)


def test_one_shot_memory_bomb_gets_no_memory(small, echo):
    # memory.grow(1 GiB) is refused (-1); the write where it would have been traps
    with pytest.raises(wgt.WasmTrap, match="out of bounds memory access"):
        small.run(WasmModule.from_wat(hostile.MEMORY_BOMB_ONE_SHOT), b"")
    check_host_still_works(small, echo)


def test_unbounded_recursion_overflows_the_stack(small, echo):
    with pytest.raises(wgt.StackOverflow, match=r"max_stack_bytes=262,144"):
        small.run(WasmModule.from_wat(hostile.RECURSION), b"")
    check_host_still_works(small, echo)


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        (hostile.UNREACHABLE, "unreachable"),
        (hostile.DIVIDE_BY_ZERO, "integer divide by zero"),
    ],
)
def test_traps_carry_their_message(small, echo, wat, message):
    with pytest.raises(wgt.WasmTrap, match=message):
        small.run(WasmModule.from_wat(wat), b"abc")
    check_host_still_works(small, echo)


def test_output_outside_memory_is_an_abi_error(small, echo):
    with pytest.raises(wgt.AbiError, match="past the end of its memory"):
        small.run(WasmModule.from_wat(hostile.OUTPUT_OUT_OF_BOUNDS), b"")
    check_host_still_works(small, echo)


def test_output_over_the_cap_is_an_abi_error(small):
    with pytest.raises(wgt.AbiError, match="over max_output_bytes=1,048,576"):
        small.run(WasmModule.from_wat(hostile.OUTPUT_TOO_LARGE), b"")


def test_alloc_that_cannot_hold_the_input_is_an_abi_error(small):
    with pytest.raises(wgt.AbiError, match=r"wgt_alloc\(1000\) returned 0xfde8"):
        small.run(WasmModule.from_wat(hostile.ALLOC_OUT_OF_BOUNDS), bytes(1000))


# --- WASI, locked down --------------------------------------------------------------------------


def test_proc_exit_is_a_process_exit_with_its_code(small, echo):
    with pytest.raises(wgt.ProcessExit, match=r"proc_exit\(3\)") as caught:
        small.run(WasmModule.from_wat(hostile.PROC_EXIT), b"")
    assert caught.value.code == 3
    check_host_still_works(small, echo)


def test_wasi_has_no_files_arguments_or_environment(small, monkeypatch):
    monkeypatch.setenv("WGT_SECRET_FOR_TEST", "should-not-leak")
    result = small.run(WasmModule.from_wat(hostile.WASI_PROBE), b"")
    path_open, prestat, argc, envc = struct.unpack("<4I", result.output)
    assert path_open == hostile.WASI_ERRNO_BADF
    assert prestat == hostile.WASI_ERRNO_BADF
    assert (argc, envc) == (0, 0)


def test_wasi_time_and_entropy_are_the_same_on_every_run(small):
    module = WasmModule.from_wat(hostile.TIME_AND_ENTROPY)
    result = small.run(module, b"")
    realtime, monotonic = struct.unpack_from("<2Q", result.output, 0)
    assert realtime == REALTIME_EPOCH_NS + CLOCK_STEP_NS  # 2000-01-01, 1 us into the task
    assert monotonic == 2 * CLOCK_STEP_NS
    assert result.output[16:48] == hashlib.shake_256(b"wgtlab-wasi-random-v1:1").digest(32)
    assert result.output[48:53] == hashlib.shake_256(b"wgtlab-wasi-random-v1:2").digest(5)
    bad_clock, out_of_memory = struct.unpack_from("<2I", result.output, 56)
    assert (bad_clock, out_of_memory) == (28, 21)  # EINVAL, EFAULT: nothing written
    # Another run, another thread, another sandbox: the same bytes, so replicas agree.
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(lambda _: Sandbox().run(module, b"").output, range(4)))
    assert again == [result.output] * 4


@pytest.mark.parametrize("length", ["0x7fffffff", "-1", "65521"])
def test_entropy_past_the_end_of_memory_costs_the_host_nothing(length):
    # 2 GiB, "-1" (4 GiB as a u32) and one byte too many for a one-page memory: EFAULT at once,
    # before the host makes a single byte.
    limits = wgt.ResourceLimits(max_memory_bytes=16 << 20, max_execution_time_ms=2_000)
    module = WasmModule.from_wat(hostile.entropy_request(length))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    result = Sandbox(limits).run(module, b"")
    assert struct.unpack("<I", result.output) == (21,)
    # Making the 2 GiB first, as a naive host would, raised the peak by 2 GiB.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 << 10
    fits = Sandbox(limits).run(WasmModule.from_wat(hostile.entropy_request("65520")), b"")
    assert struct.unpack("<I", fits.output) == (0,)


def test_sleeping_in_wasi_is_refused_not_waited_for(echo):
    # poll_oneoff sleeps in the host, out of reach of fuel and the epoch deadline
    limits = wgt.ResourceLimits(max_execution_time_ms=100)
    started = time.perf_counter()
    result = Sandbox(limits).run(WasmModule.from_wat(hostile.SLEEP), b"")
    assert struct.unpack("<I", result.output) == (hostile.WASI_ERRNO_NOTSUP,)
    assert time.perf_counter() - started < 60  # generous: the module asked for an hour


def test_second_memory_is_refused(small):
    with pytest.raises(wgt.InvalidModule, match="more than one linear memory"):
        small.run(WasmModule.from_wat(hostile.TWO_MEMORIES), b"")


def test_stdout_and_stderr_are_captured(small):
    out = small.run(WasmModule.from_wat(hostile.HELLO_STDOUT), b"ok")
    assert (out.output, out.stdout, out.stderr) == (b"ok", b"hello from wasm\n", b"")
    err = small.run(WasmModule.from_wat(hostile.HELLO_STDERR), b"ok")
    assert (err.stdout, err.stderr) == (b"", b"warning: careful\n")
    assert not err.logs_truncated


def test_captured_output_is_capped(small):
    # 1,000 WASI calls pay 1e8 fuel for the host's work: more than `small` has
    chatty = Sandbox(small.limits.replace(max_cpu_cycles=1_000_000_000))
    result = chatty.run(WasmModule.from_wat(hostile.CHATTY_STDOUT), b"ok")
    assert result.output == b"ok"
    assert result.stdout == (b"0123456789abcdef" * 64)[:1024]
    assert result.logs_truncated


# --- API misuse ----------------------------------------------------------------------------------


def test_run_rejects_wrong_argument_types(echo):
    with pytest.raises(TypeError, match="WasmModule"):
        Sandbox().run(echo.wasm, b"")
    with pytest.raises(TypeError, match="ResourceLimits"):
        Sandbox({"max_memory_bytes": 1})
    with pytest.raises(TypeError):
        Sandbox().run(echo, "text is not bytes")


def test_task_result_renders_as_html(echo):
    html = Sandbox().run(echo, b"<b>").output and Sandbox().run(echo, b"x")._repr_html_()
    assert "fuel used" in html and "output SHA-256" in html
