;; wgt.kernels.sum: the sum of little-endian float64 values, with its rounding error kept.
;; Output (144 bytes, 18 x f64): 8 running sums (4 accumulators x 2 SIMD lanes), their 8 error
;; terms, then the scalar tail's sum and error term. Each step is error-free: Fast2Sum after
;; ordering the two addends by magnitude (Neumaier's method, with the ordering done by integer
;; compares and bit selects, which cost less than TwoSum's extra float operations). The host adds
;; all 18 with math.fsum, so only the rounding of the error terms' own sums is lost. Trailing
;; bytes that do not form a whole float64 are ignored.
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
    (local $p i32) (local $vend i32) (local $end i32)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local $x v128)
    (local $m v128) (local $big v128) (local $small v128) (local $abs v128)
    (local $ss f64) (local $sc f64) (local $xs f64) (local $ts f64) (local $zs f64)
    (local.set $abs (i64x2.splat (i64.const 0x7fffffffffffffff)))
    (local.set $p (local.get $ptr))
    (local.set $vend (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -64))))
    (local.set $end (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -8))))
    ;; 8 values per turn: four independent chains keep the adder pipeline full.
    (block $done
      (loop $turn
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $x (v128.load offset=0 (local.get $p)))
        (local.set $m (i64x2.gt_s (v128.and (local.get $x) (local.get $abs))
                                  (v128.and (local.get $s0) (local.get $abs))))
        (local.set $big (v128.bitselect (local.get $x) (local.get $s0) (local.get $m)))
        (local.set $small (v128.bitselect (local.get $s0) (local.get $x) (local.get $m)))
        (local.set $s0 (f64x2.add (local.get $big) (local.get $small)))
        (local.set $c0 (f64x2.add (local.get $c0)
          (f64x2.add (f64x2.sub (local.get $big) (local.get $s0)) (local.get $small))))
        (local.set $x (v128.load offset=16 (local.get $p)))
        (local.set $m (i64x2.gt_s (v128.and (local.get $x) (local.get $abs))
                                  (v128.and (local.get $s1) (local.get $abs))))
        (local.set $big (v128.bitselect (local.get $x) (local.get $s1) (local.get $m)))
        (local.set $small (v128.bitselect (local.get $s1) (local.get $x) (local.get $m)))
        (local.set $s1 (f64x2.add (local.get $big) (local.get $small)))
        (local.set $c1 (f64x2.add (local.get $c1)
          (f64x2.add (f64x2.sub (local.get $big) (local.get $s1)) (local.get $small))))
        (local.set $x (v128.load offset=32 (local.get $p)))
        (local.set $m (i64x2.gt_s (v128.and (local.get $x) (local.get $abs))
                                  (v128.and (local.get $s2) (local.get $abs))))
        (local.set $big (v128.bitselect (local.get $x) (local.get $s2) (local.get $m)))
        (local.set $small (v128.bitselect (local.get $s2) (local.get $x) (local.get $m)))
        (local.set $s2 (f64x2.add (local.get $big) (local.get $small)))
        (local.set $c2 (f64x2.add (local.get $c2)
          (f64x2.add (f64x2.sub (local.get $big) (local.get $s2)) (local.get $small))))
        (local.set $x (v128.load offset=48 (local.get $p)))
        (local.set $m (i64x2.gt_s (v128.and (local.get $x) (local.get $abs))
                                  (v128.and (local.get $s3) (local.get $abs))))
        (local.set $big (v128.bitselect (local.get $x) (local.get $s3) (local.get $m)))
        (local.set $small (v128.bitselect (local.get $s3) (local.get $x) (local.get $m)))
        (local.set $s3 (f64x2.add (local.get $big) (local.get $small)))
        (local.set $c3 (f64x2.add (local.get $c3)
          (f64x2.add (f64x2.sub (local.get $big) (local.get $s3)) (local.get $small))))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (br $turn)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $xs (f64.load (local.get $p)))
        (local.set $ts (f64.add (local.get $ss) (local.get $xs)))
        (local.set $zs (f64.sub (local.get $ts) (local.get $ss)))
        (local.set $sc (f64.add (local.get $sc)
          (f64.add (f64.sub (local.get $ss) (f64.sub (local.get $ts) (local.get $zs)))
                   (f64.sub (local.get $xs) (local.get $zs)))))
        (local.set $ss (local.get $ts))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $tail)))
    (v128.store offset=0 (i32.const 0) (local.get $s0))
    (v128.store offset=16 (i32.const 0) (local.get $s1))
    (v128.store offset=32 (i32.const 0) (local.get $s2))
    (v128.store offset=48 (i32.const 0) (local.get $s3))
    (v128.store offset=64 (i32.const 0) (local.get $c0))
    (v128.store offset=80 (i32.const 0) (local.get $c1))
    (v128.store offset=96 (i32.const 0) (local.get $c2))
    (v128.store offset=112 (i32.const 0) (local.get $c3))
    (f64.store offset=128 (i32.const 0) (local.get $ss))
    (f64.store offset=136 (i32.const 0) (local.get $sc))
    (i64.const 144)))
