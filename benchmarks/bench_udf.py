"""Benchmarks for @wgt.udf: per-chunk overhead, a loop-heavy function against native CPython, and
a cached start in a new process. Each figure is printed with its ratio to the target."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

import wasmtime  # noqa: E402

import wgtlab as wgt  # noqa: E402
from wgtlab.sandbox.engine import get_engine  # noqa: E402
from wgtlab.sandbox.python.component import build_runner, runner_component  # noqa: E402
from wgtlab.sandbox.python.task import run_in_guest  # noqa: E402
from wgtlab.sandbox.wasi import component_linker  # noqa: E402

OVERHEAD_TARGET_MS = 2.0
LOOP_TARGET = 3.5  # x native CPython
START_TARGET_S = 1.0
TRIVIAL = "def f(rows):\n    return 1\n"


def collatz_steps(rows):
    """Longest Collatz chain among the numbers given: pure-Python integer loops."""
    best = 0
    for start in rows:
        n, steps = start, 0
        while n != 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            steps += 1
        best = max(best, steps)
    return best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def per_chunk_overhead() -> bool:
    limits = wgt.ResourceLimits()
    engine = get_engine(limits.max_stack_bytes)
    component = runner_component(engine)

    def task() -> None:
        run_in_guest(
            limits,
            source=TRIVIAL,
            name="f",
            seed=1,
            input_kind="json",
            output_kind="json",
            chunk="[]",
        )

    def instance_only() -> None:
        store = wasmtime.Store(engine.engine)
        store.set_fuel(limits.max_cpu_cycles)
        store.set_epoch_deadline(engine.deadline_ticks(limits.max_execution_time_ms))
        component_linker(engine).instantiate(store, component)
        store.close()

    timed(task, 20)  # warm up page tables and caches
    whole = statistics.median(timed(task, 300)) * 1e3
    instantiate = statistics.median(timed(instance_only, 300)) * 1e3
    ok = whole <= OVERHEAD_TARGET_MS
    print(
        f"per-chunk overhead (fresh Store + instance + trivial call, median of 300): "
        f"{whole:.2f} ms, of which Store + instance {instantiate:.2f} ms; ratio "
        f"{whole / OVERHEAD_TARGET_MS:.2f} of the {OVERHEAD_TARGET_MS:.0f} ms target "
        f"{verdict(ok)}"
    )
    return ok


def loop_heavy() -> bool:
    kernel = wgt.udf(collatz_steps)
    rows = list(range(1, 60_001))
    payload = kernel.encode(rows)
    limits = wgt.ResourceLimits(max_cpu_cycles=1 << 50, max_execution_time_ms=600_000)
    sandbox = wgt.Sandbox(limits)
    native_value = collatz_steps(rows)
    assert kernel.decode(kernel.execute(sandbox, payload).output) == native_value
    native = min(timed(lambda: collatz_steps(rows), 3))
    boxed = min(timed(lambda: kernel.execute(sandbox, payload), 3))
    ratio = boxed / native
    ok = ratio <= LOOP_TARGET
    print(
        f"loop-heavy function (Collatz chains of 1..60,000; fuel + epoch on): native CPython "
        f"{native:.3f} s, in the sandbox {boxed:.3f} s; ratio {ratio:.2f}x native (target <= "
        f"{LOOP_TARGET}x) {verdict(ok)}"
    )
    return ok


CHILD = """
import time
t0 = time.perf_counter()
import wgtlab as wgt

@wgt.udf
def total(rows):
    return sum(rows)

value = total.run([1, 2, 39])
elapsed = time.perf_counter() - t0
assert value == 42, value
print(f"{elapsed:.4f}")
"""


def cached_start() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "first_udf.py"
        script.write_text(textwrap.dedent(CHILD))
        walls, insides = [], []
        for _ in range(3):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, str(script)],
                cwd=REPO,
                env={"PYTHONPATH": str(REPO), **_environ()},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            walls.append(time.perf_counter() - start)
            insides.append(float(out.strip()))
    wall, inside = min(walls), min(insides)
    ok = wall <= START_TARGET_S
    print(
        f"cached start in a new process (python start, import wgtlab, load the compiled runner, "
        f"first result): {wall:.2f} s wall, {inside:.2f} s of it after interpreter start; ratio "
        f"{wall / START_TARGET_S:.2f} of the {START_TARGET_S:.0f} s target {verdict(ok)}"
    )
    return ok


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main() -> int:
    timings = build_runner()  # the figures below are for an already built and cached runner
    print(f"runner ready ({sum(timings.values()):.1f} s: built or loaded from the disk cache)")
    results = [per_chunk_overhead(), loop_heavy(), cached_start()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
