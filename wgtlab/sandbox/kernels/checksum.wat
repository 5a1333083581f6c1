;; wgt.kernels.checksum: Adler-32 (RFC 1950) of the input bytes, equal to zlib.adler32.
;; Output (16 bytes): u32 Adler-32 of this chunk, u32 0, u64 chunk length; the host joins chunks
;; in order with zlib's adler32_combine, so the result is the checksum of the whole input.
;; Sums are reduced modulo 65521 only every 5552 bytes (zlib's NMAX: the most bytes after which
;; b cannot overflow 32 bits).
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
    (local $p i32) (local $end i32) (local $block_end i32) (local $fast_end i32)
    (local $a i32) (local $b i32)
    (local.set $a (i32.const 1))
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $block
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $block_end (select (local.get $end) (i32.add (local.get $p) (i32.const 5552))
          (i32.lt_u (i32.sub (local.get $end) (local.get $p)) (i32.const 5552))))
        (local.set $fast_end (i32.sub (local.get $block_end)
          (i32.and (i32.sub (local.get $block_end) (local.get $p)) (i32.const 7))))
        (block $fast_done
          (loop $eight
            (br_if $fast_done (i32.ge_u (local.get $p) (local.get $fast_end)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=0 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=1 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=2 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=3 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=4 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=5 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=6 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u offset=7 (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $p (i32.add (local.get $p) (i32.const 8)))
            (br $eight)))
        (block $slow_done
          (loop $one
            (br_if $slow_done (i32.ge_u (local.get $p) (local.get $block_end)))
            (local.set $a (i32.add (local.get $a) (i32.load8_u (local.get $p))))
            (local.set $b (i32.add (local.get $b) (local.get $a)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $one)))
        (local.set $a (i32.rem_u (local.get $a) (i32.const 65521)))
        (local.set $b (i32.rem_u (local.get $b) (i32.const 65521)))
        (br $block)))
    (i32.store offset=0 (i32.const 0)
      (i32.or (i32.shl (local.get $b) (i32.const 16)) (local.get $a)))
    (i32.store offset=4 (i32.const 0) (i32.const 0))
    (i64.store offset=8 (i32.const 0) (i64.extend_i32_u (local.get $len)))
    (i64.const 16)))
