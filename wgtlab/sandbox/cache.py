"""On-disk cache of compiled code (wasmtime-serialized modules and components).

Serialized code is native code: it is only loaded from files this project wrote, under a key that
binds the wasmtime version, the engine settings and the source digest. Each file carries a magic,
the key and a SHA-256 of its payload; a corrupt, truncated or foreign file is ignored and
rebuilt, never trusted. Writes are atomic (temporary file + rename), so readers never see half a
file and concurrent writers of the same key are harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import platformdirs

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

    def store(self, key: str, payload: bytes) -> Path:
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
