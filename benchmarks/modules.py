"""WAT kernels shared by the job-level benchmarks (bench_jobs.py, bench_dask.py)."""

from __future__ import annotations

# Returns 1 byte at once: measures everything around the sandboxed call.
TRIVIAL = """
(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "wgt_run") (param i32 i32) (result i64) (i64.const 4294967296)))
"""

# Fixed work per chunk: ~20 M loop iterations, whatever the chunk holds.
SPIN = """
(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "wgt_run") (param i32 i32) (result i64) (local $i i32) (local $acc i32)
    (local.set $i (i32.const 20000000))
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $i) (local.get $i))))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $l (local.get $i)))
    (i32.store (i32.const 0) (local.get $acc))
    (i64.const 4)))
"""
