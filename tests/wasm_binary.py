"""WebAssembly binaries built byte by byte, for modules too big or too odd to write as WAT."""

from __future__ import annotations

from collections.abc import Sequence


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + uleb(len(payload)) + payload


def vec(items: Sequence[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def name(text: str) -> bytes:
    raw = text.encode()
    return uleb(len(raw)) + raw


# (i32) -> (i32), (i32, i32) -> (i64), () -> ()
ABI_TYPES = [b"\x60\x01\x7f\x01\x7f", b"\x60\x02\x7f\x7f\x01\x7e", b"\x60\x00\x00"]


def abi_module_with_bodies(bodies: Sequence[bytes], *, memory_pages: int = 1) -> bytes:
    """An ABI v1 module (wgt_alloc returns 0, wgt_run returns 0) plus one () -> () function per
    body in ``bodies`` (each a function body: locals, instructions, ``end``)."""
    alloc = b"\x00\x41\x00\x0b"  # no locals; i32.const 0; end
    run = b"\x00\x42\x00\x0b"  # no locals; i64.const 0; end
    code = [uleb(len(body)) + body for body in [alloc, run, *bodies]]
    exports = [
        name("memory") + b"\x02\x00",
        name("wgt_alloc") + b"\x00\x00",
        name("wgt_run") + b"\x00\x01",
    ]
    return (
        b"\0asm\x01\x00\x00\x00"
        + section(1, vec(ABI_TYPES))
        + section(3, vec([b"\x00", b"\x01"] + [b"\x02"] * len(bodies)))
        + section(5, vec([b"\x00" + uleb(memory_pages)]))
        + section(7, vec(exports))
        + section(10, vec(code))
    )
