"""``LocalCluster``: the embedded default, sandboxed workers on this machine's threads.

Each worker ``local-N`` is one thread with its own Ed25519 identity; wasm releases the GIL, so
workers run in parallel on all cores. Simulated faults (``wgt.faults``) wrap chosen workers.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab import defaults
from wgtlab.cluster.base import RateLimit, Task, WorkerReply, cluster_trust
from wgtlab.cluster.faults import Fault
from wgtlab.cluster.identity import WorkerIdentity
from wgtlab.cluster.manager import delegate_job
from wgtlab.cluster.worker import execute_chunk, sandbox_for
from wgtlab.errors import ClusterError, ConfigError
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.trust.ledger import TrustLedger
from wgtlab.trust.policy import TrustPolicy


class LocalCluster:
    """``workers`` sandboxed workers named ``local-0`` ... ``local-{N-1}``.

    ``ledger``: a TrustLedger or a path to its SQLite file (default: in memory, for this
    cluster's life). ``faults``: ``{"local-0": wgt.faults.Liar(rate=1.0, seed=7)}``.
    ``identity_dir``: keep worker keys there (default: fresh keys per cluster), so trust in a
    persistent ledger follows the same workers across sessions. ``policy``: a ``TrustPolicy``
    with other thresholds (it brings its ledger). ``seed`` makes worker selection reproducible.
    """

    def __init__(
        self,
        workers: int = defaults.LOCAL_WORKERS,
        ledger: TrustLedger | str | Path | None = None,
        faults: dict[str, Fault] | None = None,
        *,
        rate_limit: RateLimit | None = None,
        identity_dir: str | Path | None = None,
        policy: TrustPolicy | None = None,
        seed: int | None = 0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
            raise ConfigError(
                f"LocalCluster(workers=...) must be an int in 1..1024, got {workers!r}"
            )
        self.names = [f"local-{i}" for i in range(workers)]
        unknown = sorted(set(faults or {}) - set(self.names))
        if unknown:
            raise ConfigError(
                f"faults name unknown workers {unknown}; this cluster has {self.names[0]} .. "
                f"{self.names[-1]}"
            )
        for name, fault in (faults or {}).items():
            if not isinstance(fault, Fault):
                raise ConfigError(f"faults[{name!r}] must be a wgt.faults fault, got {fault!r}")
        self.faults: dict[str, Fault] = dict(faults or {})
        self.ledger, self.policy = cluster_trust(ledger, policy, seed)
        # One task at a time per worker: a worker is the unit of parallelism, as a remote one is.
        self.rate_limit = rate_limit or RateLimit(max_in_flight=1)
        self._identities = {
            name: (
                WorkerIdentity.load_or_create(name, identity_dir)
                if identity_dir is not None
                else WorkerIdentity.generate(name)
            )
            for name in self.names
        }
        self._executors = {
            name: ThreadPoolExecutor(
                max_workers=self.rate_limit.max_in_flight, thread_name_prefix=f"wgt-{name}"
            )
            for name in self.names
        }
        self._lock = threading.Lock()
        self._closed = False

    # --- the cluster interface -------------------------------------------------------------------

    def worker_names(self) -> list[str]:
        return list(self.names)

    def identities(self) -> dict[str, Ed25519PublicKey]:
        return {name: identity.public_key for name, identity in self._identities.items()}

    def fingerprint(self, worker: str) -> str:
        return self._identities[worker].fingerprint

    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        if self._closed:
            raise ClusterError("this LocalCluster is closed; create a new one")
        return self._executors[worker].submit(self._work, worker, task)

    def task_deadline_seconds(self, limits: ResourceLimits) -> float:
        # The sandbox stops a task at its own deadline; past this, the worker itself is stuck.
        return limits.max_execution_time_ms / 1000.0 * 1.5 + 1.0

    def run(self, job: Any) -> Any:
        return delegate_job(job, self)

    # --- a worker's work -------------------------------------------------------------------------

    def _work(self, worker: str, task: Task) -> WorkerReply:
        fault = self.faults.get(worker)
        if fault is not None:
            fault.before(task)
        reply = execute_chunk(
            task,
            sandbox_for(task.limits),
            self._identities[worker],
            tamper=fault.tamper if fault is not None else None,
        )
        return fault.after(task, reply) if fault is not None else reply

    # --- life cycle and display ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        faulty = f", faults={sorted(self.faults)}" if self.faults else ""
        return f"LocalCluster(workers={len(self.names)}{faulty})"

    def _repr_html_(self) -> str:
        from wgtlab.cluster.display import cluster_html

        faulty = f", {len(self.faults)} with simulated faults" if self.faults else ""
        return cluster_html(self, "LocalCluster", f"{len(self.names)} sandboxed workers{faulty}")
