"""What goes to a worker and what comes back: one ``Task``, one ``WorkerReply``.

Both carry plain values and bytes only (remote workers are not trusted; nothing they send is
unpickled). ``wire.py`` is their msgpack form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from wgtlab.sandbox.kernels.base import Kernel
from wgtlab.sandbox.limits import ResourceLimits

__all__ = ["Task", "WorkerReply", "error_digest"]


@dataclass(frozen=True)
class Task:
    """One replica of one chunk, for one worker."""

    job_id: str
    task_id: int  # unique within the job run; the signature binds it
    chunk: int
    replica: int  # 0 for the first copy of a chunk, 1.. for further replicas and retries
    kernel: Kernel
    payload: bytes
    limits: ResourceLimits
    # SHA-256 of ``payload`` as the manager computed it, for a worker in the manager's own
    # process (no second pass over the bytes); it never travels: a remote worker hashes what
    # it received, and signs its own view.
    input_digest: bytes | None = None


@dataclass(frozen=True)
class WorkerReply:
    """What a worker sends back: its outcome (output or sandbox error), digest and signature."""

    job_id: str
    task_id: int
    chunk: int
    worker: str
    output: bytes
    output_sha256: str  # hex; of ``output``
    outcome_digest: bytes  # what is voted on and signed: the output digest, or the error's
    signature: bytes
    fuel_used: int = 0
    wall_ms: float = 0.0
    memory_bytes: int = 0
    error_type: str | None = None
    error_message: str | None = None
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def failed(self) -> bool:
        return self.error_type is not None


def error_digest(error_type: str) -> bytes:
    """The outcome digest of a sandbox error: replicas agree on an error by its type."""
    return hashlib.sha256(b"wgt-error\x00" + error_type.encode()).digest()
