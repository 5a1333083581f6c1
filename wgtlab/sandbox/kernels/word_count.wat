;; wgt.kernels.word_count: words in UTF-8 text, a word being a maximal run of bytes that are
;; not ASCII whitespace (space, \t, \n, \v, \f, \r: exactly what Python's bytes.split() splits
;; on). Other Unicode spaces (U+00A0, U+2003, ...) do not separate words; UTF-8 multi-byte
;; characters never contain these bytes, so a chunk may start or end mid-character.
;; Output (24 bytes): u64 words started in this chunk, u64 chunk length, u32 1 if the first byte is
;; inside a word, u32 1 if the last byte is; the host merges a word cut by a chunk boundary.
;; 16 bytes per step: a word starts where a non-space byte follows a space byte.
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

  (func $space (param $b i32) (result i32)
    (i32.or (i32.eq (local.get $b) (i32.const 32))
            (i32.lt_u (i32.sub (local.get $b) (i32.const 9)) (i32.const 5))))
  (func (export "wgt_run") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $vend i32) (local $end i32) (local $words i64)
    (local $v v128) (local $sp v128) (local $prev v128) (local $prev_space i32) (local $b i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $vend (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -16))))
    (local.set $prev (v128.const i8x16 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1))
    (block $done
      (loop $step
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $sp (v128.or
          (i8x16.eq (local.get $v) (i8x16.splat (i32.const 32)))
          (i8x16.lt_u (i8x16.sub (local.get $v) (i8x16.splat (i32.const 9)))
                      (i8x16.splat (i32.const 5)))))
        ;; word starts: byte is not a space and the byte before it is
        (local.set $words (i64.add (local.get $words) (i64.extend_i32_u (i32.popcnt
          (i8x16.bitmask (v128.andnot
            (i8x16.shuffle 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
                           (local.get $prev) (local.get $sp))
            (local.get $sp)))))))
        (local.set $prev (local.get $sp))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $step)))
    (local.set $prev_space (i32.ne (i8x16.extract_lane_u 15 (local.get $prev)) (i32.const 0)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (call $space (i32.load8_u (local.get $p))))
        (local.set $words (i64.add (local.get $words)
          (i64.extend_i32_u (i32.and (local.get $prev_space) (i32.eqz (local.get $b))))))
        (local.set $prev_space (local.get $b))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $tail)))
    (i64.store offset=0 (i32.const 0) (local.get $words))
    (i64.store offset=8 (i32.const 0) (i64.extend_i32_u (local.get $len)))
    (if (local.get $len)
      (then
        (i32.store offset=16 (i32.const 0)
          (i32.eqz (call $space (i32.load8_u (local.get $ptr)))))
        (i32.store offset=20 (i32.const 0)
          (i32.eqz (call $space (i32.load8_u (i32.sub (local.get $end) (i32.const 1))))))))
    (i64.const 24)))
