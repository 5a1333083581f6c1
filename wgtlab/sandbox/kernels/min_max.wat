;; wgt.kernels.min_max: the smallest and largest of little-endian float64 values.
;; Output (24 bytes): f64 min, f64 max, u64 count of values (0: min = +inf, max = -inf, and the
;; host ignores the chunk). A NaN in the input makes both NaN (the host drops NaN before sending).
(module
  (memory (export "memory") 1)
  ;; ABI v1. The first 64 KiB page holds results; the input starts at 64 KiB (page-aligned, so
  ;; SIMD loads are aligned). A refused memory.grow answers -1, which the host reports as
  ;; MemoryLimitExceeded.
  (func (export "wgt_alloc") (param $n i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.wrap_i64 (i64.shr_u (i64.add (i64.extend_i32_u (local.get $n)) (i64.const 131071))
                               (i64.const 16))))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const -1))))))
    (i32.const 65536))

  (func (export "wgt_run") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $vend i32) (local $end i32) (local $x v128)
    (local $lo0 v128) (local $lo1 v128) (local $lo2 v128) (local $lo3 v128)
    (local $hi0 v128) (local $hi1 v128) (local $hi2 v128) (local $hi3 v128)
    (local $lo f64) (local $hi f64) (local $xs f64)
    (local.set $lo0 (f64x2.splat (f64.const inf)))
    (local.set $hi0 (f64x2.splat (f64.const -inf)))
    (local.set $lo1 (f64x2.splat (f64.const inf)))
    (local.set $hi1 (f64x2.splat (f64.const -inf)))
    (local.set $lo2 (f64x2.splat (f64.const inf)))
    (local.set $hi2 (f64x2.splat (f64.const -inf)))
    (local.set $lo3 (f64x2.splat (f64.const inf)))
    (local.set $hi3 (f64x2.splat (f64.const -inf)))
    (local.set $p (local.get $ptr))
    (local.set $vend (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -64))))
    (local.set $end (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -8))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $x (v128.load offset=0 (local.get $p)))
        (local.set $lo0 (f64x2.min (local.get $lo0) (local.get $x)))
        (local.set $hi0 (f64x2.max (local.get $hi0) (local.get $x)))
        (local.set $x (v128.load offset=16 (local.get $p)))
        (local.set $lo1 (f64x2.min (local.get $lo1) (local.get $x)))
        (local.set $hi1 (f64x2.max (local.get $hi1) (local.get $x)))
        (local.set $x (v128.load offset=32 (local.get $p)))
        (local.set $lo2 (f64x2.min (local.get $lo2) (local.get $x)))
        (local.set $hi2 (f64x2.max (local.get $hi2) (local.get $x)))
        (local.set $x (v128.load offset=48 (local.get $p)))
        (local.set $lo3 (f64x2.min (local.get $lo3) (local.get $x)))
        (local.set $hi3 (f64x2.max (local.get $hi3) (local.get $x)))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (br $turn)))
    (local.set $lo0 (f64x2.min (f64x2.min (local.get $lo0) (local.get $lo1))
                               (f64x2.min (local.get $lo2) (local.get $lo3))))
    (local.set $hi0 (f64x2.max (f64x2.max (local.get $hi0) (local.get $hi1))
                               (f64x2.max (local.get $hi2) (local.get $hi3))))
    (local.set $lo (f64.min (f64x2.extract_lane 0 (local.get $lo0))
                            (f64x2.extract_lane 1 (local.get $lo0))))
    (local.set $hi (f64.max (f64x2.extract_lane 0 (local.get $hi0))
                            (f64x2.extract_lane 1 (local.get $hi0))))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $xs (f64.load (local.get $p)))
        (local.set $lo (f64.min (local.get $lo) (local.get $xs)))
        (local.set $hi (f64.max (local.get $hi) (local.get $xs)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (f64.store offset=0 (i32.const 0) (local.get $lo))
    (f64.store offset=8 (i32.const 0) (local.get $hi))
    (i64.store offset=16 (i32.const 0) (i64.extend_i32_u (i32.shr_u (local.get $len) (i32.const 3))))
    (i64.const 24)))
