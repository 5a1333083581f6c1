"""@wgt.udf errors are attributed to their real cause: an exception class is known by identity,
not by name, and text the runner cannot hand back (lone surrogates) is the function's error, not
a trap about standard streams. Every function runs in the real sandbox.
"""

from __future__ import annotations

import pandas as pd
import pytest
from udf_support import ensure_runner

import wgtlab as wgt
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.traps import classify_component_trap


@pytest.fixture(scope="session", autouse=True)
def runner():
    return ensure_runner()


def fails_with(fn, error, chunk=None):
    with pytest.raises(error) as info:
        wgt.udf(fn).run(chunk if chunk is not None else [], echo=False)
    return info.value


# --- exception classes by identity ---------------------------------------------------------------


def raises_a_class_made_with_type(rows):
    raise type("MemoryError", (Exception,), {})("not an allocation failure")


def raises_a_class_posing_as_builtin(rows):
    class MemoryError(Exception):
        __qualname__ = "MemoryError"
        __module__ = "builtins"

    raise MemoryError("mine")


def raises_a_subclass_of_memory_error(rows):
    class Mine(MemoryError):
        __qualname__ = "MemoryError"

    raise Mine("a subclass is still the function's own class")


def raises_its_own_recursion_error(rows):
    raise type("RecursionError", (Exception,), {})("not a stack overflow")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (raises_a_class_made_with_type, "not an allocation failure"),
        (raises_a_class_posing_as_builtin, "mine"),
        (raises_a_subclass_of_memory_error, "a subclass is still the function's own class"),
    ],
)
def test_a_class_of_its_own_named_memory_error_is_the_functions_error(fn, message):
    error = fails_with(fn, wgt.UdfError)
    assert not isinstance(error, wgt.MemoryLimitExceeded)
    assert error.exc_type == "__main__.MemoryError"
    assert error.exc_message == message
    assert f"raised __main__.MemoryError: {message}" in str(error)
    assert error.traceback[-1] == f"__main__.MemoryError: {message}"  # the same name throughout


def test_a_class_of_its_own_named_recursion_error_is_not_a_stack_overflow():
    error = fails_with(raises_its_own_recursion_error, wgt.UdfError)
    assert not isinstance(error, wgt.StackOverflow)
    assert error.exc_type == "__main__.RecursionError"


def test_a_class_defined_in_the_function_is_named_as_the_functions():
    def raises_local_class(rows):
        class Problem(ValueError):
            pass

        raise Problem("local")

    error = fails_with(raises_local_class, wgt.UdfError)
    assert error.exc_type == "__main__.raises_local_class.<locals>.Problem"
    assert error.traceback[-1] == "__main__.raises_local_class.<locals>.Problem: local"


def test_real_memory_and_recursion_errors_keep_their_types():
    def allocates(rows):
        return len(bytearray(1 << 30))

    def recurses(rows):
        def down(n):
            return down(n + 1) + 1

        return down(0)

    fails_with(allocates, wgt.MemoryLimitExceeded)
    fails_with(recurses, wgt.StackOverflow)


def test_builtin_and_library_exceptions_keep_their_names():
    def bad(rows):
        return int("x")

    def stats(rows):
        import statistics

        return statistics.mean([])

    assert fails_with(bad, wgt.UdfError).exc_type == "ValueError"
    assert fails_with(stats, wgt.UdfError).exc_type == "statistics.StatisticsError"


# --- lone surrogates -----------------------------------------------------------------------------


def returns_a_lone_surrogate(rows):
    return "a\ud800b"


def returns_a_lone_surrogate_as_a_key(rows):
    return {"k\udfff": 1}


def returns_it_deep_inside(rows):
    return [1, {"x": ["fine", "\udc80"]}]


@pytest.mark.parametrize(
    "fn", [returns_a_lone_surrogate, returns_a_lone_surrogate_as_a_key, returns_it_deep_inside]
)
def test_a_result_with_a_lone_surrogate_is_the_functions_error(fn):
    error = fails_with(fn, wgt.UdfError)
    assert error.exc_type == "UnicodeEncodeError"
    assert "lone surrogate" in error.exc_message
    assert "standard streams" not in str(error)


def test_printing_a_lone_surrogate_fails_at_the_print_as_it_would_outside():
    def prints(rows):
        print("before")
        print("x\udc80y")
        return 1

    error = fails_with(prints, wgt.UdfError)
    assert error.exc_type == "UnicodeEncodeError"
    assert "surrogates not allowed" in error.exc_message
    assert '    print("x\\udc80y")' in error.traceback
    assert error.stdout == b"before\n"


def test_stderr_escapes_lone_surrogates_as_it_would_outside():
    def warns(rows):
        import sys

        print("odd \udc80 byte", file=sys.stderr)
        return len(rows)

    result = wgt.udf(warns).run_task([1, 2])
    assert result.stderr == b"odd \\udc80 byte\n"


def test_an_exception_whose_message_or_note_has_a_lone_surrogate_is_reported():
    def raises(rows):
        error = ValueError("bad \ud800 value")
        error.add_note("note \udfff here")
        raise error

    error = fails_with(raises, wgt.UdfError)
    assert error.exc_type == "ValueError"
    assert error.exc_message == "bad \\ud800 value"
    assert "note \\udfff here" in error.traceback


def test_a_task_after_a_surrogate_failure_runs_normally():
    fails_with(returns_a_lone_surrogate, wgt.UdfError)
    assert wgt.udf(lambda rows: "é" + "\U0001f600").run([], echo=False) == "é\U0001f600"


# --- the trap classifier, for a runtime panic that still gets through ----------------------------

_PANIC = """error while executing at wasm backtrace:
    0: 0xc771c1 - <unknown>!<wasm function 0>
    1: 0x133ccb7 - <unknown>!<wasm function 4>
    2: 0xc8bf33 - libc.so!stderr_get_stderr
    3: 0xc8e910 - libc.so!stdio_get_write_stream
    4: 0xc83981 - libc.so!write
    5: 0x130ac0e - componentize_py_runtime.wasm!<Stderr as std::io::Write>::write_all
    6: 0x1308666 - componentize_py_runtime.wasm!std::panicking::default_hook
    7: 0x1307a3e - componentize_py_runtime.wasm!std::panicking::panic_with_hook
    8: 0x130898c - componentize_py_runtime.wasm!__rustc::rust_begin_unwind
    9: 0x1315add - componentize_py_runtime.wasm!core::panicking::panic_fmt
   10: 0x131961e - componentize_py_runtime.wasm!core::result::unwrap_failed
   11: 0x12edcbf - componentize_py_runtime.wasm!wit_dylib_pop_string
   12: 0x1331780 - <unknown>!run

Caused by:
    wasm trap: wasm `unreachable` instruction executed
"""


def test_a_runtime_panic_handing_back_a_string_is_not_blamed_on_standard_streams():
    import wasmtime

    error = classify_component_trap(wasmtime.WasmtimeError(_PANIC), ResourceLimits())
    assert isinstance(error, wgt.WasmTrap)
    assert "standard streams" not in str(error)
    assert "not valid UTF-8" in str(error) and "lone surrogate" in str(error)


@pytest.mark.parametrize(
    "chunk",
    [
        ["fine", "bad\ud800"],
        pd.DataFrame({"s": pd.Series(["fine", "bad\ud800"], dtype=object)}),
    ],
)
def test_a_lone_surrogate_in_the_input_is_a_typed_error_before_anything_runs(chunk):
    @wgt.udf
    def count(rows):
        return len(rows)

    with pytest.raises(wgt.ConfigError, match=r"udf count's chunk holds text that is not valid"):
        count.encode(chunk)
