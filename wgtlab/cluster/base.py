"""The cluster interface: run one task on one named worker, and what goes back and forth.

``LocalCluster`` and ``DaskCluster`` are two implementations; the manager only sees this
interface, so verification, trust and rate limits work the same on both. Tasks and replies carry
plain values and bytes only (remote workers are not trusted; nothing they send is unpickled).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab import defaults
from wgtlab.errors import ConfigError
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.trust.ledger import TrustLedger
from wgtlab.trust.policy import TrustPolicy


@dataclass(frozen=True)
class Task:
    """One replica of one chunk, for one worker."""

    job_id: str
    task_id: int  # unique within the job run; the signature binds it
    chunk: int
    replica: int  # 0 for the first copy of a chunk, 1.. for further replicas and retries
    kernel: Any  # a kernel object (see wgtlab/sandbox/kernels/base.py)
    payload: bytes
    limits: ResourceLimits


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error_type is not None


def error_digest(error_type: str) -> bytes:
    """The outcome digest of a sandbox error: replicas agree on an error by its type."""
    return hashlib.sha256(b"wgt-error\x00" + error_type.encode()).digest()


@dataclass(frozen=True)
class RateLimit:
    """Per-worker token bucket: ``tasks_per_second`` refill, ``burst`` capacity, and at most
    ``max_in_flight`` tasks outstanding on the worker."""

    tasks_per_second: float = defaults.WORKER_TASKS_PER_SECOND
    burst: int = defaults.WORKER_BURST
    max_in_flight: int = defaults.WORKER_MAX_IN_FLIGHT

    def __post_init__(self) -> None:
        if self.tasks_per_second <= 0 or self.burst < 1 or self.max_in_flight < 1:
            raise ValueError(
                "RateLimit needs tasks_per_second > 0, burst >= 1 and max_in_flight >= 1, got "
                f"{self.tasks_per_second}, {self.burst}, {self.max_in_flight}"
            )


def cluster_trust(
    ledger: TrustLedger | str | Any | None, policy: TrustPolicy | None, seed: int | None
) -> tuple[TrustLedger, TrustPolicy]:
    """A cluster's ledger and policy from what its constructor was given: a policy (which brings
    its ledger), a ledger or a path to one, or nothing (an in-memory ledger for the cluster's
    life)."""
    if policy is not None:
        if ledger is not None and ledger is not policy.ledger:
            raise ConfigError("give a ledger or a policy (which has its own ledger), not both")
        return policy.ledger, policy
    if not isinstance(ledger, TrustLedger):
        ledger = TrustLedger(":memory:" if ledger is None else ledger)
    return ledger, TrustPolicy(ledger, seed=seed)


class Cluster(Protocol):
    """Anything that can run a task on a named worker and hand back its reply."""

    ledger: Any  # a TrustLedger
    rate_limit: RateLimit

    def worker_names(self) -> list[str]: ...

    def identities(self) -> dict[str, Ed25519PublicKey]:
        """Each worker's public key, learnt when it registered."""
        ...

    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        """Start ``task`` on ``worker``; the future fails if the worker crashes or vanishes."""
        ...

    def task_deadline_seconds(self, limits: ResourceLimits) -> float:
        """How long after submission a reply may take before the worker counts as stalled."""
        ...

    def run(self, job: Any) -> Any:
        """Run a job (``delegate_job(job, self)``) -> JobResult."""
        ...
