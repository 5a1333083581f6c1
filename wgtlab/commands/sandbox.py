"""``wgtlab sandbox run MODULE --input FILE``: one ABI v1 task, with its output and usage figures.

A module the sandbox refuses or stops exits with status 1 and the error's message (the CLI frame
prints WgtErrors); usage figures go to stderr so stdout carries only the output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from wgtlab import defaults
from wgtlab.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    sandbox = subparsers.add_parser(
        "sandbox",
        help="run a WebAssembly module in the sandbox",
        description="Run WebAssembly modules (ABI v1) under wgtlab's resource limits.",
    )
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    run = commands.add_parser(
        "run",
        help="run MODULE over the bytes of an input file",
        description=(
            "Run MODULE (.wasm or .wat, exporting memory, wgt_alloc and wgt_run) over the bytes "
            "of FILE. The output goes to stdout (or -o FILE); fuel, time and memory used go to "
            "stderr."
        ),
    )
    run.add_argument("module", metavar="MODULE", help="a .wasm or .wat file")
    run.add_argument(
        "--input", "-i", metavar="FILE", help="input bytes ('-' for stdin; default: none)"
    )
    run.add_argument("--output", "-o", metavar="FILE", help="write the output here")
    run.add_argument(
        "--fuel",
        type=int,
        default=defaults.MAX_CPU_CYCLES,
        help="CPU budget in wasmtime fuel (default %(default)s)",
    )
    run.add_argument(
        "--timeout-ms",
        type=int,
        default=defaults.MAX_EXECUTION_TIME_MS,
        help="wall-clock limit (default %(default)s)",
    )
    run.add_argument(
        "--memory-mb",
        type=int,
        default=defaults.MAX_MEMORY_BYTES >> 20,
        help="linear memory limit in MiB (default %(default)s)",
    )
    run.set_defaults(handler=run_module)


def run_module(args: argparse.Namespace) -> int:
    from wgtlab.sandbox import ResourceLimits, Sandbox, WasmModule

    try:
        limits = ResourceLimits(
            max_cpu_cycles=args.fuel,
            max_execution_time_ms=args.timeout_ms,
            max_memory_bytes=args.memory_mb << 20,
        )
    except ValueError as exc:
        raise ConfigError(str(exc).replace("ResourceLimits.", "limit ")) from None
    if args.output:
        _check_output_directory(args.output)  # before the run, not after it
    module = WasmModule.from_file(args.module)
    data = _read_input(args.input)
    result = Sandbox(limits).run(module, data)

    if args.output:
        _write_output(args.output, result.output)
    else:
        sys.stdout.buffer.write(result.output)
        sys.stdout.buffer.flush()
    err = sys.stderr
    if result.stdout:
        err.write("--- module stdout ---\n" + result.stdout.decode("utf-8", "replace") + "\n")
    if result.stderr:
        err.write("--- module stderr ---\n" + result.stderr.decode("utf-8", "replace") + "\n")
    err.write(
        f"{module.name}: {len(data):,} bytes in, {len(result.output):,} bytes out"
        f"{' -> ' + args.output if args.output else ''}\n"
        f"  output sha256 {result.output_sha256}\n"
        f"  fuel used     {result.fuel_used:,} of {limits.max_cpu_cycles:,}\n"
        f"  wall time     {result.wall_ms:.3f} ms of {limits.max_execution_time_ms:,} ms\n"
        f"  memory        {result.memory_bytes:,} bytes of {limits.max_memory_bytes:,}\n"
        f"  module sha256 {module.digest}\n"
    )
    return 0


def _read_input(name: str | None) -> bytes:
    if name is None:
        return b""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read input file {name}: {exc.strerror}") from None


def _check_output_directory(name: str) -> None:
    parent = os.path.dirname(name) or "."
    if not os.path.isdir(parent):
        problem = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ConfigError(
            f"cannot write the output to {name!r}: its directory {parent!r} {problem}; create "
            "that directory first, or choose an output path in an existing one"
        )


def _write_output(name: str, output: bytes) -> None:
    """Write ``output`` to ``name`` whole or not at all: a temporary file, then a rename (a
    device or pipe such as /dev/stdout is written directly)."""
    _check_output_directory(name)  # it may have gone while the module ran
    special = os.path.exists(name) and not os.path.isfile(name) and not os.path.isdir(name)
    partial = name if special else f"{name}.partial"
    try:
        with open(partial, "wb") as f:
            f.write(output)
        if not special:
            os.replace(partial, name)
    except BaseException as exc:
        if not special:
            with contextlib.suppress(OSError):
                os.unlink(partial)
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"cannot write the output to {name!r}: {reason}") from None
        raise
