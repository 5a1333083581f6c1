"""The canonical chunk record: the bytes a job's Merkle tree commits to for each chunk.

Encoding, version 1, fixed 73 bytes, no separators to get wrong::

    offset  size  field
         0     1  version, 0x01
         1     8  chunk index, unsigned big-endian
         9    32  SHA-256 of the chunk's input bytes
        41    32  SHA-256 of the chunk's canonical output bytes

The leaf hash is then RFC 6962's SHA-256(0x00 || record), so the root over a job's records
proves which output each chunk of which input produced, and in which order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wgtlab.errors import ConfigError, VerificationError
from wgtlab.verify.digests import as_digest

RECORD_VERSION = 1
RECORD_SIZE = 73
_LAYOUT = struct.Struct(">BQ32s32s")
_MAX_INDEX = (1 << 64) - 1


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk's claim: input digest ``input_digest`` gave output digest ``output_digest``."""

    index: int
    input_digest: bytes
    output_digest: bytes

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise ConfigError(f"chunk index must be an int, got {type(self.index).__name__}")
        if not 0 <= self.index <= _MAX_INDEX:
            raise ConfigError(f"chunk index must be in 0..2**64-1, got {self.index}")
        object.__setattr__(self, "input_digest", as_digest(self.input_digest, "input digest"))
        object.__setattr__(self, "output_digest", as_digest(self.output_digest, "output digest"))

    def encode(self) -> bytes:
        """The 73-byte canonical encoding (see the module docstring)."""
        return _LAYOUT.pack(RECORD_VERSION, self.index, self.input_digest, self.output_digest)

    @classmethod
    def decode(cls, record: bytes | bytearray | memoryview) -> ChunkRecord:
        """Parse a canonical record; a wrong length or version is a VerificationError."""
        if len(record) != RECORD_SIZE:
            raise VerificationError(
                f"a chunk record is {RECORD_SIZE} bytes, got {len(record)}: not a wgtlab record"
            )
        version, index, input_digest, output_digest = _LAYOUT.unpack(record)
        if version != RECORD_VERSION:
            raise VerificationError(
                f"chunk record version {version} is not supported (this wgtlab reads "
                f"version {RECORD_VERSION}); upgrade wgtlab to read it"
            )
        return cls(index, input_digest, output_digest)


def chunk_record(index: int, input_digest: bytes | str, output_digest: bytes | str) -> bytes:
    """The canonical 73-byte leaf for chunk ``index``; digests as 32 bytes or 64 hex characters."""
    return ChunkRecord(index, input_digest, output_digest).encode()  # type: ignore[arg-type]


def parse_chunk_record(record: bytes | bytearray | memoryview) -> ChunkRecord:
    """The inverse of :func:`chunk_record`."""
    return ChunkRecord.decode(record)
