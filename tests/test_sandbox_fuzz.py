"""Fuzzing module loading: whatever the bytes, ``WasmModule(...)`` returns a module or raises one
typed WgtError, and the process survives.

Loading happens in a child process (one, reused, restarted if it dies), because what this guards
against is wasmtime-py aborting the interpreter. Inputs are valid modules, mutated byte-wise, and
modules built from random declarations (every value type, v128 and the GC reference types
included, at every place a type can appear). Bounded: a few hundred examples, seconds.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sandbox_hostile as hostile
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SERVER = textwrap.dedent(
    """
    import sys
    import wgtlab as wgt
    from wgtlab.sandbox.module import WasmModule

    source, sink = sys.stdin.buffer, sys.stdout
    while True:
        head = source.read(4)
        if len(head) < 4:
            break
        wasm = source.read(int.from_bytes(head, "little"))
        try:
            WasmModule.from_bytes(wasm)
            outcome = "ok"
        except wgt.WgtError as exc:
            outcome = type(exc).__name__
        except Exception as exc:
            outcome = f"untyped {type(exc).__name__}: {str(exc)[:300]!r}"
        sink.write(outcome.replace("\\n", " ") + "\\n")
        sink.flush()
    """
)
TYPED = {"ok", "InvalidModule", "ForbiddenImport"}
LOAD_TIMEOUT_S = 60  # one load; a mutated small module compiles in milliseconds


class ChildLoader:
    """A child process that loads modules sent to it and answers with the outcome."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.loads = 0

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, WGTLAB_CACHE_DIR=str(self.cache_dir))
        return subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def load(self, wasm: bytes) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        self.loads += 1
        try:
            proc.stdin.write(len(wasm).to_bytes(4, "little") + wasm)
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([proc.stdout], [], [], LOAD_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            code = proc.wait()
            self.proc = None
            return f"the loading process died (exit {code})" if ready else "the load hung"
        return line.decode().strip()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    child = ChildLoader(tmp_path_factory.mktemp("fuzz-cache"))
    yield child
    child.close()


def _seed_modules() -> list[bytes]:
    from wgtlab.sandbox.kernels import base

    wats = [
        hostile.ECHO,
        hostile.UPPER,
        hostile.TIME_AND_ENTROPY,
        hostile.WASI_PROBE,
        hostile.HELLO_STDOUT,
        hostile.START_LOOPS,
        hostile.abi_module(
            hostile.RETURN_INPUT,
            extra="(table $t 2 10 funcref) (elem (i32.const 0) func $f) (func $f)",
        ),
        hostile.abi_module(
            hostile.RETURN_INPUT, extra='(global (export "g") (mut i64) (i64.const 7))'
        ),
    ]
    seeds = [bytes(wasmtime.wat2wasm(wat)) for wat in wats]
    kernels = (
        Path(base.__file__).with_name("sum.wat"),
        Path(base.__file__).with_name("count_where.wat"),
    )
    seeds += [bytes(wasmtime.wat2wasm(path.read_text())) for path in kernels]
    return seeds


SEEDS = _seed_modules()
# bytes that mean something in the type positions: v128, funcref, externref, the GC and
# function-reference encodings, block/table prefixes, LEB continuation, end
INTERESTING = [
    0x7B,
    0x70,
    0x6F,
    0x6E,
    0x6C,
    0x69,
    0x64,
    0x63,
    0x40,
    0x60,
    0x4E,
    0x80,
    0xFF,
    0x0B,
    0x00,
]


@st.composite
def mutated_modules(draw: st.DrawFn) -> bytes:
    wasm = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(8, len(wasm)))
        action = draw(st.sampled_from(["set", "insert", "delete", "splice"]))
        byte = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 255)))
        if action == "set" and at < len(wasm):
            wasm[at] = byte
        elif action == "insert":
            wasm[at:at] = bytes([byte]) * draw(st.integers(1, 3))
        elif action == "delete":
            del wasm[at : at + draw(st.integers(1, 8))]
        else:  # a slice of one seed copied into another: whole sections moved around
            other = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(8, len(other) - 1))
            wasm[at:at] = other[start : start + draw(st.integers(1, 64))]
    return bytes(wasm)


VALUE_TYPES = [
    "i32",
    "i64",
    "f32",
    "f64",
    "v128",
    "funcref",
    "externref",
    "anyref",
    "eqref",
    "i31ref",
    "structref",
    "arrayref",
    "exnref",
    "nullref",
    "nullfuncref",
    "(ref null $sig)",
    "(ref func)",
]
CONST = {
    "i32": "(i32.const 1)",
    "i64": "(i64.const 1)",
    "f32": "(f32.const 1)",
    "f64": "(f64.const 1)",
    "v128": "(v128.const i64x2 0 0)",
    "funcref": "(ref.null func)",
    "externref": "(ref.null extern)",
    "anyref": "(ref.null any)",
    "eqref": "(ref.null eq)",
    "i31ref": "(ref.null i31)",
    "structref": "(ref.null struct)",
    "arrayref": "(ref.null array)",
    "exnref": "(ref.null exn)",
    "nullref": "(ref.null none)",
    "nullfuncref": "(ref.null nofunc)",
    "(ref null $sig)": "(ref.null $sig)",
    "(ref func)": "(ref.func $sig_impl)",
}


@st.composite
def declared_modules(draw: st.DrawFn) -> bytes:
    """An ABI module plus random exports, imports, globals and tables of random value types."""
    types = st.sampled_from(VALUE_TYPES)
    parts = ["(type $sig (func))", "(func $sig_impl (type $sig))", "(elem declare func $sig_impl)"]
    imports = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["func", "global", "table", "memory"]))
        name = draw(st.sampled_from(["fd_write", "random_get", "proc_exit", "sock_open", "x"]))
        if kind == "func":
            params = " ".join(draw(st.lists(types, max_size=3)))
            results = " ".join(draw(st.lists(types, max_size=2)))
            desc = f"(func (param {params}) (result {results}))"
        elif kind == "global":
            desc = f"(global {draw(types)})"
        elif kind == "table":
            desc = f"(table 1 {draw(types)})"
        else:
            desc = "(memory 1)"
        module = draw(st.sampled_from(["wasi_snapshot_preview1", "env"]))
        imports.append(f'(import "{module}" "{name}" {desc})')
    for i in range(draw(st.integers(0, 3))):
        params = " ".join(draw(st.lists(types, max_size=3)))
        parts.append(f'(func (export "f{i}") (param {params}))')
    for i in range(draw(st.integers(0, 3))):
        ty = draw(types)
        exported = f'(export "g{i}")' if draw(st.booleans()) else ""
        parts.append(f"(global {exported} {ty} {CONST[ty]})")
    for i in range(draw(st.integers(0, 2))):
        ty = draw(st.sampled_from(["funcref", "externref", "anyref", "(ref null $sig)"]))
        exported = f'(export "t{i}")' if draw(st.booleans()) else ""
        parts.append(f"(table {exported} {draw(st.integers(0, 3))} {ty})")
    wat = hostile.abi_module(hostile.RETURN_INPUT, extra=" ".join(parts), imports=" ".join(imports))
    try:
        return bytes(wasmtime.wat2wasm(wat))
    except wasmtime.WasmtimeError:
        return bytes(wasmtime.wat2wasm(hostile.ECHO))  # a combination the text parser refuses


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(wasm=mutated_modules())
def test_mutated_modules_load_or_are_refused_with_a_typed_error(loader, wasm):
    assert loader.load(wasm) in TYPED


@FUZZ
@given(wasm=declared_modules())
def test_any_declared_type_loads_or_is_refused_with_a_typed_error(loader, wasm):
    assert loader.load(wasm) in TYPED


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_seed_loads(loader, seed):
    assert loader.load(SEEDS[seed]) == "ok"
