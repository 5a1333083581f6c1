"""The CES shard format, version 2 (version 1 still read): what the bytes of one shard are,
packed and parsed strictly.

A shard is a fixed header, then fragment ``index`` of every segment, then a footer::

    header   68 bytes   magic, version, dataset id, key id, shard index, shard counts, codec,
                        compression, segment size and count, original size (big-endian)
    body                fragment of segment 0, fragment of segment 1, ...
    footer              per segment: fragment length (u32) + BLAKE3 of the fragment (32 bytes);
                        BLAKE3 of header + table (32 bytes: bit rot is found without the key);
                        HMAC-SHA256 of header + table under the header-MAC key (32 bytes)

Erasure coding splits each segment's sealed payload into the fragments. Version 2's payload is
``flags (1 byte) + nonce (24) + ciphertext + tag (16)``: flags say how the segment is stored
(``SEGMENT_ZSTD``: a zstd frame, ``SEGMENT_RAW``: the plaintext as it is, for data zstd cannot
shrink) and are part of the AEAD's associated data, so flipping them fails authentication.
Version 1's payload is ``nonce + ciphertext + tag`` of a zstd frame, with no flags.

The fragment table sits after the body so a shard can be written in one pass while segments
stream through; a reader finds it from the end, since its length follows from the header.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import blake3

from wgtlab.ces.erasure import CODEC_NAMES, MAX_TOTAL_SHARDS
from wgtlab.errors import ShardFormatError

MAGIC = b"WGTCES\r\n"  # \r\n catches text-mode mangling, as in PNG
VERSION = 2  # what this wgtlab writes
SUPPORTED_VERSIONS = (1, 2)  # what it reads
SEGMENT_ZSTD = 0  # version 2 segment flags: the sealed plaintext is a zstd frame
SEGMENT_RAW = 1  # ... is the segment's bytes as they are (zstd could not shrink them)
SEGMENT_FLAGS = (SEGMENT_ZSTD, SEGMENT_RAW)
COMPRESSION_ZSTD = 1
MIN_LEVEL, MAX_LEVEL = -7, 22  # zstd's fast levels up to its maximum
MIN_SEGMENT_BYTES = 1 << 10
MAX_SEGMENT_BYTES = 1 << 30
MAX_ORIGINAL_SIZE = 1 << 56
DIGEST_BYTES = 32

_HEADER = struct.Struct(">8sHH16s16sBBBBBbHIIQ")
HEADER_BYTES = _HEADER.size  # 68
_ENTRY = struct.Struct(">I32s")
ENTRY_BYTES = _ENTRY.size  # 36
FOOTER_FIXED_BYTES = 2 * DIGEST_BYTES
# A fragment carries pyeclib's own header (80 bytes) plus at least one byte per data shard.
MIN_FRAGMENT_BYTES = 64
MAX_FRAGMENT_BYTES = 2 * MAX_SEGMENT_BYTES


def segment_count_for(original_size: int, segment_size: int) -> int:
    """Segments a dataset is cut into; an empty dataset still has one (sealed, empty) segment."""
    return max(1, -(-original_size // segment_size))


def segment_length(index: int, original_size: int, segment_size: int) -> int:
    """Plaintext bytes in segment ``index``."""
    return max(0, min(segment_size, original_size - index * segment_size))


def footer_bytes(segment_count: int) -> int:
    return segment_count * ENTRY_BYTES + FOOTER_FIXED_BYTES


def fragment_checksum(fragment: bytes | memoryview) -> bytes:
    return blake3.blake3(fragment).digest()


@dataclass(frozen=True)
class ShardHeader:
    """The fixed header of one shard. Identical across a shard set except for ``index``."""

    dataset_id: bytes
    key_id: bytes
    index: int
    data_shards: int
    parity_shards: int
    codec: int
    compression_level: int
    segment_size: int
    segment_count: int
    original_size: int
    version: int = VERSION
    compression: int = COMPRESSION_ZSTD

    @property
    def total_shards(self) -> int:
        return self.data_shards + self.parity_shards

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"unknown({self.codec})")

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            0,
            self.dataset_id,
            self.key_id,
            self.index,
            self.data_shards,
            self.parity_shards,
            self.codec,
            self.compression,
            self.compression_level,
            0,
            self.segment_size,
            self.segment_count,
            self.original_size,
        )

    def with_index(self, index: int) -> ShardHeader:
        return replace(self, index=index)

    @classmethod
    def parse(cls, raw: bytes) -> ShardHeader:
        """The header in ``raw`` (exactly HEADER_BYTES), checked field by field."""
        if len(raw) != HEADER_BYTES:
            raise ShardFormatError(f"a shard header is {HEADER_BYTES} bytes, got {len(raw)}")
        (
            magic,
            version,
            flags,
            dataset_id,
            key_id,
            index,
            data_shards,
            parity_shards,
            codec,
            compression,
            level,
            reserved,
            segment_size,
            segment_count,
            original_size,
        ) = _HEADER.unpack(raw)
        if magic != MAGIC:
            raise ShardFormatError("not a wgtlab CES shard (bad magic bytes)")
        if version not in SUPPORTED_VERSIONS:
            readable = " and ".join(map(str, SUPPORTED_VERSIONS))
            raise ShardFormatError(
                f"shard format version {version} is not supported (this wgtlab reads {readable})"
            )
        _require(flags == 0 and reserved == 0, "reserved header fields are not zero")
        _require(data_shards >= 1 and parity_shards >= 1, "shard counts must be at least 1")
        _require(data_shards + parity_shards <= MAX_TOTAL_SHARDS, "too many shards")
        _require(index < data_shards + parity_shards, f"shard index {index} out of range")
        _require(codec in CODEC_NAMES, f"unknown erasure codec id {codec}")
        _require(compression == COMPRESSION_ZSTD, f"unknown compression id {compression}")
        _require(MIN_LEVEL <= level <= MAX_LEVEL, f"compression level {level} out of range")
        _require(
            MIN_SEGMENT_BYTES <= segment_size <= MAX_SEGMENT_BYTES,
            f"segment size {segment_size} out of range",
        )
        _require(original_size <= MAX_ORIGINAL_SIZE, "original size out of range")
        _require(
            segment_count == segment_count_for(original_size, segment_size),
            "segment count does not match original size and segment size",
        )
        return cls(
            dataset_id=dataset_id,
            key_id=key_id,
            index=index,
            data_shards=data_shards,
            parity_shards=parity_shards,
            codec=codec,
            compression_level=level,
            segment_size=segment_size,
            segment_count=segment_count,
            original_size=original_size,
            version=version,
            compression=compression,
        )


@dataclass(frozen=True)
class ShardLayout:
    """A parsed shard: its header, where each fragment lies, and what each must hash to."""

    header: ShardHeader
    fragment_offsets: tuple[int, ...]
    fragment_lengths: tuple[int, ...]
    fragment_checksums: tuple[bytes, ...]
    authenticated: bytes  # header + table: what the MAC covers
    mac: bytes
    size: int

    def mac_ok(self, mac_key: bytes) -> bool:
        return hmac.compare_digest(header_mac(mac_key, self.authenticated), self.mac)


def header_mac(mac_key: bytes, authenticated: bytes) -> bytes:
    return hmac.new(mac_key, authenticated, hashlib.sha256).digest()


def parse_layout(size: int, read_at: Callable[[int, int], bytes]) -> ShardLayout:
    """Parse a shard of ``size`` bytes through ``read_at(offset, length) -> bytes``.

    Reads only the header and the footer; every length is checked before it is used. Raises
    ``ShardFormatError`` for anything malformed, truncated or rotten (header checksum).
    """
    if size < HEADER_BYTES + footer_bytes(1) + MIN_FRAGMENT_BYTES:
        raise ShardFormatError(f"shard is {size} bytes: too short to be a CES shard (truncated?)")
    header = ShardHeader.parse(bytes(read_at(0, HEADER_BYTES)))
    footer_len = footer_bytes(header.segment_count)
    body_len = size - HEADER_BYTES - footer_len
    if body_len < header.segment_count * MIN_FRAGMENT_BYTES:
        raise ShardFormatError("shard is shorter than its header says (truncated?)")
    footer = bytes(read_at(size - footer_len, footer_len))
    if len(footer) != footer_len:
        raise ShardFormatError("shard footer could not be read in full (truncated?)")
    table = footer[: header.segment_count * ENTRY_BYTES]
    checksum = footer[-2 * DIGEST_BYTES : -DIGEST_BYTES]
    mac = footer[-DIGEST_BYTES:]
    authenticated = header.pack() + table
    if blake3.blake3(authenticated).digest() != checksum:
        raise ShardFormatError("shard header or fragment table is damaged (checksum mismatch)")
    lengths, checksums, offsets = [], [], []
    offset = HEADER_BYTES
    for length, digest in _ENTRY.iter_unpack(table):
        _require(MIN_FRAGMENT_BYTES <= length <= MAX_FRAGMENT_BYTES, f"fragment length {length}")
        offsets.append(offset)
        lengths.append(length)
        checksums.append(digest)
        offset += length
    _require(offset - HEADER_BYTES == body_len, "fragment lengths do not add up to the body")
    return ShardLayout(
        header=header,
        fragment_offsets=tuple(offsets),
        fragment_lengths=tuple(lengths),
        fragment_checksums=tuple(checksums),
        authenticated=authenticated,
        mac=mac,
        size=size,
    )


def build_footer(header: ShardHeader, entries: list[tuple[int, bytes]], mac_key: bytes) -> bytes:
    """The footer for ``header`` and per-segment ``(fragment length, checksum)`` entries."""
    if len(entries) != header.segment_count:
        raise ShardFormatError(
            f"{len(entries)} fragments written, the header announces {header.segment_count}"
        )
    table = b"".join(_ENTRY.pack(length, digest) for length, digest in entries)
    authenticated = header.pack() + table
    return table + blake3.blake3(authenticated).digest() + header_mac(mac_key, authenticated)


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ShardFormatError(f"malformed shard header: {problem}")
