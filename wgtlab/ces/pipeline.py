"""``CESPipeline``: compress, encrypt and erasure-code data into shards, and rebuild it.

Data is cut into segments; each is zstd-compressed (or, when a cheap probe finds that zstd
cannot shrink it, stored raw, flagged so), sealed with XChaCha20-Poly1305 under associated data
that pins it to its place in the dataset and binds the flag, then cut into k + m fragments;
shard i holds fragment i of every segment. This is the recipe, composed from the primitives
(``aead``, ``erasure``, ``keys``, ``format``); the thread pool (``parallel``), the buffers results
are written into (``buffers``) and shard and file writing (``writer``, ``store``) live apart.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from typing import IO, Any

import zstandard

from wgtlab import defaults
from wgtlab.ces import buffers, store
from wgtlab.ces.aead import NONCE_BYTES, TAG_BYTES, XChaCha20Poly1305
from wgtlab.ces.audit import AuditPath, audit_log_from
from wgtlab.ces.buffers import OutputBuffer, reusable_bytes, scratch
from wgtlab.ces.erasure import ErasureCodec, validate_shard_counts
from wgtlab.ces.format import (
    MAX_LEVEL,
    MAX_SEGMENT_BYTES,
    MIN_LEVEL,
    MIN_SEGMENT_BYTES,
    SEGMENT_FLAGS,
    SEGMENT_RAW,
    SEGMENT_ZSTD,
    ShardHeader,
    fragment_checksum,
    segment_count_for,
    segment_length,
)
from wgtlab.ces.keys import KeyLike, KeySchedule, derive_tenant_key, resolve_key
from wgtlab.ces.parallel import ordered_map
from wgtlab.ces.report import inspect_shards
from wgtlab.ces.shardset import ShardSet, ShardSetReport, memory_sources
from wgtlab.ces.store import Progress, output_target, source_size, write_store
from wgtlab.ces.writer import Sealed, write_shards
from wgtlab.errors import ConfigError, IntegrityError, KeyConfigError

# The recipe, and (moved to ``parallel``, ``store`` and ``writer``) what was importable here.
__all__ = [
    "CESPipeline",
    "Progress",
    "Sealed",
    "as_pipeline",
    "ordered_map",
    "output_target",
    "segment_aad",
    "source_size",
    "write_shards",
    "write_store",
]

_AAD_PREFIX_V1 = b"wgt-ces-v1/segment"
_AAD_PREFIX = b"wgt-ces-v2/segment"
_AAD_FIELDS = struct.Struct(">IIQ")
FLAGS_BYTES = 1  # version 2: the segment's flags byte, before the nonce

# The probe that decides "store raw": a few small samples compressed at zstd's fastest level.
# If they shrink by less than 1/32, compressing the whole segment would mostly copy it.
_PROBE_BYTES = 16 << 10
_PROBE_SAMPLES = 3
_PROBE_MIN_SEGMENT = 4 * _PROBE_SAMPLES * _PROBE_BYTES  # smaller segments are just compressed
_PROBE_LEVEL = 1

_decompressors = threading.local()


def segment_aad(header: ShardHeader, index: int, flags: int = SEGMENT_ZSTD) -> bytes:
    """What segment ``index`` is bound to: reordering, truncation and splicing fail to open.

    Version 2 also binds the segment's ``flags`` (how it is stored): flipping them fails too.
    """
    fields = _AAD_FIELDS.pack(index, header.segment_count, header.original_size)
    if header.version == 1:
        return _AAD_PREFIX_V1 + header.dataset_id + fields
    return _AAD_PREFIX + header.dataset_id + fields + bytes((flags,))


class CESPipeline:
    """Compress (zstd), encrypt (XChaCha20-Poly1305) and shard (Reed-Solomon) data.

    ``process(data)`` gives ``data_shards + parity_shards`` shards; ``reconstruct`` rebuilds the
    exact bytes from any ``data_shards`` of them. The key is the one passed in, else
    ``$CES_ENCRYPTION_KEY`` (64 hex characters), else a random per-process key (with an
    ``EphemeralKeyWarning``). Thread-safe; segments run in parallel on all cores.

    ``audit_log``: the file where every use of the key (encrypt, decrypt, keyed inspect,
    rotation) is recorded before it happens (see ``wgtlab.ces.audit``); None (the default)
    means ``$WGTLAB_AUDIT_LOG`` if set, else no log. There is deliberately no argument that
    turns off a log the variable asks for. When the log is on and cannot be written, the
    operation raises ``AuditLogError`` before producing any output.
    """

    def __init__(
        self,
        key: KeyLike | None = None,
        compression_level: int = defaults.CES_COMPRESSION_LEVEL,
        data_shards: int = defaults.CES_DATA_SHARDS,
        parity_shards: int = defaults.CES_PARITY_SHARDS,
        *,
        segment_size: int = defaults.CES_SEGMENT_BYTES,
        audit_log: AuditPath | None = None,
    ) -> None:
        self._audit = audit_log_from(audit_log)  # a bad path fails now, before any key use
        self.data_shards, self.parity_shards = validate_shard_counts(data_shards, parity_shards)
        if not isinstance(compression_level, int) or not (
            MIN_LEVEL <= compression_level <= MAX_LEVEL
        ):
            raise ConfigError(
                f"compression_level must be an int from {MIN_LEVEL} to {MAX_LEVEL} (zstd), "
                f"got {compression_level!r}"
            )
        if not isinstance(segment_size, int) or not (
            MIN_SEGMENT_BYTES <= segment_size <= MAX_SEGMENT_BYTES
        ):
            raise ConfigError(
                f"segment_size must be an int from {MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES} "
                f"bytes, got {segment_size!r}"
            )
        self.compression_level = compression_level
        self.segment_size = segment_size
        self._key, self.key_source = resolve_key(key, stacklevel=2)  # kept for rotation only
        self._keys = KeySchedule.from_key(self._key)
        self._aead = XChaCha20Poly1305(self._keys.seal_key)
        self.codec = ErasureCodec(self.data_shards, self.parity_shards)
        self._compressors = threading.local()
        self._probes = threading.local()

    @classmethod
    def for_tenant(cls, tenant_id: str, master_secret: bytes, **kwargs: Any) -> CESPipeline:
        """A pipeline under ``derive_tenant_key(tenant_id, master_secret)``; other arguments as
        for ``CESPipeline``. The derivation goes to the pipeline's audit log, if on."""
        if "key" in kwargs:
            raise ConfigError("for_tenant derives the key; do not pass key= as well")
        key = derive_tenant_key(tenant_id, master_secret, audit_log=kwargs.get("audit_log"))
        return cls(key, **kwargs)

    @property
    def key_id(self) -> str:
        """The public id of this pipeline's key (hex), as written in shard headers."""
        return self._keys.key_id.hex()

    @property
    def audit_log(self) -> str | None:
        """The absolute path of the audit log this pipeline records key uses in, or None."""
        return None if self._audit is None else self._audit.path

    @property
    def total_shards(self) -> int:
        return self.data_shards + self.parity_shards

    def __repr__(self) -> str:
        return (
            f"CESPipeline({self.data_shards} + {self.parity_shards} shards, zstd level "
            f"{self.compression_level}, {self.key_source} key {self.key_id[:12]})"
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickling would copy the data key into the pickle (a file, a cache, a message to
        # another machine), where no key store or rotation reaches it. Refuse, and say how.
        raise TypeError(
            "a CESPipeline cannot be pickled: the pickle would hold its secret key. Give the "
            f"other process the key through your key store or ${defaults.CES_KEY_ENV} and "
            "build CESPipeline(key, ...) there"
        )

    def __copy__(self) -> CESPipeline:
        return self  # immutable once built and thread-safe: a copy may share it

    def __deepcopy__(self, memo: dict[int, Any]) -> CESPipeline:
        return self

    # --- in memory -------------------------------------------------------------------------

    def process(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The shards of ``data``: ``data_shards + parity_shards`` of them, shard i at index i."""
        view = _byte_view(data)
        header = self._new_header(len(view))
        self._audit_use("encrypt", header)
        size = header.segment_size
        segments = ((j, view[j * size : (j + 1) * size]) for j in range(header.segment_count))
        sealed = ordered_map(lambda item: self._seal(header, *item), segments)
        return write_shards(header, sealed, self._keys.mac_key)

    def reconstruct(
        self, shards: Sequence[bytes | None], present: Sequence[bool] | None = None
    ) -> bytes:
        """The exact original bytes from a shard set with up to ``parity_shards`` lost.

        Missing shards are None, or False in ``present``. Shards are placed by the index in
        their header, so order and duplicates do not matter; damaged shards count as missing.
        Raises ``KeyMismatchError`` (another key), ``NotEnoughShardsError`` (too many lost),
        ``ShardFormatError`` (nothing readable, an ambiguous mix of datasets) or
        ``IntegrityError``. Shards of another dataset among a set count as missing.
        """
        shard_set = ShardSet.open(memory_sources(shards, present), self._keys)
        header = shard_set.header
        self._audit_use("decrypt", header)
        if header.original_size == 0:
            self._open(shard_set, 0)  # still authenticate the (empty) segment
            return b""
        # Each worker decompresses its segment straight into its slice of the result, so the
        # output is written once, by all cores, with no concatenation pass at the end.
        out = OutputBuffer(header.original_size)
        size = header.segment_size
        for _ in ordered_map(
            lambda j: self._open(shard_set, j, out.view[j * size : (j + 1) * size]),
            _segments(shard_set),
        ):
            pass
        return out.take()

    def inspect(self, shards: Sequence[bytes | None] | store.URL) -> ShardSetReport:
        """Per-shard status of a shard set (list or URL), with header MACs checked by this key."""
        report = inspect_shards(shards, self._keys)
        self._audit_use("inspect", report.header)
        return report

    # --- streaming -------------------------------------------------------------------------

    def process_file(
        self,
        src: store.URL,
        dest: store.URL,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> store.ShardManifest:
        """Shard the file at ``src`` into a shard set under ``dest`` (any fsspec URL).

        Streams: memory stays a few segments whatever the file size. ``progress(n)`` is called
        with the plaintext bytes done after each segment.
        """
        with store.open_input(src) as (size, source):
            header = self._new_header(size)
            self._audit_use("encrypt", header)  # before anything is written under dest
            segments = store.read_segments(source, header)
            sealed = ordered_map(lambda item: self._seal(header, *item), segments)
            return write_store(dest, header, sealed, self._keys.mac_key, overwrite, progress)

    def reconstruct_file(
        self,
        src: store.URL,
        out: store.URL | IO[bytes],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Rebuild the data of the shard set under ``src`` into ``out`` (a path, URL or binary
        file); returns the bytes written. Streams with bounded memory; a path is written under
        a temporary name and renamed only once complete, so a failed rebuild leaves nothing.

        ``out`` must name a file: a directory is refused, and so is an existing file unless
        ``overwrite`` (as ``process_file`` refuses an existing shard set)."""
        output = store.RebuildOutput(out, overwrite=overwrite)  # refused now, before any work
        sources, names, reasons = store.open_sources(src)
        try:
            shard_set = ShardSet.open(sources, self._keys, names=names, missing_reasons=reasons)
            self._audit_use("decrypt", shard_set.header)  # before any segment is decrypted
            parts = ordered_map(lambda j: self._open(shard_set, j), _segments(shard_set))
            return output.write(parts, progress)
        finally:
            store.close_sources(sources)

    # --- segments --------------------------------------------------------------------------

    def _audit_use(self, op: str, header: ShardHeader | None) -> None:
        """Record one use of this pipeline's key, if the audit log is on (raises
        ``AuditLogError`` if it cannot be recorded: the caller has produced nothing yet)."""
        if self._audit is not None:
            self._audit.record(
                op,
                self._keys.key_id,
                dataset_id=None if header is None else header.dataset_id,
                shards=None if header is None else header.total_shards,
            )

    def _new_header(self, original_size: int) -> ShardHeader:
        return ShardHeader(
            dataset_id=os.urandom(16),
            key_id=self._keys.key_id,
            index=0,
            data_shards=self.data_shards,
            parity_shards=self.parity_shards,
            codec=self.codec.codec,
            compression_level=self.compression_level,
            segment_size=self.segment_size,
            segment_count=segment_count_for(original_size, self.segment_size),
            original_size=original_size,
        )

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._compressors, "cctx", None)
        if cctx is None:
            # No zstd checksum: the AEAD tag already authenticates every byte.
            cctx = zstandard.ZstdCompressor(
                level=self.compression_level, write_content_size=True, write_checksum=False
            )
            self._compressors.cctx = cctx
        return cctx

    def _probe(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._probes, "cctx", None)
        if cctx is None:
            cctx = self._probes.cctx = zstandard.ZstdCompressor(
                level=_PROBE_LEVEL, write_content_size=False, write_checksum=False
            )
        return cctx

    def _incompressible(self, plaintext: memoryview) -> bool:
        """Whether a cheap probe (three 16 KiB samples at zstd's fastest level) says zstd would
        shrink this segment by less than 1/32: then it is stored raw, not compressed."""
        size = len(plaintext)
        if size < _PROBE_MIN_SEGMENT:
            return False
        step = (size - _PROBE_BYTES) // (_PROBE_SAMPLES - 1)
        cctx = self._probe()
        packed = sum(
            len(cctx.compress(plaintext[i * step : i * step + _PROBE_BYTES]))
            for i in range(_PROBE_SAMPLES)
        )
        return packed * 32 >= _PROBE_SAMPLES * _PROBE_BYTES * 31

    def _seal(self, header: ShardHeader, j: int, plaintext: Any) -> Sealed:
        view = memoryview(plaintext).cast("B")
        if self._incompressible(view):
            return self._seal_payload(header, j, SEGMENT_RAW, view)
        compressed = self._compressor().compress(view)
        if len(compressed) >= len(view):  # zstd only added its framing: keep the bytes
            return self._seal_payload(header, j, SEGMENT_RAW, view)
        return self._seal_payload(header, j, SEGMENT_ZSTD, compressed)

    def _seal_payload(self, header: ShardHeader, j: int, flags: int, payload: Any) -> Sealed:
        """Fragments of one segment's ``payload`` (stored as ``flags`` say), and their checksums.

        flags + nonce + ciphertext + tag are written once into the bytes object pyeclib needs.
        """
        assert header.version >= 2, "this wgtlab writes format version 2 only"
        nonce = os.urandom(NONCE_BYTES)
        start = FLAGS_BYTES + NONCE_BYTES
        size = start + len(payload) + TAG_BYTES
        # pyeclib takes only bytes, and copies them: equal segments reuse one per thread.
        out = None if buffers.IN_PLACE else OutputBuffer(size)
        sealed, view = reusable_bytes(size) if out is None else (b"", out.view)
        view[0] = flags
        view[FLAGS_BYTES:start] = nonce
        self._aead.encrypt_into(nonce, payload, segment_aad(header, j, flags), view[start:])
        if out is not None:
            sealed = out.take()
        fragments = self.codec.encode(sealed)  # our own header: same codec
        del sealed, view  # free for this thread's next segment
        return fragments, [fragment_checksum(f) for f in fragments]

    def _unseal(
        self, header: ShardHeader, j: int, sealed: bytes, into: memoryview | None = None
    ) -> tuple[int, memoryview]:
        """Segment ``j``'s flags and payload (a zstd frame, or the raw bytes), authenticated
        against its place in the dataset.

        Decrypted into ``into`` if given (exactly the payload's length), else into this thread's
        scratch buffer (reused: fresh memory is slow to touch), so the view is only valid until
        this thread unseals the next segment.
        """
        flags, body = _split_sealed(header, j, sealed)
        plain = scratch(len(body) - NONCE_BYTES - TAG_BYTES) if into is None else into
        try:
            self._aead.decrypt_into(
                body[:NONCE_BYTES], body[NONCE_BYTES:], segment_aad(header, j, flags), plain
            )
        except IntegrityError:
            raise IntegrityError(
                f"segment {j} of dataset {header.dataset_id.hex()} failed authentication: its "
                "data was altered, or it was moved from another position or dataset"
            ) from None
        return flags, plain

    def _open(self, shard_set: ShardSet, j: int, into: memoryview | None = None) -> bytes:
        """Plaintext of segment ``j`` (rebuilt, authenticated, decompressed, length-checked);
        written into ``into`` when given (then the result is empty)."""
        header = shard_set.header
        sealed = shard_set.sealed_segment(j)
        expected = segment_length(j, header.original_size, header.segment_size)
        if _split_sealed(header, j, sealed)[0] == SEGMENT_RAW:
            # Stored raw: decrypted straight into its place, no second pass.
            if len(sealed) - FLAGS_BYTES - NONCE_BYTES - TAG_BYTES != expected:
                raise IntegrityError(f"segment {j} does not hold the {expected} bytes it should")
            if into is not None:
                self._unseal(header, j, sealed, into)
                return b""
            out = OutputBuffer(expected) if expected else None
            if out is None:
                self._unseal(header, j, sealed, scratch(0))
                return b""
            self._unseal(header, j, sealed, out.view)
            return out.take()
        compressed = self._unseal(header, j, sealed)[1]
        dctx = getattr(_decompressors, "dctx", None)
        if dctx is None:
            dctx = _decompressors.dctx = zstandard.ZstdDecompressor()
        try:
            if zstandard.frame_content_size(compressed) != expected:
                raise IntegrityError(f"segment {j} does not hold the {expected} bytes it should")
            if into is None:
                plaintext = dctx.decompress(compressed, max_output_size=expected)
                written = len(plaintext)
            else:
                plaintext, written = b"", _decompress_into(dctx, compressed, into)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"segment {j} failed to decompress: {exc}") from None
        if written != expected:
            raise IntegrityError(f"segment {j} decompressed to {written} bytes, not {expected}")
        return plaintext


# --- helpers -----------------------------------------------------------------------------------


def inspect(
    shards: Sequence[bytes | None] | store.URL, key: KeyLike | CESPipeline | None = None
) -> ShardSetReport:
    """Per-shard status of a shard set given as a list of shards or a URL / directory.

    ``key`` (a key, or a ``CESPipeline``) lets header MACs and key ids be checked; every
    fragment's checksum is verified either way (no key: checksums only, never a random key).
    Never raises for damaged shards: the report says what is wrong, and ``.recoverable``
    whether ``reconstruct`` would succeed.
    """
    if key is None:
        return inspect_shards(shards, None)
    return as_pipeline(key).inspect(shards)


def as_pipeline(
    key_or_pipeline: KeyLike | CESPipeline | None, *, stacklevel: int = 2
) -> CESPipeline:
    """A ``CESPipeline`` from what CES functions accept as their key: a pipeline (used as it
    is), a key (32 bytes or 64 hex characters), or None (``$CES_ENCRYPTION_KEY``, else a random
    key with an ``EphemeralKeyWarning`` pointing ``stacklevel`` frames up, at the caller)."""
    if isinstance(key_or_pipeline, CESPipeline):
        return key_or_pipeline
    if key_or_pipeline is None:
        key, source = resolve_key(None, stacklevel=stacklevel + 1)
        pipe = CESPipeline(key)
        pipe.key_source = source
        return pipe
    if not isinstance(key_or_pipeline, bytes | bytearray | memoryview | str):
        raise KeyConfigError(
            "expected a CESPipeline, a key (32 bytes or 64 hex characters) or None; got "
            f"{type(key_or_pipeline).__name__}"
        )
    return CESPipeline(key_or_pipeline)


def _decompress_into(
    dctx: zstandard.ZstdDecompressor, compressed: bytes | memoryview, into: memoryview
) -> int:
    """Decompress one frame into ``into``; the byte count, or -1 if the frame is longer."""
    written = 0
    with dctx.stream_reader(compressed) as reader:
        while written < len(into):
            n = reader.readinto(into[written:])
            if n == 0:
                break
            written += n
        if reader.read(1):
            return -1
    return written


def _split_sealed(header: ShardHeader, j: int, sealed: bytes) -> tuple[int, memoryview]:
    """A sealed segment's flags (version 1: always zstd) and its nonce + ciphertext + tag.

    The flags are only read here; the AEAD authenticates them when the segment is opened."""
    view = memoryview(sealed)
    flags = SEGMENT_ZSTD
    if header.version >= 2:
        if len(view) < FLAGS_BYTES or view[0] not in SEGMENT_FLAGS:
            raise IntegrityError(f"segment {j} has unknown storage flags")
        flags, view = view[0], view[FLAGS_BYTES:]
    if len(view) < NONCE_BYTES + TAG_BYTES:
        raise IntegrityError(f"segment {j} is too short to be sealed data")
    return flags, view


def _byte_view(data: Any) -> memoryview:
    if isinstance(data, str):
        raise ConfigError("CES processes bytes, not str (encode text first, e.g. text.encode())")
    try:
        return memoryview(data).cast("B")
    except (TypeError, ValueError):
        raise ConfigError(
            f"CES processes bytes-like data (bytes, bytearray, contiguous memoryview), not "
            f"{type(data).__name__}"
        ) from None


def _segments(shard_set: ShardSet) -> range:
    return range(shard_set.header.segment_count)
