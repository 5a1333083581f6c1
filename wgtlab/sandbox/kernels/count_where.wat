;; wgt.kernels.count_where: how many float64 values compare true against a threshold.
;; Input: a 16-byte header (u64 op: 0 <, 1 <=, 2 >, 3 >=, 4 ==, 5 !=; f64 threshold), then the
;; little-endian float64 values. Output (8 bytes): the u64 count. Comparisons are IEEE 754 ones
;; (a NaN compares false except with !=; the host drops NaN before sending).
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
    (local $p i32) (local $vend i32) (local $end i32) (local $op i64)
    (local $t v128) (local $ts f64) (local $acc0 v128) (local $acc1 v128) (local $n i64)
    (if (i32.lt_u (local.get $len) (i32.const 16)) (then unreachable))  ;; no header
    (local.set $op (i64.load (local.get $ptr)))
    (if (i64.gt_u (local.get $op) (i64.const 5)) (then unreachable))
    (local.set $ts (f64.load offset=8 (local.get $ptr)))
    (local.set $t (f64x2.splat (local.get $ts)))
    (local.set $p (i32.add (local.get $ptr) (i32.const 16)))
    (local.set $len (i32.sub (local.get $len) (i32.const 16)))
    (local.set $vend (i32.add (local.get $p) (i32.and (local.get $len) (i32.const -32))))
    (local.set $end (i32.add (local.get $p) (i32.and (local.get $len) (i32.const -8))))
    (block $count
    (block $op_ne
    (block $op_eq
    (block $op_ge
    (block $op_gt
    (block $op_le
    (block $op_lt
      (br_table $op_lt $op_le $op_gt $op_ge $op_eq $op_ne (i32.wrap_i64 (local.get $op)))
    ) ;; x < threshold
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $acc0 (i64x2.sub (local.get $acc0)
          (f64x2.lt (v128.load offset=0 (local.get $p)) (local.get $t))))
        (local.set $acc1 (i64x2.sub (local.get $acc1)
          (f64x2.lt (v128.load offset=16 (local.get $p)) (local.get $t))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i64.add (local.get $n)
          (i64.extend_i32_u (f64.lt (f64.load (local.get $p)) (local.get $ts)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (br $count)
    ) ;; x <= threshold
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $acc0 (i64x2.sub (local.get $acc0)
          (f64x2.le (v128.load offset=0 (local.get $p)) (local.get $t))))
        (local.set $acc1 (i64x2.sub (local.get $acc1)
          (f64x2.le (v128.load offset=16 (local.get $p)) (local.get $t))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i64.add (local.get $n)
          (i64.extend_i32_u (f64.le (f64.load (local.get $p)) (local.get $ts)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (br $count)
    ) ;; x > threshold
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $acc0 (i64x2.sub (local.get $acc0)
          (f64x2.gt (v128.load offset=0 (local.get $p)) (local.get $t))))
        (local.set $acc1 (i64x2.sub (local.get $acc1)
          (f64x2.gt (v128.load offset=16 (local.get $p)) (local.get $t))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i64.add (local.get $n)
          (i64.extend_i32_u (f64.gt (f64.load (local.get $p)) (local.get $ts)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (br $count)
    ) ;; x >= threshold
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $acc0 (i64x2.sub (local.get $acc0)
          (f64x2.ge (v128.load offset=0 (local.get $p)) (local.get $t))))
        (local.set $acc1 (i64x2.sub (local.get $acc1)
          (f64x2.ge (v128.load offset=16 (local.get $p)) (local.get $t))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i64.add (local.get $n)
          (i64.extend_i32_u (f64.ge (f64.load (local.get $p)) (local.get $ts)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (br $count)
    ) ;; x == threshold
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $acc0 (i64x2.sub (local.get $acc0)
          (f64x2.eq (v128.load offset=0 (local.get $p)) (local.get $t))))
        (local.set $acc1 (i64x2.sub (local.get $acc1)
          (f64x2.eq (v128.load offset=16 (local.get $p)) (local.get $t))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i64.add (local.get $n)
          (i64.extend_i32_u (f64.eq (f64.load (local.get $p)) (local.get $ts)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (br $count)
    ) ;; x != threshold
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $acc0 (i64x2.sub (local.get $acc0)
          (f64x2.ne (v128.load offset=0 (local.get $p)) (local.get $t))))
        (local.set $acc1 (i64x2.sub (local.get $acc1)
          (f64x2.ne (v128.load offset=16 (local.get $p)) (local.get $t))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i64.add (local.get $n)
          (i64.extend_i32_u (f64.ne (f64.load (local.get $p)) (local.get $ts)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (br $count)
    )
    (local.set $acc0 (i64x2.add (local.get $acc0) (local.get $acc1)))
    (i64.store (i32.const 0) (i64.add (local.get $n)
      (i64.add (i64x2.extract_lane 0 (local.get $acc0)) (i64x2.extract_lane 1 (local.get $acc0)))))
    (i64.const 8)))
