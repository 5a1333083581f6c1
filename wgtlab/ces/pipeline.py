"""``CESPipeline``: compress, encrypt and erasure-code data into shards, and rebuild it.

Data is cut into segments; each is zstd-compressed, sealed with XChaCha20-Poly1305 under
associated data that pins it to its place in the dataset, then cut into k + m fragments; shard i
holds fragment i of every segment. Segments run in parallel on a shared thread pool (zstd, the
AEAD and BLAKE3 release the GIL) with a bounded window, so memory stays flat for any input size.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import IO, Any, TypeVar

import zstandard

from wgtlab import defaults
from wgtlab.ces import store
from wgtlab.ces.aead import NONCE_BYTES, TAG_BYTES, XChaCha20Poly1305
from wgtlab.ces.erasure import ErasureCodec, validate_shard_counts
from wgtlab.ces.format import (
    MAX_LEVEL,
    MAX_SEGMENT_BYTES,
    MIN_LEVEL,
    MIN_SEGMENT_BYTES,
    ShardHeader,
    build_footer,
    fragment_checksum,
    segment_count_for,
    segment_length,
)
from wgtlab.ces.keys import KeyLike, KeySchedule, derive_tenant_key, resolve_key
from wgtlab.ces.shardset import BytesSource, ShardSet, ShardSetReport, ShardSource
from wgtlab.errors import CESError, ConfigError, IntegrityError, KeyConfigError

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int], None]
Sealed = tuple[list[bytes], list[bytes]]  # one segment: fragments, and their checksums

_AAD_PREFIX = b"wgt-ces-v1/segment"
_AAD_FIELDS = struct.Struct(">IIQ")

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_decompressors = threading.local()
_scratch = threading.local()  # per-thread buffer for decrypted segments

# CPython's C API, to build a bytes object in place (see _output_buffer).
_PyBytes_FromStringAndSize = ctypes.pythonapi.PyBytes_FromStringAndSize
_PyBytes_FromStringAndSize.restype = ctypes.py_object
_PyBytes_FromStringAndSize.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
_PyBytes_AsString = ctypes.pythonapi.PyBytes_AsString
_PyBytes_AsString.restype = ctypes.c_void_p
_PyBytes_AsString.argtypes = (ctypes.py_object,)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="wgtlab-ces")
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child inherits the pool object but none of its threads: start a fresh one.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _window() -> int:
    # Two segments per core in flight: enough to keep every core busy while the caller's
    # thread reads and writes, few enough that memory stays a handful of segments.
    return 2 * (os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on the CES pool, results in order, at most ``window`` in flight.

    ``items`` is consumed lazily on the caller's thread (reading input happens there).
    """
    pool, limit = _executor(), window or _window()
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On an error or an early close: drop what has not started, and wait for what has, so
        # no segment is still being written into the caller's buffers after we return.
        for future in pending:
            future.cancel()
        wait(pending)


def segment_aad(header: ShardHeader, index: int) -> bytes:
    """What segment ``index`` is bound to: reordering, truncation and splicing fail to open."""
    return (
        _AAD_PREFIX
        + header.dataset_id
        + _AAD_FIELDS.pack(index, header.segment_count, header.original_size)
    )


class _Collector:
    """A write-only sink that keeps the pieces, for shards built in memory."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _ShardWriter:
    """Writes a shard set in one pass: headers, then fragments as segments finish, then footers."""

    def __init__(self, header: ShardHeader, sinks: Sequence[Any], mac_key: bytes) -> None:
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


class CESPipeline:
    """Compress (zstd), encrypt (XChaCha20-Poly1305) and shard (Reed-Solomon) data.

    ``process(data)`` gives ``data_shards + parity_shards`` shards; ``reconstruct`` rebuilds the
    exact bytes from any ``data_shards`` of them. The key is the one passed in, else
    ``$CES_ENCRYPTION_KEY`` (64 hex characters), else a random per-process key (with an
    ``EphemeralKeyWarning``). Thread-safe; segments run in parallel on all cores.
    """

    def __init__(
        self,
        key: KeyLike | None = None,
        compression_level: int = defaults.CES_COMPRESSION_LEVEL,
        data_shards: int = defaults.CES_DATA_SHARDS,
        parity_shards: int = defaults.CES_PARITY_SHARDS,
        *,
        segment_size: int = defaults.CES_SEGMENT_BYTES,
    ) -> None:
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

    @classmethod
    def for_tenant(cls, tenant_id: str, master_secret: bytes, **kwargs: Any) -> CESPipeline:
        """A pipeline under ``derive_tenant_key(tenant_id, master_secret)``; other arguments as
        for ``CESPipeline``."""
        if "key" in kwargs:
            raise ConfigError("for_tenant derives the key; do not pass key= as well")
        return cls(derive_tenant_key(tenant_id, master_secret), **kwargs)

    @property
    def key_id(self) -> str:
        """The public id of this pipeline's key (hex), as written in shard headers."""
        return self._keys.key_id.hex()

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
        ``ShardFormatError`` (nothing readable, mixed datasets) or ``IntegrityError``.
        """
        shard_set = ShardSet.open(_memory_sources(shards, present), self._keys)
        header = shard_set.header
        if header.original_size == 0:
            self._open(shard_set, 0)  # still authenticate the (empty) segment
            return b""
        # Each worker decompresses its segment straight into its slice of the result, so the
        # output is written once, by all cores, with no concatenation pass at the end.
        out, view = _output_buffer(header.original_size)
        size = header.segment_size
        for _ in ordered_map(
            lambda j: self._open(shard_set, j, view[j * size : (j + 1) * size]),
            _segments(shard_set),
        ):
            pass
        view.release()
        return out

    def inspect(self, shards: Sequence[bytes | None] | store.URL) -> ShardSetReport:
        """Per-shard status of a shard set (list or URL), with header MACs checked by this key."""
        from wgtlab.ces.report import inspect

        return inspect(shards, key=self)

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
        fs_in, path_in = store.location(src)
        size = source_size(fs_in, path_in, src)
        header = self._new_header(size)
        with fs_in.open(path_in, "rb") as source:
            sealed = ordered_map(
                lambda item: self._seal(header, *item), _read_segments(source, header)
            )
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
        target = None
        if not hasattr(out, "write"):
            target = output_target(out, overwrite=overwrite)  # type: ignore[arg-type]
        sources, names, reasons = store.open_sources(src)
        try:
            shard_set = ShardSet.open(sources, self._keys, names=names, missing_reasons=reasons)
            parts = ordered_map(lambda j: self._open(shard_set, j), _segments(shard_set))
            if target is None:
                return _write_parts(out, parts, progress)  # type: ignore[arg-type]
            fs, path = target
            partial = f"{path}.partial"
            sink = _open_output(fs, partial, out)  # type: ignore[arg-type]
            try:
                with sink as f:
                    written = _write_parts(f, parts, progress)
                fs.mv(partial, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    fs.rm_file(partial)
                raise
            return written
        finally:
            store.close_sources(sources)

    # --- segments --------------------------------------------------------------------------

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

    def _seal(self, header: ShardHeader, j: int, plaintext: Any) -> Sealed:
        return self._seal_compressed(header, j, self._compressor().compress(plaintext))

    def _seal_compressed(self, header: ShardHeader, j: int, compressed: Any) -> Sealed:
        """Fragments of one compressed segment, and their checksums."""
        # nonce + ciphertext + tag, written once into the bytes object pyeclib needs.
        nonce = os.urandom(NONCE_BYTES)
        sealed, view = _output_buffer(NONCE_BYTES + len(compressed) + TAG_BYTES)
        view[:NONCE_BYTES] = nonce
        self._aead.encrypt_into(nonce, compressed, segment_aad(header, j), view[NONCE_BYTES:])
        view.release()
        fragments = self.codec.encode(sealed)  # header was made by this pipeline: same codec
        return fragments, [fragment_checksum(f) for f in fragments]

    def _unseal(self, header: ShardHeader, j: int, sealed: bytes) -> memoryview:
        """The compressed segment ``j``, authenticated against its place in the dataset.

        Decrypted into this thread's scratch buffer (reused: fresh memory is slow to touch), so
        the view is only valid until this thread unseals the next segment.
        """
        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise IntegrityError(f"segment {j} is too short to be sealed data")
        size = len(sealed) - NONCE_BYTES - TAG_BYTES
        scratch = getattr(_scratch, "buffer", None)
        if scratch is None or len(scratch) < size:
            scratch = _scratch.buffer = bytearray(max(size, 1 << 20))
        view, plain = memoryview(sealed), memoryview(scratch)[:size]
        try:
            self._aead.decrypt_into(
                view[:NONCE_BYTES], view[NONCE_BYTES:], segment_aad(header, j), plain
            )
        except IntegrityError:
            raise IntegrityError(
                f"segment {j} of dataset {header.dataset_id.hex()} failed authentication: its "
                "data was altered, or it was moved from another position or dataset"
            ) from None
        return plain

    def _open(self, shard_set: ShardSet, j: int, into: memoryview | None = None) -> bytes:
        """Plaintext of segment ``j`` (rebuilt, authenticated, decompressed, length-checked);
        written into ``into`` when given (then the result is empty)."""
        header = shard_set.header
        compressed = self._unseal(header, j, shard_set.sealed_segment(j))
        expected = segment_length(j, header.original_size, header.segment_size)
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


# --- writing shard sets ------------------------------------------------------------------------


def write_shards(header: ShardHeader, sealed: Iterable[Sealed], mac_key: bytes) -> list[bytes]:
    """A whole shard set in memory, from the sealed segments in order."""
    sinks = [_Collector() for _ in range(header.total_shards)]
    writer = _ShardWriter(header, sinks, mac_key)
    for segment in sealed:
        writer.add(segment)
    writer.finish()
    return [sink.getvalue() for sink in sinks]


def write_store(
    dest: store.URL,
    header: ShardHeader,
    sealed: Iterable[Sealed],
    mac_key: bytes,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> store.ShardManifest:
    """A shard set written under ``dest`` as segments arrive; the manifest goes last.

    On any failure the shard files written so far are removed, so ``dest`` never holds half a
    set behind a manifest.
    """
    fs, root = store.prepare(dest, overwrite)
    names = [store.shard_name(i) for i in range(header.total_shards)]
    with contextlib.ExitStack() as stack:
        sinks = [stack.enter_context(fs.open(f"{root}/{name}", "wb")) for name in names]
        try:
            writer = _ShardWriter(header, sinks, mac_key)
            for j, segment in enumerate(sealed):
                writer.add(segment)
                if progress:
                    progress(segment_length(j, header.original_size, header.segment_size))
            writer.finish()
        except BaseException:
            stack.close()
            for name in names:
                with contextlib.suppress(OSError):
                    fs.rm_file(f"{root}/{name}")
            raise
    manifest = store.ShardManifest(
        files=tuple(names),
        dataset_id=header.dataset_id.hex(),
        data_shards=header.data_shards,
        parity_shards=header.parity_shards,
        original_size=header.original_size,
    )
    store.write_manifest(fs, root, manifest)
    return manifest


# --- helpers -----------------------------------------------------------------------------------


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


def source_size(fs: Any, path: str, given: store.URL) -> int:
    """The size of the file to shard at ``path``; a missing file or a directory is a
    ``ConfigError`` naming ``given`` (filesystems differ: a local directory has a size)."""
    try:
        if fs.isdir(path):
            raise ConfigError(f"{os.fspath(given)!r} is a directory, not a file to shard")
        return int(fs.size(path))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, TypeError):
        raise ConfigError(f"no such file to shard: {os.fspath(given)!r}") from None


def output_target(out: store.URL, *, overwrite: bool) -> tuple[Any, str]:
    """(filesystem, path) to write rebuilt data to, checked before any work: a directory is a
    ``ConfigError``, and so is an existing file unless ``overwrite``."""
    given = os.fspath(out)
    fs, path = store.location(out)
    if given.endswith(("/", os.sep)) or fs.isdir(path):
        raise ConfigError(
            f"cannot write the rebuilt data to {given!r}: it is a directory; give a file path "
            "(e.g. a file inside that directory)"
        )
    if not overwrite and fs.exists(path):
        raise ConfigError(
            f"cannot write the rebuilt data to {given!r}: the file already exists; pass "
            "overwrite=True (CLI: --force) to replace it, or choose another path"
        )
    return fs, path


def _output_buffer(size: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` of ``size`` and a writable view of it, to fill before anyone sees it.

    This is the C API's way to build bytes in place (``PyBytes_FromStringAndSize(NULL, n)``:
    the contents are uninitialised until the creator fills them), reached through ctypes. Large
    fresh memory is slow to first touch, so writing the result once instead of building parts
    and concatenating them saves a pass that costs as much as decompressing (or sealing) it.
    """
    out = _PyBytes_FromStringAndSize(None, size)
    address = _PyBytes_AsString(out)
    return out, memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def _decompress_into(dctx: zstandard.ZstdDecompressor, compressed: bytes, into: memoryview) -> int:
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


def _open_output(fs: Any, partial: str, out: store.URL) -> IO[bytes]:
    """``partial`` opened for writing; a missing directory is a ``ConfigError`` naming it."""
    try:
        return fs.open(partial, "wb")
    except (FileNotFoundError, NotADirectoryError) as exc:
        given = os.fspath(out)
        parent = os.path.dirname(given) or "."
        problem = "does not exist" if isinstance(exc, FileNotFoundError) else "is not a directory"
        raise ConfigError(
            f"cannot write the rebuilt data to {given!r}: its directory {parent!r} {problem}; "
            "create that directory first, or choose an output path in an existing one"
        ) from None


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


def _memory_sources(
    shards: Sequence[bytes | None], present: Sequence[bool] | None
) -> list[ShardSource | None]:
    if isinstance(shards, bytes | bytearray | memoryview | str) or not isinstance(shards, Sequence):
        raise ConfigError(
            "reconstruct() takes a list of shards (bytes, or None for a missing shard), as "
            f"returned by process(); got {type(shards).__name__}"
        )
    if present is not None and len(present) != len(shards):
        raise ConfigError(
            f"present has {len(present)} entries but there are {len(shards)} shards; give one "
            "flag per shard"
        )
    _check_shard_types(shards)
    return [
        None if shard is None or (present is not None and not present[i]) else BytesSource(shard)
        for i, shard in enumerate(shards)
    ]


def _check_shard_types(shards: Sequence[Any]) -> None:
    """Refuse, before any work, a shard that is neither None nor contiguous bytes-like data.

    Damaged bytes count as a missing shard; a str or another object is a caller's mistake, and
    calling it damage would only say "0 bytes" about data that was never bytes at all.
    """
    wrong: dict[str, list[int]] = {}
    for i, shard in enumerate(shards):
        if shard is None:
            continue
        if not isinstance(shard, str):
            try:
                with memoryview(shard) as view:
                    if view.c_contiguous:
                        continue
                    kind = f"non-contiguous {type(shard).__name__}"
            except TypeError:
                kind = type(shard).__name__
        else:
            kind = "str"
        wrong.setdefault(kind, []).append(i)
    if not wrong:
        return
    given = "; ".join(f"{_positions(at, len(shards))} {kind}" for kind, at in wrong.items())
    hint = (
        " (shards are binary: read shard files in binary mode; if you stored them as text, "
        "e.g. hex or base64, decode them back to bytes first)"
        if "str" in wrong
        else ""
    )
    raise ConfigError(
        f"each shard must be bytes, bytearray or a contiguous memoryview (or None for a missing "
        f"shard), as process() returns them; but {given}{hint}"
    )


def _positions(at: list[int], total: int) -> str:
    if len(at) == total:
        return f"all {total} shards are" if total > 1 else "the shard is"
    listed = ", ".join(map(str, at[:8])) + (", ..." if len(at) > 8 else "")
    return f"shard {listed} is" if len(at) == 1 else f"shards {listed} are"


def _segments(shard_set: ShardSet) -> range:
    return range(shard_set.header.segment_count)


def _read_segments(source: IO[bytes], header: ShardHeader) -> Iterator[tuple[int, bytes]]:
    """(index, plaintext) of each segment of a file whose size is in ``header``."""
    for j in range(header.segment_count):
        expected = segment_length(j, header.original_size, header.segment_size)
        chunk = source.read(expected)
        if len(chunk) != expected:
            raise CESError("the source file shrank while it was being sharded; try again")
        yield j, chunk
    if source.read(1):
        raise CESError("the source file grew while it was being sharded; try again")


def _write_parts(out: IO[bytes], parts: Iterable[bytes], progress: Progress | None) -> int:
    written = 0
    for part in parts:
        out.write(part)
        written += len(part)
        if progress:
            progress(len(part))
    return written
