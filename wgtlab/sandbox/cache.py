"""The compiled-code cache: wasmtime-serialized modules and components, in memory and on disk.

Serialized code is native code (``deserialize`` runs it as such): it is only loaded from files
this user wrote, under a key that binds the wasmtime version, the engine settings and the source
digest. Each file carries a magic, the key and an HMAC-SHA256 of all of it, keyed with 32 random
bytes kept in ``hmac.key`` in the cache directory (keyfiles.py: mode 0600, this user's; a key
file anyone else could have read or written is replaced). A plain checksum would be forgeable by
whoever can write to the directory; the HMAC is not without the key. A file that fails the check
(corrupt, truncated, foreign, planted, or written under another key) is ignored and rebuilt,
never trusted. Writes are atomic (temporary file + rename), so readers never see half a file
and concurrent writers of the same key are harmless. ``compile_cached`` puts a bounded
in-memory layer in front, shared by every module of the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import platformdirs
import wasmtime

from wgtlab.errors import ConfigError
from wgtlab.keyfiles import local_secret, read_secret

if TYPE_CHECKING:
    from wgtlab.sandbox.engine import SandboxEngine

__all__ = [
    "CACHE_ENV",
    "KEY_FILE",
    "CompiledCache",
    "cache_dir",
    "cache_key",
    "clear_memory_cache",
    "compile_cached",
    "engine_key",
]

T = TypeVar("T")

_MAGIC = b"WGTCACHE2\n"
CACHE_ENV = "WGTLAB_CACHE_DIR"
KEY_FILE = "hmac.key"


def cache_dir() -> Path:
    """``$WGTLAB_CACHE_DIR`` if set, else the user cache directory for wgtlab."""
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("wgtlab")
    return Path(root)


def cache_key(root: Path, *, create: bool) -> bytes | None:
    """The HMAC key of the cache directory ``root`` (keyfiles.py: 32 bytes, mode 0600, this
    user's), made now if ``create``. A key file anyone else could have read or written (loose
    mode, another owner, a symlink, not 32 bytes) is not used; with ``create`` it is replaced,
    so the entries written under it fail their check and are rebuilt."""
    path = root / KEY_FILE
    try:
        return read_secret(path)
    except FileNotFoundError:
        if not create:
            return None
    except (ConfigError, OSError):
        if not create:
            return None
        path.unlink(missing_ok=True)  # a symlink goes, not what it points to
    try:
        return local_secret(path)
    except ConfigError as exc:  # replaced under us again: write nothing this time
        raise OSError(str(exc)) from None


class CompiledCache:
    """A directory of authenticated blobs, one per key string."""

    def __init__(self, root: Path | str | None = None, namespace: str = "modules") -> None:
        self.root = Path(root) if root is not None else cache_dir() / namespace

    def path_for(self, key: str) -> Path:
        return self.root / (hashlib.sha256(key.encode()).hexdigest() + ".bin")

    @staticmethod
    def _mac(secret: bytes, head: bytes, payload: bytes | bytearray | memoryview) -> bytes:
        mac = hmac.new(secret, head, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def load(self, key: str) -> bytes | None:
        """The payload stored under ``key``; None if absent, or if it fails its HMAC (corrupt,
        planted, or written for another key or under another cache key)."""
        path = self.path_for(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        secret = cache_key(self.root, create=False)
        key_bytes = key.encode()
        head = _MAGIC + len(key_bytes).to_bytes(4, "big") + key_bytes
        if secret is None or len(blob) < len(head) + 32 or not blob.startswith(head):
            return None
        payload = memoryview(blob)[len(head) + 32 :]
        tag = blob[len(head) : len(head) + 32]
        if not hmac.compare_digest(self._mac(secret, head, payload), tag):
            return None
        return bytes(payload)

    def store(self, key: str, payload: bytes | bytearray) -> Path:
        """Write ``payload`` under ``key`` atomically; returns the file's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        secret = cache_key(self.root, create=True)
        if secret is None:  # pragma: no cover - create=True makes one or raises
            raise OSError(f"no cache key in {self.root}")
        path = self.path_for(key)
        key_bytes = key.encode()
        head = _MAGIC + len(key_bytes).to_bytes(4, "big") + key_bytes
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".bin")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                f.write(self._mac(secret, head, payload))
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


def engine_key(engine: SandboxEngine, key: str) -> str:
    """The cache key of the source ``key`` compiled on ``engine``: the engine fingerprint
    (wasmtime version and settings) is part of it, so code compiled under other settings is never
    loaded."""
    return f"{engine.fingerprint}|{key}"


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

    ``key`` names the source (e.g. ``"module:<sha256>"``), ``engine_key`` adds the engine's
    fingerprint. A disk
    entry that fails its integrity check or does not deserialize is discarded and rebuilt.
    One thread builds a given key at a time; the others wait for its result.
    """
    full_key = engine_key(engine, key)
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
