"""Writing a shard set in one pass: headers, then fragment i of each segment as it is sealed to
shard i, then footers. The sinks are files (``store.write_store``) or memory (``write_shards``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from wgtlab.ces.format import ShardHeader, build_footer
from wgtlab.ces.parallel import ordered_map

Sealed = tuple[list[bytes], list[bytes]]  # one segment: fragments, and their checksums


class ShardSink(Protocol):
    """Where one shard's bytes go, in order (a binary file, or memory)."""

    def write(self, data: bytes, /) -> object: ...


class ShardWriter:
    """Writes a shard set in one pass: headers, then fragments as segments finish, then footers."""

    def __init__(self, header: ShardHeader, sinks: Sequence[ShardSink], mac_key: bytes) -> None:
        self.header, self.sinks, self.mac_key = header, sinks, mac_key
        self.entries: list[list[tuple[int, bytes]]] = [[] for _ in sinks]
        for i, sink in enumerate(sinks):
            sink.write(header.with_index(i).pack())

    def add(self, sealed: Sealed) -> None:
        fragments, checksums = sealed
        for sink, entries, fragment, checksum in zip(
            self.sinks, self.entries, fragments, checksums, strict=True
        ):
            sink.write(fragment)
            entries.append((len(fragment), checksum))

    def finish(self) -> None:
        for i, (sink, entries) in enumerate(zip(self.sinks, self.entries, strict=True)):
            sink.write(build_footer(self.header.with_index(i), entries, self.mac_key))


class _Collector:
    """A write-only sink that keeps the pieces, for shards built in memory."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def write_shards(header: ShardHeader, sealed: Iterable[Sealed], mac_key: bytes) -> list[bytes]:
    """A whole shard set in memory, from the sealed segments in order."""
    sinks = [_Collector() for _ in range(header.total_shards)]
    writer = ShardWriter(header, sinks, mac_key)
    for segment in sealed:
        writer.add(segment)
    writer.finish()
    # Each shard is assembled by one join (one copy into fresh memory, which is slow to touch);
    # bytes.join releases the GIL for large pieces, so the shards are joined on every core.
    return list(ordered_map(_Collector.getvalue, sinks))
