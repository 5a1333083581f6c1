"""Shard sets at rest: one file per shard plus a JSON manifest, under any fsspec URL; and the
files CES streams from and rebuilds into.

A local directory, ``memory://``, ``s3://``, ... all work the same. The manifest lists the shard
files; a listed file that is gone is a missing shard, not a crash. It holds no secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import fsspec

from wgtlab.ces.erasure import MAX_TOTAL_SHARDS
from wgtlab.ces.format import HEADER_BYTES, MAX_ORIGINAL_SIZE, ShardHeader, segment_length
from wgtlab.ces.shardset import FileSource
from wgtlab.ces.writer import Sealed, ShardWriter
from wgtlab.errors import CESError, ConfigError, ShardFormatError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "wgtlab-ces-shards"
MANIFEST_VERSION = 1
SHARD_PATTERN = "shard-*.ces"
# 255 names of at most 255 bytes and a few numbers: anything far bigger is not a manifest.
MAX_MANIFEST_BYTES = 1 << 20
_DATASET_ID = re.compile(r"(?:[0-9a-f]{32})?")

URL = str | os.PathLike[str]
Progress = Callable[[int], None]


def shard_name(position: int) -> str:
    return f"shard-{position:03d}.ces"


@dataclass(frozen=True)
class ShardManifest:
    """What a shard-set location holds: the shard file names (None where none was written)."""

    files: tuple[str | None, ...]
    dataset_id: str = ""
    data_shards: int = 0
    parity_shards: int = 0
    original_size: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "version": MANIFEST_VERSION,
                "dataset_id": self.dataset_id,
                "data_shards": self.data_shards,
                "parity_shards": self.parity_shards,
                "original_size": self.original_size,
                "shards": list(self.files),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ShardManifest:
        """The manifest in ``text``, every field checked for type and range before use.

        Anything else (not JSON, nested past any sane depth, a field of the wrong type or out
        of range, a shard name that is not a plain file name) is a ``ShardFormatError``.
        """
        if len(text) > MAX_MANIFEST_BYTES:
            raise ShardFormatError(
                f"{MANIFEST_NAME} is {len(text):,} bytes, more than a manifest can be "
                f"({MAX_MANIFEST_BYTES:,})"
            )
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ShardFormatError(f"not a wgtlab CES manifest ({MANIFEST_NAME})")
        version = doc.get("version")
        if type(version) is not int or version != MANIFEST_VERSION:
            raise ShardFormatError(
                f"manifest version {_shown(version)} is not supported (this wgtlab reads "
                f"{MANIFEST_VERSION})"
            )
        files = doc.get("shards")
        if not isinstance(files, list) or len(files) > MAX_TOTAL_SHARDS:
            raise ShardFormatError(
                f"manifest field 'shards' must be a list of at most {MAX_TOTAL_SHARDS} file "
                f"names, got {_shown(files)}"
            )
        for name in files:
            if name is not None and not _plain_file_name(name):
                raise ShardFormatError(f"manifest lists an invalid shard file name {_shown(name)}")
        dataset_id = doc.get("dataset_id", "")
        if not isinstance(dataset_id, str) or not _DATASET_ID.fullmatch(dataset_id):
            raise ShardFormatError(
                f"manifest field 'dataset_id' must be 32 hex digits (or empty), got "
                f"{_shown(dataset_id)}"
            )
        return cls(
            files=tuple(files),
            dataset_id=dataset_id,
            data_shards=_manifest_int(doc, "data_shards", MAX_TOTAL_SHARDS),
            parity_shards=_manifest_int(doc, "parity_shards", MAX_TOTAL_SHARDS),
            original_size=_manifest_int(doc, "original_size", MAX_ORIGINAL_SIZE),
        )

    @classmethod
    def describe(cls, files: Sequence[str | None], first_shard: bytes | None) -> ShardManifest:
        """A manifest for ``files``, with set fields read from a shard's header if it parses."""
        try:
            header = ShardHeader.parse(bytes(first_shard or b"")[:HEADER_BYTES])
        except ShardFormatError:
            return cls(files=tuple(files))
        return cls(
            files=tuple(files),
            dataset_id=header.dataset_id.hex(),
            data_shards=header.data_shards,
            parity_shards=header.parity_shards,
            original_size=header.original_size,
        )


def _manifest_int(doc: dict[str, Any], field: str, most: int) -> int:
    """An integer field of the manifest: absent or null is 0 (unknown), else 0 to ``most``."""
    value = doc.get(field)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= most:
        raise ShardFormatError(
            f"manifest field {field!r} must be an integer from 0 to {most:,}, got {_shown(value)}"
        )
    return value


def _plain_file_name(name: object) -> bool:
    """Whether ``name`` is one file name in the shard-set directory: no separator, no NUL, not
    ``.`` or ``..``, encodable (no lone surrogates) and of a length file systems accept."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    if any(c in name for c in "/\\\0"):
        return False
    try:
        return len(name.encode("utf-8")) <= 255
    except UnicodeEncodeError:
        return False


def _shown(value: object) -> str:
    """A hostile manifest value, shown short: its type and the start of its repr."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, str | int | float | bool | type(None)) else ""
    if len(text) > 60:
        text = text[:57] + "..."
    return text or f"a {type(value).__name__}"


def location(url: URL) -> tuple[Any, str]:
    """(fsspec filesystem, path) for a URL or local path."""
    try:
        fs, path = fsspec.core.url_to_fs(os.fspath(url))
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"cannot open shard location {os.fspath(url)!r}: {exc}") from exc
    return fs, path.rstrip("/") or path


def prepare(url: URL, overwrite: bool) -> tuple[Any, str]:
    """Make ``url`` ready to receive a shard set; refuse to mix with an existing one."""
    fs, root = location(url)
    if fs.exists(root) and not fs.isdir(root):
        raise ConfigError(f"{os.fspath(url)!r} is a file; shard sets are written to a directory")
    old = _listed_or_found(fs, root)
    if old:
        if not overwrite:
            raise ConfigError(
                f"{os.fspath(url)!r} already holds a shard set; pass overwrite=True (CLI: "
                "--force) to replace it, or choose an empty location"
            )
        for name in old:
            _remove(fs, f"{root}/{name}")
        _remove(fs, f"{root}/{MANIFEST_NAME}")
    fs.makedirs(root, exist_ok=True)
    return fs, root


def write_manifest(fs: Any, root: str, manifest: ShardManifest) -> None:
    # Written last: a location with a manifest holds a complete shard set.
    with fs.open(f"{root}/{MANIFEST_NAME}", "w") as f:
        f.write(manifest.to_json())


def save(shards: Sequence[bytes | None], url: URL, *, overwrite: bool = False) -> ShardManifest:
    """Write a shard set under ``url`` (a directory or any fsspec URL); None entries are skipped.

    Returns the manifest written. Refuses a location that already holds a shard set unless
    ``overwrite``.
    """
    if isinstance(shards, bytes | bytearray | memoryview | str):
        raise ConfigError("save() takes a list of shards (as returned by CESPipeline.process)")
    fs, root = prepare(url, overwrite)
    files: list[str | None] = []
    for position, shard in enumerate(shards):
        if shard is None:
            files.append(None)
            continue
        name = shard_name(position)
        with fs.open(f"{root}/{name}", "wb") as f:
            f.write(shard)
        files.append(name)
    manifest = ShardManifest.describe(files, next((s for s in shards if s is not None), None))
    write_manifest(fs, root, manifest)
    return manifest


def load(url: URL) -> list[bytes | None]:
    """The shards stored under ``url``, in manifest order; a missing file gives None."""
    fs, root = location(url)
    manifest = read_manifest(fs, root)
    shards: list[bytes | None] = []
    for name in manifest.files:
        path = f"{root}/{name}"
        try:
            shards.append(fs.cat_file(path) if name and _regular_size(fs, path) >= 0 else None)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            shards.append(None)
    return shards


def read_manifest(fs: Any, root: str) -> ShardManifest:
    """The manifest under ``root``; if it is gone or damaged, the shard files found there."""
    path = f"{root}/{MANIFEST_NAME}"
    try:
        size = _regular_size(fs, path)
        if size < 0:
            raise ShardFormatError(f"{MANIFEST_NAME} is not a regular file")
        if size > MAX_MANIFEST_BYTES:
            raise ShardFormatError(
                f"{MANIFEST_NAME} is larger than a manifest can be ({MAX_MANIFEST_BYTES:,} bytes)"
            )
        return ShardManifest.from_json(fs.cat_file(path))
    except (
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        ShardFormatError,
    ) as exc:
        problem = str(exc) if isinstance(exc, ShardFormatError) else f"no readable {MANIFEST_NAME}"
    found = _found(fs, root)
    if not found:
        raise ShardFormatError(f"no CES shard set at {root!r}: {problem} and no {SHARD_PATTERN}")
    return ShardManifest(files=tuple(found))


def open_sources(url: URL) -> tuple[list[FileSource | None], list[str], list[str]]:
    """Open every shard file under ``url`` for random access: (sources, names, missing reasons).

    Close the sources with ``close_sources`` when done.
    """
    fs, root = location(url)
    manifest = read_manifest(fs, root)
    sources: list[FileSource | None] = []
    names: list[str] = []
    reasons: list[str] = []
    for position, name in enumerate(manifest.files):
        names.append(name or shard_name(position))
        path = f"{root}/{name}"
        try:
            if not name:
                raise FileNotFoundError
            size = _regular_size(fs, path)
            if size < 0:
                sources.append(None)
                reasons.append("not a regular file")
                continue
            sources.append(FileSource(fs.open(path, "rb"), size, name))
            reasons.append("")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            sources.append(None)
            reasons.append("file not found" if name else "not written")
    return sources, names, reasons


def _regular_size(fs: Any, path: str) -> int:
    """The size of the file at ``path``, or -1 if it is something else (a directory, a named
    pipe or a device, which would block or never end): those are never opened or read."""
    info = fs.info(path)
    if info.get("type") != "file":
        return -1
    return int(info.get("size") or 0)


def close_sources(sources: Sequence[FileSource | None]) -> None:
    for source in sources:
        if source is not None:
            source.close()


# --- streaming a shard set out -----------------------------------------------------------------


def write_store(
    dest: URL,
    header: ShardHeader,
    sealed: Iterable[Sealed],
    mac_key: bytes,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ShardManifest:
    """A shard set written under ``dest`` as segments arrive; the manifest goes last.

    On any failure the shard files written so far are removed, so ``dest`` never holds half a
    set behind a manifest.
    """
    fs, root = prepare(dest, overwrite)
    names = [shard_name(i) for i in range(header.total_shards)]
    with contextlib.ExitStack() as stack:
        sinks = [stack.enter_context(fs.open(f"{root}/{name}", "wb")) for name in names]
        try:
            writer = ShardWriter(header, sinks, mac_key)
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
    manifest = ShardManifest(
        files=tuple(names),
        dataset_id=header.dataset_id.hex(),
        data_shards=header.data_shards,
        parity_shards=header.parity_shards,
        original_size=header.original_size,
    )
    write_manifest(fs, root, manifest)
    return manifest


# --- the file to shard -------------------------------------------------------------------------


def source_size(fs: Any, path: str, given: URL) -> int:
    """The size of the file to shard at ``path``; a missing file or a directory is a
    ``ConfigError`` naming ``given`` (filesystems differ: a local directory has a size)."""
    try:
        if fs.isdir(path):
            raise ConfigError(f"{os.fspath(given)!r} is a directory, not a file to shard")
        return int(fs.size(path))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, TypeError):
        raise ConfigError(f"no such file to shard: {os.fspath(given)!r}") from None


@contextlib.contextmanager
def open_input(src: URL) -> Iterator[tuple[int, IO[bytes]]]:
    """(size, binary file) of the file to shard at ``src``, closed on exit."""
    fs, path = location(src)
    size = source_size(fs, path, src)
    with fs.open(path, "rb") as source:
        yield size, source


def read_segments(source: IO[bytes], header: ShardHeader) -> Iterator[tuple[int, bytes]]:
    """(index, plaintext) of each segment of a file whose size is in ``header``."""
    for j in range(header.segment_count):
        expected = segment_length(j, header.original_size, header.segment_size)
        chunk = source.read(expected)
        if len(chunk) != expected:
            raise CESError("the source file shrank while it was being sharded; try again")
        yield j, chunk
    if source.read(1):
        raise CESError("the source file grew while it was being sharded; try again")


# --- the rebuilt file --------------------------------------------------------------------------


def output_target(out: URL, *, overwrite: bool) -> tuple[Any, str]:
    """(filesystem, path) to write rebuilt data to, checked before any work: a directory is a
    ``ConfigError``, and so is an existing file unless ``overwrite``."""
    given = os.fspath(out)
    fs, path = location(out)
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


class RebuildOutput:
    """Where rebuilt data goes: a binary file the caller holds, or a path or URL.

    A path is checked when this is made (before any work, see ``output_target``), and written
    under a temporary name renamed only once complete, so a failed rebuild leaves nothing.
    """

    def __init__(self, out: URL | IO[bytes], *, overwrite: bool = False) -> None:
        self.file: IO[bytes] | None = None
        self.target: tuple[Any, str] | None = None
        if hasattr(out, "write"):
            self.file = cast("IO[bytes]", out)
        else:
            self.given = out
            self.target = output_target(self.given, overwrite=overwrite)

    def write(self, parts: Iterable[bytes], progress: Progress | None = None) -> int:
        """Write ``parts`` in order; the bytes written."""
        if self.file is not None:
            return _write_parts(self.file, parts, progress)
        assert self.target is not None
        fs, path = self.target
        partial = f"{path}.partial"
        sink = _open_output(fs, partial, self.given)
        try:
            with sink as f:
                written = _write_parts(f, parts, progress)
            fs.mv(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.rm_file(partial)
            raise
        return written


def _open_output(fs: Any, partial: str, out: URL) -> IO[bytes]:
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


def _write_parts(out: IO[bytes], parts: Iterable[bytes], progress: Progress | None) -> int:
    written = 0
    for part in parts:
        out.write(part)
        written += len(part)
        if progress:
            progress(len(part))
    return written


def _found(fs: Any, root: str) -> list[str]:
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in fs.glob(f"{root}/{SHARD_PATTERN}"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _listed_or_found(fs: Any, root: str) -> list[str]:
    try:
        manifest = read_manifest(fs, root)
    except ShardFormatError:
        return []
    return sorted({n for n in manifest.files if n} | set(_found(fs, root)))


def _remove(fs: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
