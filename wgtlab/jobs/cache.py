"""The verified-result cache: chunk outcomes that verified, kept content-addressed in SQLite, so
rerunning a cell, or a job after a kernel restart, reuses them instead of computing them again.

Key: the kernel's code digest and parameters, the sandbox limits, and the chunk's input digest.
An entry records how strongly it was verified (hash, or redundancy with N agreeing workers) and
serves only jobs that ask for no more. Entries are authenticated by HMAC under a 0600 key file
beside the database, so whoever can write the cache but not read that key cannot plant a
"verified" outcome. Size-bounded (least recently used go first); many processes may share it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgpack

from wgtlab import defaults
from wgtlab.errors import ConfigError
from wgtlab.jobs.result import Attestation, ChunkOutcome
from wgtlab.keyfiles import local_secret
from wgtlab.sandbox.cache import cache_dir
from wgtlab.sandbox.limits import ResourceLimits

__all__ = ["RESULT_CACHE_ENV", "CachedOutcome", "ResultCache"]

RESULT_CACHE_ENV = "WGTLAB_RESULT_CACHE"
_OFF = ("off", "0", "false", "no")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    mac BLOB NOT NULL,
    strength INTEGER NOT NULL,
    size INTEGER NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_used ON outcomes(used);
"""


@dataclass(frozen=True)
class CachedOutcome:
    """A chunk's verified outcome as the cache keeps it."""

    status: Literal["verified", "error"]
    digest: str  # hex outcome digest (the Merkle leaf's)
    output: bytes
    reason: str | None
    mode: str  # the verification mode it was decided under
    workers: tuple[str, ...]  # who agreed (names at the time)
    attestations: tuple[Attestation, ...]
    fuel: int
    wall_ms: float
    stdout: bytes = b""

    @property
    def strength(self) -> int:
        """The number of workers that agreed under redundancy; 0 for hash and merkle."""
        return len(self.workers) if self.mode == "redundancy" else 0

    def satisfies(self, mode: str, replicas: int) -> bool:
        """Whether this entry is at least as strong as a job asking for ``mode``/``replicas``."""
        return mode != "redundancy" or self.strength >= replicas

    def as_chunk(self, index: int, input_digest: bytes) -> ChunkOutcome:
        """Chunk ``index`` of a result, decided by this entry as it was when first run."""
        return ChunkOutcome(
            index=index,
            status=self.status,
            workers=self.workers,
            dissenters=(),
            digest=self.digest,
            input_digest=input_digest.hex(),
            replicas=len(self.workers),
            requested=len(self.workers),
            fuel=self.fuel,
            wall_ms=self.wall_ms,
            reason=self.reason,
            stdout=self.stdout,
            attestations=self.attestations,
            cached=True,
        )

    def to_plain(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "digest": self.digest,
            "output": self.output,
            "reason": self.reason,
            "mode": self.mode,
            "workers": list(self.workers),
            "attestations": [
                [a.worker, a.worker_id, a.public_key, a.task, a.signature, a.job_id, a.chunk]
                for a in self.attestations
            ],
            "fuel": self.fuel,
            "wall_ms": self.wall_ms,
            "stdout": self.stdout,
        }

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> CachedOutcome:
        return cls(
            status=plain["status"],
            digest=plain["digest"],
            output=plain["output"],
            reason=plain["reason"],
            mode=plain["mode"],
            workers=tuple(plain["workers"]),
            attestations=tuple(Attestation(*a) for a in plain["attestations"]),
            fuel=plain["fuel"],
            wall_ms=plain["wall_ms"],
            stdout=plain["stdout"],
        )


class ResultCache:
    """Verified chunk outcomes in one SQLite file (``path``), at most ``max_bytes`` of them."""

    def __init__(
        self, path: Path | str, *, max_bytes: int = defaults.RESULT_CACHE_MAX_BYTES
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._secret = local_secret(self.path.with_name(self.path.name + ".key"))
            self._con = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
            self._con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"the verified-result cache at {self.path} cannot be used ({exc}); set "
                f"{RESULT_CACHE_ENV} to another file, or to 'off'"
            ) from None
        self._lock = threading.Lock()
        self._puts = 0
        self._total = self._stored_bytes()  # kept current by put, re-read now and then

    def _stored_bytes(self) -> int:
        (total,) = self._con.execute("SELECT COALESCE(SUM(size), 0) FROM outcomes").fetchone()
        return int(total)

    @classmethod
    def default(cls) -> ResultCache | None:
        """``$WGTLAB_RESULT_CACHE`` (a file, or "off"), else ``results.sqlite3`` in the wgtlab
        cache directory."""
        setting = os.environ.get(RESULT_CACHE_ENV)
        if setting is not None and setting.strip().lower() in _OFF:
            return None
        if setting is not None and not setting.strip():
            raise ConfigError(f"{RESULT_CACHE_ENV} is empty; give a file path, or 'off'")
        if setting is not None and Path(setting).is_dir():
            raise ConfigError(f"{RESULT_CACHE_ENV}={setting} is a directory; give a file path")
        return cls(Path(setting) if setting else cache_dir() / "results.sqlite3")

    @staticmethod
    def key_prefix(kernel_digest: str, params: Mapping[str, Any], limits: ResourceLimits) -> bytes:
        """What every chunk key of one kernel under one set of limits starts with (made once
        per job, not once per chunk)."""
        parts = json.dumps(
            {"kernel": kernel_digest, "params": dict(params), "limits": limits.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return parts.encode() + b"\0"

    @staticmethod
    def key(prefix: bytes, input_digest: bytes) -> str:
        """The content address of one chunk's outcome: ``key_prefix(...)`` and its input."""
        return hashlib.sha256(prefix + input_digest).hexdigest()

    def _mac(self, key: str, value: bytes) -> bytes:
        return hmac.new(self._secret, key.encode() + b"\0" + value, hashlib.sha256).digest()

    def get(self, key: str, mode: str, replicas: int) -> CachedOutcome | None:
        """The entry for ``key`` if there is one, authentic and strong enough; else None."""
        with self._lock:
            row = self._con.execute(
                "SELECT value, mac FROM outcomes WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            value, mac = row
            if not hmac.compare_digest(self._mac(key, value), mac):
                self._con.execute("DELETE FROM outcomes WHERE key = ?", (key,))
                self._con.commit()
                return None  # not written by this cache's owner: recompute
            try:
                outcome = CachedOutcome.from_plain(msgpack.unpackb(value, raw=False))
            except (ValueError, TypeError, KeyError, msgpack.UnpackException):
                return None
            if not outcome.satisfies(mode, replicas):
                return None
            self._con.execute("UPDATE outcomes SET used = ? WHERE key = ?", (time.time(), key))
            self._con.commit()
            return outcome

    def put(self, key: str, outcome: CachedOutcome) -> None:
        """Keep ``outcome`` under ``key`` unless a stronger one is there already."""
        value = msgpack.packb(outcome.to_plain(), use_bin_type=True)
        if len(value) > self.max_bytes:
            return
        with self._lock:
            row = self._con.execute(
                "SELECT strength, size FROM outcomes WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[0] > outcome.strength:
                return
            self._con.execute(
                "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?)",
                (key, value, self._mac(key, value), outcome.strength, len(value), time.time()),
            )
            self._con.commit()
            self._total += len(value) - (row[1] if row is not None else 0)
            self._puts += 1
            if self._puts % 64 == 0:  # other processes write too
                self._total = self._stored_bytes()
            if self._total > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Least recently used entries go until the cache is under 90% of ``max_bytes``."""
        total = self._stored_bytes()
        rows = self._con.execute("SELECT key, size FROM outcomes ORDER BY used").fetchall()
        doomed = []
        for key, size in rows:
            if total <= self.max_bytes * 0.9:
                break
            doomed.append((key,))
            total -= size
        self._con.executemany("DELETE FROM outcomes WHERE key = ?", doomed)
        self._con.commit()
        self._total = total

    def info(self) -> dict[str, Any]:
        """Where the cache is, how many entries and bytes it holds, and its bound."""
        with self._lock:
            count, size = self._con.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outcomes"
            ).fetchone()
        return {
            "path": str(self.path),
            "entries": count,
            "bytes": size,
            "max_bytes": self.max_bytes,
        }

    def clear(self) -> int:
        """Remove every entry; how many there were."""
        with self._lock:
            (count,) = self._con.execute("SELECT COUNT(*) FROM outcomes").fetchone()
            self._con.execute("DELETE FROM outcomes")
            self._con.commit()
            self._con.execute("VACUUM")
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __repr__(self) -> str:
        return f"ResultCache({str(self.path)!r})"
