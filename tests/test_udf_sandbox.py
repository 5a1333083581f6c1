"""@wgt.udf inside the sandbox: isolation, all four limits, guest errors, logs, determinism.

Every function below really runs in CPython compiled to WebAssembly, in a fresh instance per task.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from udf_support import ensure_runner

import wgtlab as wgt
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.kernels.base import Kernel
from wgtlab.sandbox.python import GUEST_MODULES
from wgtlab.sandbox.python.component import guest_modules, runner_component
from wgtlab.sandbox.runner import Sandbox, TaskResult

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def runner():
    return ensure_runner()


def fails_with(fn, error, chunk=None, limits=None, **options):
    with pytest.raises(error) as info:
        wgt.udf(fn, **options).run(chunk if chunk is not None else [], limits=limits, echo=False)
    return info.value


# --- isolation: what the guest tries, and how it fails ------------------------------------------


def opens_a_file(rows):
    return open("/etc/hostname").read()


def writes_a_file(rows):
    with open("/tmp/wgt-udf-escape", "w") as f:
        f.write("x")


def lists_a_directory(rows):
    import os

    return os.listdir("/")


def opens_a_socket(rows):
    socket = __import__("socket")  # `import socket` is refused before running; try anyway
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection.connect(("127.0.0.1", 22))
    return connection.recv(10)


def runs_a_shell(rows):
    import os

    return os.system("touch /tmp/wgt-udf-escape")


def starts_a_process(rows):
    subprocess = __import__("subprocess")
    return subprocess.run(["true"]).returncode


def starts_a_thread(rows):
    threading = __import__("threading")
    worker = threading.Thread(target=print)
    worker.start()
    worker.join()


def reads_the_clock(rows):
    import time

    return time.time()


def asks_the_date(rows):
    import datetime

    return datetime.date.today()


def draws_entropy(rows):
    import os

    return os.urandom(8).hex()


def sets_an_environment_variable(rows):
    import os

    os.putenv("WGT_ESCAPE", "1")


@pytest.mark.parametrize(
    "fn",
    [
        opens_a_file,
        writes_a_file,
        lists_a_directory,
        opens_a_socket,
        starts_a_thread,
        reads_the_clock,
        asks_the_date,
        draws_entropy,
        sets_an_environment_variable,
    ],
)
def test_os_services_are_refused_with_a_permission_error(fn):
    error = fails_with(fn, wgt.UdfError)
    assert error.exc_type == "PermissionError"
    assert "is not available inside the wgtlab sandbox" in error.exc_message
    assert any(f"in {fn.__name__}" in line for line in error.traceback)
    assert not Path("/tmp/wgt-udf-escape").exists()


def test_processes_and_ctypes_do_not_exist():
    error = fails_with(starts_a_process, wgt.UdfError)
    assert error.exc_type == "OSError" and "does not support processes" in error.exc_message
    error = fails_with(runs_a_shell, wgt.UdfError)
    assert error.exc_message == "module 'os' has no attribute 'system'"

    def loads_ctypes(rows):
        return str(__import__("ctypes"))

    error = fails_with(loads_ctypes, wgt.UdfError)
    assert error.exc_type == "ModuleNotFoundError"
    assert error.exc_message == "No module named 'ctypes'"


def test_the_environment_is_empty():
    def environment(rows):
        import os

        return [dict(os.environ), os.getenv("HOME"), os.getenv("PATH")]

    assert wgt.udf(environment).run([]) == [{}, None, None]


def stats_a_path(rows):
    import os

    return os.stat("/").st_size


def asks_the_time(rows):
    import datetime

    return datetime.datetime.now()


def writes_to_fd_1(rows):
    import os

    return os.write(1, b"escape")


@pytest.mark.parametrize(
    ("fn", "service"),
    [
        (stats_a_path, "the filesystem"),
        (asks_the_time, "the clock"),
        (writes_to_fd_1, "the process's standard streams"),
    ],
)
def test_calls_below_python_reach_trapping_stubs_and_say_which_service(fn, service):
    error = fails_with(fn, wgt.WasmTrap)
    assert f"tried to use {service}" in str(error)
    assert "does not provide" in str(error)


# --- limits ------------------------------------------------------------------------------------


def spins(rows):
    while True:
        pass


def test_an_infinite_loop_runs_out_of_fuel():
    limits = wgt.ResourceLimits(max_cpu_cycles=50_000_000)
    error = fails_with(spins, wgt.OutOfFuel, limits=limits)
    assert "max_cpu_cycles=50,000,000" in str(error)


def test_an_infinite_loop_hits_the_wall_clock_limit():
    limits = wgt.ResourceLimits(max_cpu_cycles=10**15, max_execution_time_ms=300)
    error = fails_with(spins, wgt.TimeLimitExceeded, limits=limits)
    assert "max_execution_time_ms=300" in str(error)


def allocates_a_gibibyte(rows):
    return len(bytearray(1 << 30))


def grows_until_refused(rows):
    blocks = []
    while True:
        blocks.append(bytearray(1 << 20))


def test_allocating_a_gibibyte_is_a_memory_limit_error():
    error = fails_with(allocates_a_gibibyte, wgt.MemoryLimitExceeded)
    assert "allocates_a_gibibyte raised MemoryError" in str(error)
    assert "max_memory_bytes=268,435,456" in str(error)
    limits = wgt.ResourceLimits(max_memory_bytes=64 << 20)
    error = fails_with(grows_until_refused, wgt.MemoryLimitExceeded, limits=limits)
    assert "max_memory_bytes=67,108,864" in str(error)


def test_a_memory_limit_below_the_runner_itself_is_refused_clearly():
    limits = wgt.ResourceLimits(max_memory_bytes=8 << 20)
    error = fails_with(spins, wgt.MemoryLimitExceeded, limits=limits)
    assert "the Python runner alone needs more memory" in str(error)


def recurses(rows):
    def down(n):
        return down(n + 1) + 1

    return down(0)


def recurses_through_c(rows):
    def down(n):
        return sorted([n], key=down)  # each level re-enters the interpreter from C

    return down(0)


def test_unbounded_recursion_is_a_stack_error():
    error = fails_with(recurses, wgt.StackOverflow)
    assert "RecursionError" in str(error) and "in down" in str(error)
    # Recursion through C code exhausts the WebAssembly stack itself: a trap, on an engine with
    # another stack limit (the compiled runner is shared between engines, not recompiled).
    limits = wgt.ResourceLimits(max_stack_bytes=256 << 10)
    error = fails_with(recurses_through_c, wgt.StackOverflow, limits=limits)
    assert "max_stack_bytes=262,144" in str(error)


def test_an_oversized_result_is_refused():
    def big(rows):
        return "x" * 5000

    error = fails_with(big, wgt.AbiError, limits=wgt.ResourceLimits(max_output_bytes=1000))
    assert "over max_output_bytes=1,000" in str(error)


def test_every_task_gets_a_fresh_interpreter_even_after_a_trap():
    def counts(rows):
        import builtins
        import json

        json.calls = getattr(json, "calls", 0) + 1
        builtins.len = None  # vandalise the interpreter: the next task must not see it
        return json.calls

    kernel = wgt.udf(counts)
    assert [kernel.run([]) for _ in range(3)] == [1, 1, 1]
    fails_with(spins, wgt.OutOfFuel, limits=wgt.ResourceLimits(max_cpu_cycles=10_000_000))
    assert kernel.run([]) == 1


# --- errors and logs ---------------------------------------------------------------------------


def parses(rows):
    def number(row):
        return int(row["n"])

    print("parsing", len(rows), "rows")
    return [number(r) for r in rows]


def test_an_exception_carries_the_guest_traceback():
    with pytest.raises(wgt.UdfError) as info:
        wgt.udf(parses).run([{"n": "1"}, {"n": "x"}], echo=False)
    error = info.value
    assert error.exc_type == "ValueError"
    assert error.exc_message == "invalid literal for int() with base 10: 'x'"
    assert error.traceback[0] == "Traceback (most recent call last):"
    assert '  File "<udf parses>", line 3, in number' in error.traceback
    assert '    return int(row["n"])' in error.traceback
    assert error.traceback[-1] == "ValueError: invalid literal for int() with base 10: 'x'"
    assert "parses raised ValueError" in str(error) and 'return int(row["n"])' in str(error)
    assert error.stdout == b"parsing 2 rows\n"  # printed before it failed
    assert isinstance(error, wgt.SandboxError)


@pytest.mark.parametrize(
    ("body", "exc_type", "message"),
    [
        ("return object()", "TypeError", "JSON cannot hold"),
        ("return {(1, 2): 3}", "TypeError", "JSON keys must be str"),
        ("import sys\n    sys.exit(3)", "SystemExit", "3"),
        ("import statistics\n    return statistics.mean([])", "statistics.StatisticsError", ""),
        ("import json\n    return json.loads('{')", "json.decoder.JSONDecodeError", "Expecting"),
    ],
)
def test_guest_exception_types_and_bad_results(tmp_path, body, exc_type, message):
    source = f"def bad(rows):\n    {body}\n"
    path = tmp_path / "bad_udf.py"
    path.write_text(source)
    namespace = {}
    exec(compile(source, str(path), "exec"), namespace)
    error = fails_with(namespace["bad"], wgt.UdfError)
    assert error.exc_type == exc_type and message in error.exc_message


def test_print_and_stderr_are_captured_and_capped():
    def chatty(rows):
        import sys

        print("out", rows)
        print("err", file=sys.stderr)
        return len(rows)

    result = wgt.udf(chatty).run_task([1, 2])
    assert (result.stdout, result.stderr) == (b"out [1, 2]\n", b"err\n")
    assert not result.logs_truncated

    def floods(rows):
        print("é" * 10_000)
        return 0

    result = wgt.udf(floods).run_task([], limits=wgt.ResourceLimits(max_log_bytes=101))
    assert result.logs_truncated and len(result.stdout) <= 101
    assert result.stdout.decode("utf-8", "ignore") == "é" * 50


def test_run_echoes_what_the_function_printed(capsys):
    assert wgt.udf(parses).run([{"n": "4"}]) == [4]
    assert capsys.readouterr().out == "parsing 1 rows\n"


# --- values in and out -------------------------------------------------------------------------


def test_bytes_in_bytes_out_is_exact():
    reverse = wgt.udf(lambda chunk: chunk[::-1], input="bytes")
    every_byte = bytes(range(256)) * 3
    assert reverse.run(every_byte) == every_byte[::-1]

    def not_bytes(chunk):
        return chunk.decode("latin-1")

    error = fails_with(not_bytes, wgt.UdfError, chunk=b"ab", input="bytes")
    assert "must return bytes" in error.exc_message


def test_text_in_json_out():
    def words(text):
        return text.split()

    assert wgt.udf(words, input="text").run("héllo  wörld\n") == ["héllo", "wörld"]
    assert wgt.udf(words, input="text").run(b"caf\xc3\xa9 x") == ["café", "x"]


def test_special_values_come_back_as_json():
    def specials(rows):
        import datetime

        return {
            "nan": float("nan"),
            "inf": float("inf"),
            "set": {3, 1, 2},
            "date": datetime.date(2013, 1, 5),
            "keys": {1: "a", "b": 2},
            "tuple": (1, 2),
        }

    value = wgt.udf(specials).run([])
    assert math.isnan(value["nan"]) and value["inf"] == math.inf
    assert value["set"] == [1, 2, 3] and value["date"] == "2013-01-05"
    assert value["keys"] == {"1": "a", "b": 2} and value["tuple"] == [1, 2]


def draws(rows):
    import random

    return [random.random(), random.Random().random(), random.sample(range(100), 3)]


def test_random_is_seeded_per_chunk():
    kernel = wgt.udf(draws)
    first = kernel.run([1, 2])
    assert kernel.run([1, 2]) == first
    assert kernel.run([1, 3]) != first
    assert wgt.udf(draws, seed=1).run([1, 2]) != first


# --- the kernel protocol and determinism ------------------------------------------------------


def summary(rows):
    import statistics

    delays = [r["delay"] for r in rows if r["delay"] is not None]
    return {
        "mean": statistics.fmean(delays),
        "stdev": statistics.stdev(delays),
        "third": sum(delays) / 3,
        "dests": {r["dest"] for r in rows},
    }


ROWS = [
    {"delay": (i * 7919 % 113) / 7 if i % 11 else None, "dest": f"D{i % 17}"} for i in range(3000)
]


def test_kernel_protocol_round_trip():
    kernel = wgt.udf(summary)
    assert isinstance(kernel, Kernel)
    payload = kernel.encode(ROWS)
    result = kernel.execute(Sandbox(), payload)
    assert isinstance(result, TaskResult)
    assert result.module_digest == kernel.digest
    assert result.fuel_used > 0 and result.wall_ms > 0
    value, native = kernel.decode(result.output), summary(ROWS)
    assert value["dests"] == sorted(native["dests"])
    assert value["mean"] == native["mean"] and value["stdev"] == native["stdev"]
    # The guest is CPython 3.14, whose sum() of floats is compensated (3.12+): last bits differ.
    assert value["third"] == pytest.approx(native["third"], rel=1e-14)
    # canonical output: sorted keys, no spaces
    assert result.output.startswith(b'{"dests":["D0","D1","D10",')


def test_same_chunk_on_two_workers_gives_identical_bytes():
    kernel = wgt.udf(summary)
    payload = kernel.encode(ROWS)
    outputs = {}

    def worker(name):
        outputs[name] = kernel.execute(Sandbox(wgt.ResourceLimits()), payload)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outputs["a"].output == outputs["b"].output
    assert outputs["a"].output_sha256 == outputs["b"].output_sha256
    # ...and in another process, as on a remote worker
    script = (
        "import pickle, sys\n"
        "from wgtlab.sandbox.runner import Sandbox\n"
        "kernel, payload = pickle.loads(sys.stdin.buffer.read())\n"
        "sys.stdout.write(kernel.execute(Sandbox(), payload).output_sha256)\n"
    )
    import pickle

    other = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps((kernel, payload)),
        capture_output=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    assert other.stdout.decode() == outputs["a"].output_sha256


def test_every_promised_module_is_importable_in_the_guest():
    engine = get_engine()
    present = set(guest_modules(engine, runner_component(engine)))
    assert set(GUEST_MODULES) <= present

    def imports_all(rows):
        failed = []
        for name in rows:
            try:
                __import__(name)
            except Exception as exc:
                failed.append(f"{name}: {exc}")
        return failed

    assert wgt.udf(imports_all).run(list(GUEST_MODULES)) == []


# --- the transport, both ways ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


def echo(value):
    return value


@settings(max_examples=40, deadline=None)
@given(JSON_VALUES)
def test_any_json_value_comes_back_unchanged(value):
    assert wgt.udf(echo).run(value, echo=False) == value


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_come_back_unchanged(data):
    assert wgt.udf(echo, input="bytes").run(data, echo=False) == data
