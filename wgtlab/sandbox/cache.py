"""The compiled-code cache: wasmtime-serialized modules and components, in memory and on disk.

Serialized code is native code (``deserialize`` runs it as such): it is only loaded from files
this user wrote, under a key that binds the wasmtime version, the engine settings and the source
digest. Each file carries a magic, the key and an HMAC-SHA256 of all of it, keyed with 32 random
bytes kept in ``hmac.key`` in the cache directory (mode 0600, this user's; a key file anyone else
could have written or read is replaced). A plain checksum would be forgeable by whoever can
write to the directory; the HMAC is not without the key. A file that fails the check (corrupt,
truncated, foreign, planted, or written under another key) is ignored and rebuilt, never
trusted. Writes are atomic (temporary file + rename), so readers never see half a file and
concurrent writers of the same key are harmless. ``compile_cached`` puts a bounded in-memory
layer in front, shared by every module of the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
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

__all__ = [
    "CACHE_ENV",
    "KEY_FILE",
    "CompiledCache",
    "cache_dir",
    "cache_key",
    "clear_memory_cache",
    "compile_cached",
]

T = TypeVar("T")

_MAGIC = b"WGTCACHE2\n"
CACHE_ENV = "WGTLAB_CACHE_DIR"
KEY_FILE = "hmac.key"
_KEY_BYTES = 32


def cache_dir() -> Path:
    """``$WGTLAB_CACHE_DIR`` if set, else the user cache directory for wgtlab."""
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("wgtlab")
    return Path(root)


def _read_key(path: Path) -> bytes | None:
    """The key in ``path`` if it is a regular file of 32 bytes that only this user can read or
    write (owner us, no group or other bits); else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_mode & 0o077
            or (hasattr(os, "getuid") and info.st_uid != os.getuid())
            or info.st_size != _KEY_BYTES
        ):
            return None
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    return key if len(key) == _KEY_BYTES else None


def cache_key(root: Path, *, create: bool) -> bytes | None:
    """The HMAC key of the cache directory ``root``: read from its key file, or (``create``)
    made now. A key file that is not this user's private 32 bytes is replaced: entries written
    under it then fail their check and are rebuilt."""
    path = root / KEY_FILE
    key = _read_key(path)
    if key is not None or not create:
        return key
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".key-")  # mode 0600, this user's
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_KEY_BYTES))
        try:
            os.link(tmp, path)  # atomic, and never over a key another process just made
        except FileExistsError:
            if _read_key(path) is None:  # not ours, or not private: replace it
                os.replace(tmp, path)
                tmp = ""
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    key = _read_key(path)
    if key is None:
        raise OSError(f"cannot make a private cache key in {root}")
    return key


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
        assert secret is not None
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
