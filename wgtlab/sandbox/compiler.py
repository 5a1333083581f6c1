"""Compiling a core module: small ones in this process, the rest in a child process that has
``max_compile_seconds`` and ``max_compile_memory_bytes`` (ModuleCaps), and is killed past them.

Cranelift's cost is not linear in a module's size (one 60 KB function of 20,000 empty loops
takes ~2 s and ~450 MiB; with block parameters, now off, 12 KB took 8 GB) and a compile cannot
be interrupted, so anything but a small module is compiled where running out of time or memory
costs only the child. The child is this package
(``python -m wgtlab.sandbox.compiler``) building the same engine; its serialized code is
deserialized here, as code compiled in this process would be.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import wasmtime

from wgtlab import defaults
from wgtlab.errors import InvalidModule
from wgtlab.sandbox.engine import EngineSettings, SandboxEngine
from wgtlab.sandbox.limits import ModuleCaps

__all__ = ["compile_module"]

_INVALID = 3  # the child's exit status when wasmtime refused the module (reason on stderr)


def compile_module(
    engine: SandboxEngine, wasm: bytes, *, name: str, code_bytes: int, caps: ModuleCaps
) -> wasmtime.Module:
    """``wasm`` compiled for ``engine``; InvalidModule if it does not compile within ``caps``.

    Modules with at most ``defaults.COMPILE_IN_PROCESS_CODE_BYTES`` of code compile here (their
    worst case is a fraction of a second); the others in a child process.
    """
    if code_bytes <= defaults.COMPILE_IN_PROCESS_CODE_BYTES:
        try:
            return wasmtime.Module(engine.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise _invalid(name, str(exc)) from None
    serialized = _compile_in_child(engine.settings, wasm, name=name, caps=caps)
    try:
        return wasmtime.Module.deserialize(engine.engine, serialized)
    except wasmtime.WasmtimeError as exc:  # a child of another wasmtime, or cut short
        raise InvalidModule(
            f"the code compiled for {name} in a child process does not load here: "
            f"{str(exc).splitlines()[0]}"
        ) from None


def _invalid(name: str, reason: str) -> InvalidModule:
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    return InvalidModule(f"{name} is not a valid WebAssembly module: {' / '.join(lines)}")


def _compile_in_child(
    settings: EngineSettings, wasm: bytes, *, name: str, caps: ModuleCaps
) -> bytes:
    command = [
        sys.executable,
        "-m",
        "wgtlab.sandbox.compiler",
        json.dumps(dataclasses.asdict(settings)),
        str(caps.max_compile_memory_bytes),
        str(caps.max_compile_seconds),
    ]

    def raise_it(cap: str) -> str:
        return (
            f"if the module is trusted, raise it with WasmModule(..., caps=ModuleCaps({cap}=...)) "
            "(ModuleCaps from wgtlab.sandbox)"
        )

    try:
        proc = subprocess.run(
            command,
            input=wasm,
            capture_output=True,
            timeout=caps.max_compile_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidModule(
            f"compiling {name} took longer than max_compile_seconds="
            f"{caps.max_compile_seconds:g}; {raise_it('max_compile_seconds')}"
        ) from None
    except OSError as exc:
        raise InvalidModule(f"could not start a process to compile {name}: {exc}") from None
    if proc.returncode == 0:
        return proc.stdout
    if proc.returncode == _INVALID:
        raise _invalid(name, proc.stderr.decode("utf-8", "replace"))
    xcpu = getattr(signal, "SIGXCPU", None)
    if xcpu is not None and proc.returncode == -xcpu:
        raise InvalidModule(
            f"compiling {name} took more than max_compile_seconds="
            f"{caps.max_compile_seconds:g} of CPU time; {raise_it('max_compile_seconds')}"
        )
    # An allocation refused under RLIMIT_AS aborts the compiler ("memory allocation of N
    # bytes failed", SIGABRT).
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == -signal.SIGABRT or "memory allocation" in stderr:
        raise InvalidModule(
            f"compiling {name} needed more than max_compile_memory_bytes="
            f"{caps.max_compile_memory_bytes:,}; {raise_it('max_compile_memory_bytes')}"
        )
    lines = [line for line in stderr.splitlines() if line.strip()] or ["no message"]
    raise InvalidModule(
        f"compiling {name} failed in its child process (exit {proc.returncode}: {lines[0][:200]})"
    )


def _limit_this_process(memory: int, seconds: float) -> None:  # pragma: no cover - child
    """Cap this process's address space at what it has now plus ``memory``, and its CPU time
    (a backstop should the parent be gone: the parent's wall-clock timeout is the limit)."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            now = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (now + memory, now + memory))
        cpu = int(seconds * (os.cpu_count() or 1)) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ImportError, OSError, ValueError):  # not Linux: the parent's timeout still holds
        pass


def _child_main(argv: list[str]) -> int:  # pragma: no cover - runs in the child process
    """Compile the module on stdin under the given limits; serialized code to stdout."""
    settings, memory, seconds = json.loads(argv[0]), int(argv[1]), float(argv[2])
    engine = SandboxEngine(EngineSettings(**settings))
    wasm = sys.stdin.buffer.read()
    _limit_this_process(memory, seconds)
    try:
        module = wasmtime.Module(engine.engine, wasm)
    except wasmtime.WasmtimeError as exc:
        sys.stderr.write(str(exc))
        return _INVALID
    sys.stdout.buffer.write(module.serialize())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child_main(sys.argv[1:]))
