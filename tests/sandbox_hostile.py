"""WAT modules for the sandbox tests: a well-behaved echo kernel and one module per misbehaviour.

Each hostile module is real WebAssembly doing the bad thing for real; the tests assert which
typed error the sandbox turns it into.
"""

from __future__ import annotations

# wgt_alloc: input at 64 KiB, memory grown to fit (answers -1 when growth is refused)
ALLOC = """
  (func (export "wgt_alloc") (param $n i32) (result i32)
    (local $pages i32)
    (local.set $pages (i32.wrap_i64 (i64.shr_u
      (i64.add (i64.extend_i32_u (local.get $n)) (i64.const 131071)) (i64.const 16))))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
        (then (return (i32.const -1))))))
    (i32.const 65536))
"""

RETURN_INPUT = """
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $n)))
"""


def abi_module(run_body: str, *, extra: str = "", memory: str = "1", imports: str = "") -> str:
    """An ABI v1 module whose wgt_run(p, n) has ``run_body`` as its body."""
    return f"""(module
  {imports}
  (memory (export "memory") {memory})
  {ALLOC}
  (func (export "wgt_run") (param $p i32) (param $n i32) (result i64)
    {run_body})
  {extra})"""


# Returns its input unchanged.
ECHO = abi_module(RETURN_INPUT)

# Upper-cases ASCII letters in place: real work whose result is easy to check.
UPPER = abi_module(
    """
    (local $i i32) (local $c i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
      (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
        (then (i32.store8 (i32.add (local.get $p) (local.get $i))
                          (i32.sub (local.get $c) (i32.const 32)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    """
    + RETURN_INPUT
)

# Sums bytes 1000 times over: CPU-bound, for the threads test and the benchmark.
SPIN = abi_module(
    """
    (local $i i32) (local $r i32) (local $acc i64)
    (block $rounds_done (loop $round
      (br_if $rounds_done (i32.ge_u (local.get $r) (i32.const 1000)))
      (local.set $i (i32.const 0))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i64.add (local.get $acc)
          (i64.load8_u (i32.add (local.get $p) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $round)))
    (i64.store (i32.const 0) (local.get $acc))
    (i64.const 8)
    """
)

# 0.0 / 0.0 and sqrt(-1) as raw bits: x86 makes the "default NaN" 0xFFF8...; canonicalisation
# makes every NaN 0x7FF8..., so replicas on any hardware return identical bytes.
NAN_BITS = abi_module(
    """
    (f64.store (i32.const 0) (f64.div (f64.const 0) (f64.convert_i32_u (local.get $n))))
    (f64.store (i32.const 8) (f64.sqrt (f64.const -1)))
    (v128.store (i32.const 16) (f32x4.div (v128.const f32x4 0 0 0 0) (v128.const f32x4 0 0 0 0)))
    (i64.const 32)
    """
)

INFINITE_LOOP = abi_module("(loop $forever (br $forever)) (unreachable)")

# Grows memory a page at a time until refused, then gives up the way C's abort() does.
MEMORY_BOMB = abi_module(
    """
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (unreachable)
    """
)

# Asks for 1 GiB at once, ignores the refusal and writes where the memory would have been.
MEMORY_BOMB_ONE_SHOT = abi_module(
    """
    (drop (memory.grow (i32.const 16384)))
    (i32.store (i32.const 0x3FFFFFF0) (i32.const 1))
    (i64.const 0)
    """
)

HUGE_INITIAL_MEMORY = abi_module(RETURN_INPUT, memory="2000")  # 125 MiB before any code runs

RECURSION = abi_module(
    "(call $deeper (i64.const 0))",
    extra="""(func $deeper (param $depth i64) (result i64)
      (call $deeper (i64.add (local.get $depth) (i64.const 1))))""",
)

UNREACHABLE = abi_module("(unreachable)")

DIVIDE_BY_ZERO = abi_module("(i64.extend_i32_u (i32.div_u (local.get $n) (i32.const 0)))")

OUTPUT_OUT_OF_BOUNDS = abi_module(
    "(i64.or (i64.shl (i64.const 0x7FFFFFF0) (i64.const 32)) (i64.const 64))"
)

OUTPUT_TOO_LARGE = abi_module(
    "(drop (memory.grow (i32.const 32))) (i64.const 0x200000)"  # 2 MiB, inside memory
)

ALLOC_OUT_OF_BOUNDS = """(module
  (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 65000))
  (func (export "wgt_run") (param i32 i32) (result i64) (i64.const 0)))"""

START_LOOPS = abi_module(RETURN_INPUT, extra="(func $init (loop $l (br $l))) (start $init)")

FORBIDDEN_IMPORTS = abi_module(
    RETURN_INPUT,
    imports="""(import "env" "system" (func (param i32) (result i32)))
  (import "env" "socket" (func (param i32 i32 i32) (result i32)))""",
)

WASI_MEMORY_IMPORT = """(module
  (import "wasi_snapshot_preview1" "memory" (memory 1))
  (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wgt_run") (param i32 i32) (result i64) (i64.const 0)))"""

WASI_UNKNOWN_FUNCTION = abi_module(
    RETURN_INPUT,
    imports="""(import "wasi_snapshot_preview1" "sock_open"
    (func (param i32 i32 i32) (result i32)))""",
)

WASI_WRONG_SIGNATURE = abi_module(
    RETURN_INPUT,
    imports="""(import "wasi_snapshot_preview1" "fd_write" (func (param i64) (result i32)))""",
)

SHARED_MEMORY = abi_module(RETURN_INPUT, memory="1 10 shared")

TWO_MEMORIES = abi_module(RETURN_INPUT, extra="(memory $second 1)")

MEMORY64 = """(module (memory (export "memory") i64 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wgt_run") (param i32 i32) (result i64) (i64.const 0)))"""

# Asks WASI to sleep for an hour (a relative clock subscription), returns poll_oneoff's errno.
SLEEP = abi_module(
    """
    ;; subscription at 64: userdata u64, tag u8 at +8 (0 = clock), clock id u32 at +16,
    ;; timeout u64 at +24 (ns), precision u64 at +32, flags u16 at +40 (0 = relative)
    (i64.store (i32.const 88) (i64.const 3600000000000))
    (i32.store (i32.const 0) (call $poll (i32.const 64) (i32.const 256) (i32.const 1)
                                         (i32.const 512)))
    (i64.const 4)
    """,
    imports="""(import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))""",
)
WASI_ERRNO_NOTSUP = 58


def entropy_request(length: str) -> str:
    """Asks random_get for ``length`` (an i32 literal) bytes at 16; returns the errno."""
    return abi_module(
        f"(i32.store (i32.const 0) (call $random (i32.const 16) (i32.const {length}))) "
        "(i64.const 4)",
        imports="""(import "wasi_snapshot_preview1" "random_get"
    (func $random (param i32 i32) (result i32)))""",
    )


# Reads the realtime and monotonic clocks, draws 32 and 5 bytes of entropy, and asks for a
# clock that does not exist and for entropy past the end of memory. Output (64 bytes): the
# two times (u64), the random bytes at 16 and 48, then the last two errnos (u32) at 56.
TIME_AND_ENTROPY = abi_module(
    """
    (i32.store (i32.const 200) (call $clock (i32.const 0) (i64.const 1) (i32.const 0)))
    (i32.store (i32.const 204) (call $clock (i32.const 1) (i64.const 1) (i32.const 8)))
    (i32.store (i32.const 208) (call $random (i32.const 16) (i32.const 32)))
    (i32.store (i32.const 212) (call $random (i32.const 48) (i32.const 5)))
    (i32.store (i32.const 56) (call $clock (i32.const 9) (i64.const 1) (i32.const 0)))
    (i32.store (i32.const 60) (call $random (i32.const 65530) (i32.const 100)))
    (i64.const 64)
    """,
    imports="""(import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))""",
)

MISSING_EXPORTS = """(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0)))"""

NO_MEMORY = """(module
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wgt_run") (param i32 i32) (result i64) (i64.const 0)))"""

WRONG_RUN_TYPE = """(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wgt_run") (param i32 i32) (result i32) (i32.const 0)))"""

RUN_IS_A_GLOBAL = """(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0))
  (global (export "wgt_run") i32 (i32.const 0)))"""

_WASI_FD_WRITE = (
    '(import "wasi_snapshot_preview1" "fd_write" '
    "(func $fd_write (param i32 i32 i32 i32) (result i32)))"
)


def _writes(fd: int, text: str, times: int = 1) -> str:
    """A WASI module that writes ``text`` to ``fd`` ``times`` times, then echoes its input."""
    size = len(text.encode().decode("unicode_escape"))  # WAT escapes like \\n are one byte
    return abi_module(
        f"""
    (local $k i32)
    (i32.store (i32.const 16) (i32.const 256))       ;; iovec.buf
    (i32.store (i32.const 20) (i32.const {size}))  ;; iovec.len
    (block $done (loop $again
      (br_if $done (i32.ge_u (local.get $k) (i32.const {times})))
      (drop (call $fd_write (i32.const {fd}) (i32.const 16) (i32.const 1) (i32.const 24)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $again)))
    """
        + RETURN_INPUT,
        imports=_WASI_FD_WRITE,
        extra=f'(data (i32.const 256) "{text}")',
    )


HELLO_STDOUT = _writes(1, "hello from wasm\\n")
HELLO_STDERR = _writes(2, "warning: careful\\n")
CHATTY_STDOUT = _writes(1, "0123456789abcdef", times=1_000)  # 16 KB written, capped

PROC_EXIT = abi_module(
    "(call $proc_exit (i32.const 3)) (unreachable)",
    imports='(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))',
)

# Tries to open /etc/passwd from fd 3 (the first preopen, if there were one) and asks whether a
# preopen exists; returns both WASI errnos and the sizes of argv and environ as 4 u32 values.
WASI_PROBE = abi_module(
    """
    (i32.store (i32.const 0) (call $path_open (i32.const 3) (i32.const 0) (i32.const 512)
      (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 64)))
    (i32.store (i32.const 4) (call $fd_prestat_get (i32.const 3) (i32.const 64)))
    (drop (call $args_sizes_get (i32.const 8) (i32.const 72)))
    (drop (call $environ_sizes_get (i32.const 12) (i32.const 76)))
    (i64.const 16)
    """,
    imports="""(import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))""",
    extra='(data (i32.const 512) "/etc/passwd")',
)
WASI_ERRNO_BADF = 8


def check_host_still_works(sandbox, echo) -> None:
    """After a hostile module, the same sandbox still runs an honest one."""
    assert sandbox.run(echo, b"still fine").output == b"still fine"
