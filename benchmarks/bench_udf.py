"""Benchmarks for @wgt.udf: a group-by over a DataFrame and fuel per row (typed columns, and the
JSON encoding they replaced, in the same run), per-chunk overhead, a loop-heavy function against
native CPython, and a cached start in a new process. Each figure is printed with its target."""

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

OVERHEAD_TARGET_MS = 1.2
LOOP_TARGET = 3.0  # x native CPython
GROUP_BY_TARGET = 1.6  # x native CPython
FUEL_PER_ROW_TARGET = 800
GROUP_BY_ROWS = 1_000_000
GROUP_BY_CHUNK_ROWS = 100_000
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


def total_by_key(rows):
    """A group-by over two columns: the sum of "value" per "key"."""
    totals = {}
    for row in rows:
        key = row["key"]
        totals[key] = totals.get(key, 0.0) + row["value"]
    return totals


def zero(rows):
    return 0


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
        f"{whole / OVERHEAD_TARGET_MS:.2f} of the {OVERHEAD_TARGET_MS} ms target "
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


def _frame():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(16)
    keys = np.array([f"k{i:02d}" for i in range(50)], dtype=object)
    return pd.DataFrame(
        {"key": keys[rng.integers(0, 50, GROUP_BY_ROWS)], "value": rng.random(GROUP_BY_ROWS)}
    )


def _json_payload(chunk) -> bytes:
    from wgtlab.sandbox.python.chunks import chunk_json

    return chunk_json(chunk)


def group_by() -> bool:
    """Both sides start from the DataFrame: natively, its rows as dicts then the loop; in the
    sandbox, encode + run each 100k-row chunk in a fresh instance (the loop alone is shown too)."""
    frame = _frame()
    kernel = wgt.udf(total_by_key)
    sandbox = wgt.Sandbox(wgt.ResourceLimits(max_cpu_cycles=1 << 50, max_execution_time_ms=600_000))
    chunks = [
        frame.iloc[i : i + GROUP_BY_CHUNK_ROWS] for i in range(0, len(frame), GROUP_BY_CHUNK_ROWS)
    ]
    rows = frame.to_dict("records")
    loop = min(timed(lambda: total_by_key(rows), 3))
    native = min(timed(lambda: total_by_key(frame.to_dict("records")), 3))

    def boxed(encode: Callable[[object], bytes]) -> float:
        def job() -> None:
            for chunk in chunks:
                kernel.execute(sandbox, encode(chunk))

        return min(timed(job, 2))

    before, after = boxed(_json_payload), boxed(kernel.encode)
    ok = after / native <= GROUP_BY_TARGET
    print(
        f"group-by UDF (sum per key, two columns, {GROUP_BY_ROWS:,} rows in {len(chunks)} "
        f"chunks, rows='records'): native CPython {native:.3f} s (to_dict + loop; the loop "
        f"alone {loop:.3f} s); sandboxed with JSON chunks {before:.3f} s ({before / native:.2f}x), "
        f"with typed columns {after:.3f} s ({after / loop:.1f}x the bare loop); ratio "
        f"{after / native:.2f}x native (target <= {GROUP_BY_TARGET}x) {verdict(ok)}"
    )
    return ok


def fuel_per_row() -> bool:
    chunk = _frame().iloc[:GROUP_BY_CHUNK_ROWS]
    sandbox = wgt.Sandbox(wgt.ResourceLimits(max_cpu_cycles=1 << 50, max_execution_time_ms=600_000))
    records, columns = wgt.udf(zero), wgt.udf(zero, rows="columns")
    n = len(chunk)
    before = records.execute(sandbox, _json_payload(chunk)).fuel_used / n
    after_records = records.execute(sandbox, records.encode(chunk)).fuel_used / n
    after_columns = columns.execute(sandbox, columns.encode(chunk)).fuel_used / n
    series = wgt.udf(zero)
    values = chunk["value"]
    series_before = series.execute(sandbox, _json_payload(values)).fuel_used / n
    series_after = series.execute(sandbox, series.encode(values)).fuel_used / n
    ok = after_columns <= FUEL_PER_ROW_TARGET
    print(
        f"fuel per row of a UDF returning 0 ({n:,}-row chunks of a str and a float column): "
        f"records as JSON {before:,.0f}, as typed columns {after_records:,.0f}; rows='columns' "
        f"{after_columns:,.0f}; a float Series {series_before:,.0f} as JSON, "
        f"{series_after:,.0f} as a column; ratio {after_columns / FUEL_PER_ROW_TARGET:.2f} of the "
        f"{FUEL_PER_ROW_TARGET} target (rows='columns') {verdict(ok)}"
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
    results = [group_by(), fuel_per_row(), per_chunk_overhead(), loop_heavy(), cached_start()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
