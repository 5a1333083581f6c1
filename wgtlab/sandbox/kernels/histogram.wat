;; wgt.kernels.histogram: counts of float64 values in equal-width bins, like numpy.histogram.
;; Input: u64 bins, then bins + 1 float64 bin edges (numpy.linspace(lo, hi, bins + 1), exactly
;; numpy.histogram's), zero padding to a multiple of 16 bytes, then the float64 values.
;; Output: bins x u64 counts. Bin i holds edges[i] <= x < edges[i + 1]; the last bin also holds
;; x == hi; values outside [lo, hi] are not counted. The bin is first estimated arithmetically,
;; then corrected against the exact edges as numpy does, so every count equals numpy's. (Both
;; corrections test the first estimate: it is never more than one bin off, so this is numpy's
;; decrement-then-increment, with the two edge loads independent of each other.)
;; Branch-free: values outside [lo, hi] go to a spare slot instead of being tested with a branch
;; (random data would mispredict it); four count tables, used in turn, keep runs of equal values
;; from stalling on one counter.
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
    (local $bins i32) (local $last i32) (local $edges i32) (local $p i32) (local $end i32)
    (local $vend i32) (local $head i32) (local $t0 i32) (local $t1 i32) (local $t2 i32)
    (local $t3 i32) (local $out i32) (local $top i32) (local $i i32) (local $e i32) (local $slots i32)
    (local $lo f64) (local $hi f64) (local $scale f64) (local $x f64)
    (if (i32.lt_u (local.get $len) (i32.const 24)) (then unreachable))
    (if (i64.gt_u (i64.load (local.get $ptr)) (i64.const 0x100000)) (then unreachable))
    (local.set $bins (i32.wrap_i64 (i64.load (local.get $ptr))))
    (if (i32.eqz (local.get $bins)) (then unreachable))
    (local.set $last (i32.sub (local.get $bins) (i32.const 1)))
    (local.set $edges (i32.add (local.get $ptr) (i32.const 8)))
    ;; header: 8 + 8 * (bins + 1) bytes, rounded up to 16
    (local.set $head (i32.and (i32.add (i32.shl (local.get $bins) (i32.const 3)) (i32.const 31))
                              (i32.const -16)))
    (if (i32.gt_u (local.get $head) (local.get $len)) (then unreachable))
    (local.set $lo (f64.load (local.get $edges)))
    (local.set $hi (f64.load (i32.add (local.get $edges) (i32.shl (local.get $bins) (i32.const 3)))))
    (local.set $scale (f64.div (f64.convert_i32_u (local.get $bins))
                               (f64.sub (local.get $hi) (local.get $lo))))
    (local.set $p (i32.add (local.get $ptr) (local.get $head)))
    (local.set $end (i32.add (local.get $p)
      (i32.and (i32.sub (local.get $len) (local.get $head)) (i32.const -8))))
    (local.set $vend (i32.add (local.get $p)
      (i32.and (i32.sub (local.get $len) (local.get $head)) (i32.const -32))))
    ;; four u32 count tables of bins + 1 slots, then the u64 output; fresh memory is zeroed
    (local.set $t0 (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 15))
                            (i32.const -16)))
    (local.set $slots (i32.shl (i32.add (local.get $bins) (i32.const 1)) (i32.const 2)))
    (local.set $t1 (i32.add (local.get $t0) (local.get $slots)))
    (local.set $t2 (i32.add (local.get $t1) (local.get $slots)))
    (local.set $t3 (i32.add (local.get $t2) (local.get $slots)))
    (local.set $out (i32.and (i32.add (i32.add (local.get $t3) (local.get $slots)) (i32.const 7))
                             (i32.const -8)))
    (local.set $top (i32.add (local.get $out) (i32.shl (local.get $bins) (i32.const 3))))
    (if (i32.gt_u (local.get $top) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $top) (i32.const 65535))
                                                     (i32.const 16))
                                          (memory.size)))
                    (i32.const -1))
          (then unreachable))))
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $x (f64.load offset=0 (local.get $p)))
        (local.set $i (i32.trunc_sat_f64_s
          (f64.mul (f64.sub (local.get $x) (local.get $lo)) (local.get $scale))))
        (local.set $i (select (local.get $i) (i32.const 0) (i32.gt_s (local.get $i) (i32.const 0))))
        (local.set $i (select (local.get $i) (local.get $last) (i32.lt_s (local.get $i) (local.get $last))))
        (local.set $e (i32.add (local.get $edges) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $i (i32.add (i32.sub (local.get $i)
                                        (f64.lt (local.get $x) (f64.load (local.get $e))))
          (i32.and (f64.ge (local.get $x) (f64.load offset=8 (local.get $e)))
                   (i32.ne (local.get $i) (local.get $last)))))
        (local.set $i (select (local.get $i) (local.get $bins)
          (i32.and (f64.ge (local.get $x) (local.get $lo)) (f64.le (local.get $x) (local.get $hi)))))
        (local.set $e (i32.add (local.get $t0) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $e) (i32.add (i32.load (local.get $e)) (i32.const 1)))
        (local.set $x (f64.load offset=8 (local.get $p)))
        (local.set $i (i32.trunc_sat_f64_s
          (f64.mul (f64.sub (local.get $x) (local.get $lo)) (local.get $scale))))
        (local.set $i (select (local.get $i) (i32.const 0) (i32.gt_s (local.get $i) (i32.const 0))))
        (local.set $i (select (local.get $i) (local.get $last) (i32.lt_s (local.get $i) (local.get $last))))
        (local.set $e (i32.add (local.get $edges) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $i (i32.add (i32.sub (local.get $i)
                                        (f64.lt (local.get $x) (f64.load (local.get $e))))
          (i32.and (f64.ge (local.get $x) (f64.load offset=8 (local.get $e)))
                   (i32.ne (local.get $i) (local.get $last)))))
        (local.set $i (select (local.get $i) (local.get $bins)
          (i32.and (f64.ge (local.get $x) (local.get $lo)) (f64.le (local.get $x) (local.get $hi)))))
        (local.set $e (i32.add (local.get $t1) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $e) (i32.add (i32.load (local.get $e)) (i32.const 1)))
        (local.set $x (f64.load offset=16 (local.get $p)))
        (local.set $i (i32.trunc_sat_f64_s
          (f64.mul (f64.sub (local.get $x) (local.get $lo)) (local.get $scale))))
        (local.set $i (select (local.get $i) (i32.const 0) (i32.gt_s (local.get $i) (i32.const 0))))
        (local.set $i (select (local.get $i) (local.get $last) (i32.lt_s (local.get $i) (local.get $last))))
        (local.set $e (i32.add (local.get $edges) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $i (i32.add (i32.sub (local.get $i)
                                        (f64.lt (local.get $x) (f64.load (local.get $e))))
          (i32.and (f64.ge (local.get $x) (f64.load offset=8 (local.get $e)))
                   (i32.ne (local.get $i) (local.get $last)))))
        (local.set $i (select (local.get $i) (local.get $bins)
          (i32.and (f64.ge (local.get $x) (local.get $lo)) (f64.le (local.get $x) (local.get $hi)))))
        (local.set $e (i32.add (local.get $t2) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $e) (i32.add (i32.load (local.get $e)) (i32.const 1)))
        (local.set $x (f64.load offset=24 (local.get $p)))
        (local.set $i (i32.trunc_sat_f64_s
          (f64.mul (f64.sub (local.get $x) (local.get $lo)) (local.get $scale))))
        (local.set $i (select (local.get $i) (i32.const 0) (i32.gt_s (local.get $i) (i32.const 0))))
        (local.set $i (select (local.get $i) (local.get $last) (i32.lt_s (local.get $i) (local.get $last))))
        (local.set $e (i32.add (local.get $edges) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $i (i32.add (i32.sub (local.get $i)
                                        (f64.lt (local.get $x) (f64.load (local.get $e))))
          (i32.and (f64.ge (local.get $x) (f64.load offset=8 (local.get $e)))
                   (i32.ne (local.get $i) (local.get $last)))))
        (local.set $i (select (local.get $i) (local.get $bins)
          (i32.and (f64.ge (local.get $x) (local.get $lo)) (f64.le (local.get $x) (local.get $hi)))))
        (local.set $e (i32.add (local.get $t3) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $e) (i32.add (i32.load (local.get $e)) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $x (f64.load offset=0 (local.get $p)))
        (local.set $i (i32.trunc_sat_f64_s
          (f64.mul (f64.sub (local.get $x) (local.get $lo)) (local.get $scale))))
        (local.set $i (select (local.get $i) (i32.const 0) (i32.gt_s (local.get $i) (i32.const 0))))
        (local.set $i (select (local.get $i) (local.get $last) (i32.lt_s (local.get $i) (local.get $last))))
        (local.set $e (i32.add (local.get $edges) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $i (i32.add (i32.sub (local.get $i)
                                        (f64.lt (local.get $x) (f64.load (local.get $e))))
          (i32.and (f64.ge (local.get $x) (f64.load offset=8 (local.get $e)))
                   (i32.ne (local.get $i) (local.get $last)))))
        (local.set $i (select (local.get $i) (local.get $bins)
          (i32.and (f64.ge (local.get $x) (local.get $lo)) (f64.le (local.get $x) (local.get $hi)))))
        (local.set $e (i32.add (local.get $t0) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $e) (i32.add (i32.load (local.get $e)) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (local.set $i (i32.const 0))
    (block $done
      (loop $merge
        (br_if $done (i32.ge_u (local.get $i) (local.get $bins)))
        (local.set $e (i32.shl (local.get $i) (i32.const 2)))
        (i64.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 3)))
          (i64.add
            (i64.add (i64.load32_u (i32.add (local.get $t0) (local.get $e)))
                     (i64.load32_u (i32.add (local.get $t1) (local.get $e))))
            (i64.add (i64.load32_u (i32.add (local.get $t2) (local.get $e)))
                     (i64.load32_u (i32.add (local.get $t3) (local.get $e))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $merge)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.shl (local.get $bins) (i32.const 3))))))
