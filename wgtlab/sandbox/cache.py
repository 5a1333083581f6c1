"""The compiled-code cache: wasmtime-serialized modules and components, in memory and on disk.

Serialized code is native code: it is only loaded from files this project wrote, under a key that
binds the wasmtime version, the engine settings and the source digest. Each file carries a magic,
the key and a SHA-256 of its payload; a corrupt, truncated or foreign file is ignored and
rebuilt, never trusted. Writes are atomic (temporary file + rename), so readers never see half a
file and concurrent writers of the same key are harmless. ``compile_cached`` puts a bounded
in-memory layer in front, shared by every module of the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import platformdirs
import wasmtime

if TYPE_CHECKING:
    from wgtlab.sandbox.engine import SandboxEngine

__all__ = ["CACHE_ENV", "CompiledCache", "cache_dir", "clear_memory_cache", "compile_cached"]

T = TypeVar("T")

_MAGIC = b"WGTCACHE1\n"
CACHE_ENV = "WGTLAB_CACHE_DIR"


def cache_dir() -> Path:
    """``$WGTLAB_CACHE_DIR`` if set, else the user cache directory for wgtlab."""
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("wgtlab")
    return Path(root)


class CompiledCache:
    """A directory of integrity-checked blobs, one per key string."""

    def __init__(self, root: Path | str | None = None, namespace: str = "modules") -> None:
        self.root = Path(root) if root is not None else cache_dir() / namespace

    def path_for(self, key: str) -> Path:
        return self.root / (hashlib.sha256(key.encode()).hexdigest() + ".bin")

    def load(self, key: str) -> bytes | None:
        """The payload stored under ``key``; None if absent, corrupt or written for another key."""
        path = self.path_for(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        key_bytes = key.encode()
        head = len(_MAGIC) + 4 + len(key_bytes) + 32
        if (
            len(blob) < head
            or not blob.startswith(_MAGIC)
            or int.from_bytes(blob[len(_MAGIC) : len(_MAGIC) + 4], "big") != len(key_bytes)
            or blob[len(_MAGIC) + 4 : head - 32] != key_bytes
        ):
            return None
        payload = memoryview(blob)[head:]
        if hashlib.sha256(payload).digest() != blob[head - 32 : head]:
            return None
        return bytes(payload)

    def store(self, key: str, payload: bytes | bytearray) -> Path:
        """Write ``payload`` under ``key`` atomically; returns the file's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        key_bytes = key.encode()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".bin")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC)
                f.write(len(key_bytes).to_bytes(4, "big"))
                f.write(key_bytes)
                f.write(hashlib.sha256(payload).digest())
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    def discard(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.path_for(key).unlink()

    def load_compiled(self, key: str, deserialize: Callable[[bytes], T]) -> T | None:
        """The code stored under ``key``, deserialized; None if there is none that loads.

        An entry that passes its integrity check but does not deserialize (written by another
        wasmtime, or for another engine) is discarded: never trusted, rebuilt by the caller.
        """
        blob = self.load(key)
        if blob is None:
            return None
        try:
            return deserialize(blob)
        except (wasmtime.WasmtimeError, ValueError):
            self.discard(key)
            return None

    def load_or_compile(
        self,
        key: str,
        build: Callable[[], T],
        *,
        serialize: Callable[[T], bytes | bytearray],
        deserialize: Callable[[bytes], T],
    ) -> T:
        """The code stored under ``key`` if it loads, else ``build()``, stored for next time."""
        compiled = self.load_compiled(key, deserialize)
        if compiled is None:
            compiled = build()
            with contextlib.suppress(OSError):  # a read-only cache dir only costs speed
                self.store(key, serialize(compiled))
        return compiled


# --- in memory, in front of the disk ------------------------------------------------------------

_MEMORY_CACHE_ENTRIES = 64
_memory_cache: OrderedDict[str, Any] = OrderedDict()
_memory_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def compile_cached(
    engine: SandboxEngine,
    key: str,
    build: Callable[[], T],
    *,
    serialize: Callable[[T], bytes | bytearray],
    deserialize: Callable[[bytes], T],
    disk: CompiledCache | None = None,
) -> T:
    """Compiled code for ``key`` on ``engine``: from memory, else from disk, else ``build()``.

    ``key`` names the source (e.g. ``"module:<sha256>"``); the engine fingerprint (wasmtime
    version and settings) is added, so code compiled under other settings is never loaded. A disk
    entry that fails its integrity check or does not deserialize is discarded and rebuilt.
    One thread builds a given key at a time; the others wait for its result.
    """
    full_key = f"{engine.fingerprint}|{key}"
    with _memory_lock:
        if full_key in _memory_cache:
            _memory_cache.move_to_end(full_key)
            return _memory_cache[full_key]
        key_lock = _key_locks.setdefault(full_key, threading.Lock())
    with key_lock:
        try:
            with _memory_lock:
                if full_key in _memory_cache:
                    return _memory_cache[full_key]
            on_disk = disk if disk is not None else CompiledCache()
            compiled = on_disk.load_or_compile(
                full_key, build, serialize=serialize, deserialize=deserialize
            )
            with _memory_lock:
                _memory_cache[full_key] = compiled
                while len(_memory_cache) > _MEMORY_CACHE_ENTRIES:
                    _memory_cache.popitem(last=False)
        finally:
            with _memory_lock:
                _key_locks.pop(full_key, None)
    return compiled


def clear_memory_cache() -> None:
    """Forget every compiled module held in memory (the disk cache is untouched)."""
    with _memory_lock:
        _memory_cache.clear()
