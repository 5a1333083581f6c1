"""Built-in kernels over bytes and text: word_count and checksum (Adler-32).

Both give the same answer however the input is cut into chunks: each chunk reports what its
edges look like, and ``combine`` joins the chunks in order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from wgtlab.sandbox.kernels.base import BuiltinKernel, chunk_bytes

__all__ = ["Adler32Partial", "Checksum", "WordCount", "WordCountPartial", "adler32_combine"]

_ADLER_BASE = 65521


@dataclass(frozen=True)
class WordCountPartial:
    """One chunk's words, and whether its first / last byte lies inside a word."""

    words: int
    length: int
    starts_in_word: bool
    ends_in_word: bool


class WordCount(BuiltinKernel):
    """Words in UTF-8 text: maximal runs of bytes other than ASCII whitespace (space, \\t, \\n,
    \\v, \\f, \\r), so ``len(data.split())`` for ``bytes`` data. Unicode spaces such as U+00A0
    do not separate words. A word cut by a chunk boundary counts once."""

    name = "word_count"
    wat = "word_count.wat"
    input_kind = "text"

    def encode(self, chunk: Any) -> bytes:
        return chunk_bytes(chunk)

    def decode(self, output: bytes) -> WordCountPartial:
        words, length, first, last = struct.unpack("<QQII", output)
        return WordCountPartial(words, length, bool(first), bool(last))

    def combine(self, partials: list[Any]) -> int:
        total = 0
        previous_ends_in_word = False
        for part in partials:
            if not part.length:
                continue  # an empty chunk does not separate the words around it
            total += part.words - (previous_ends_in_word and part.starts_in_word)
            previous_ends_in_word = part.ends_in_word
        return total

    def empty(self) -> int:
        return 0


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of A + B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    rem = second_length % _ADLER_BASE
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 += (second & 0xFFFF) + _ADLER_BASE - 1
    sum2 += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + _ADLER_BASE - rem
    return (sum1 % _ADLER_BASE) | ((sum2 % _ADLER_BASE) << 16)


@dataclass(frozen=True)
class Adler32Partial:
    """One chunk's Adler-32 and length."""

    value: int
    length: int


class Checksum(BuiltinKernel):
    """Adler-32 (RFC 1950) of the whole input, equal to ``zlib.adler32(data)``.

    Adler-32 rather than FNV-1a because chunks run in parallel: Adler-32 values of consecutive
    chunks combine exactly, FNV-1a's do not. It detects accidents, not tampering (use SHA-256).
    """

    name = "checksum"
    wat = "checksum.wat"
    input_kind = "bytes"

    def encode(self, chunk: Any) -> bytes:
        return chunk_bytes(chunk)

    def decode(self, output: bytes) -> Adler32Partial:
        value, _, length = struct.unpack("<IIQ", output)
        return Adler32Partial(value, length)

    def combine(self, partials: list[Any]) -> int:
        value = 1
        for part in partials:
            value = adler32_combine(value, part.value, part.length)
        return value

    def empty(self) -> int:
        return 1
