"""``LocalCluster``: the embedded default, sandboxed workers on this machine's threads.

Each worker ``local-N`` is one thread with its own Ed25519 identity; wasm releases the GIL, so
workers run in parallel on all cores. Simulated faults (``wgt.faults``) wrap chosen workers.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab import defaults
from wgtlab.cluster.base import Cluster
from wgtlab.cluster.faults import FaultMap
from wgtlab.cluster.identity import WorkerIdentity
from wgtlab.cluster.ratelimit import RateLimit
from wgtlab.cluster.task import Task, WorkerReply
from wgtlab.cluster.worker import run_task
from wgtlab.errors import ClusterError, ConfigError
from wgtlab.trust.ledger import TrustLedger
from wgtlab.trust.policy import TrustPolicy

__all__ = ["LocalCluster"]


class LocalCluster(Cluster):
    """``workers`` sandboxed workers named ``local-0`` ... ``local-{N-1}``.

    ``ledger``: a TrustLedger or a path to its SQLite file (default: in memory, for this
    cluster's life). ``faults``: ``{"local-0": wgt.faults.Liar(rate=1.0, seed=7)}`` (a worker's
    name or index). ``identity_dir``: keep worker keys there (default: fresh keys per cluster),
    so trust in a persistent ledger follows the same workers across sessions. ``policy``: a
    ``TrustPolicy`` with other thresholds (it brings its ledger). ``seed`` makes worker
    selection reproducible.
    """

    def __init__(
        self,
        workers: int = defaults.LOCAL_WORKERS,
        ledger: TrustLedger | str | Path | None = None,
        faults: FaultMap | None = None,
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
        named = self.named_faults(faults, self.names)
        super().__init__(
            ledger=ledger,
            policy=policy,
            # A worker runs one task at a time (it is the unit of parallelism, as a remote one
            # is) and holds one more in waiting, so it never idles while the manager checks a
            # reply and places the next task.
            rate_limit=rate_limit or RateLimit(max_in_flight=defaults.LOCAL_MAX_IN_FLIGHT),
            seed=seed,
        )
        self.faults = named
        self._identities = {
            name: (
                WorkerIdentity.load_or_create(name, identity_dir)
                if identity_dir is not None
                else WorkerIdentity.generate(name)
            )
            for name in self.names
        }
        self._executors = {
            name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"wgt-{name}")
            for name in self.names
        }

    # --- the cluster interface -------------------------------------------------------------------

    def worker_names(self) -> list[str]:
        return list(self.names)

    def identities(self) -> dict[str, Ed25519PublicKey]:
        return {name: identity.public_key for name, identity in self._identities.items()}

    def slots_per_worker(self) -> int:
        return 1  # tasks past the first wait in the worker's queue (the deadline allows for it)

    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        if self.closed:
            raise ClusterError("this LocalCluster is closed; create a new one")
        return self._executors[worker].submit(
            run_task, task, self._identities[worker], self.faults.get(worker)
        )

    # --- life cycle and display ------------------------------------------------------------------

    def _shutdown(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def _card_detail(self) -> str:
        faulty = f", {len(self.faults)} with simulated faults" if self.faults else ""
        return f"{len(self.names)} sandboxed workers{faulty}"

    def __repr__(self) -> str:
        faulty = f", faults={sorted(self.faults)}" if self.faults else ""
        return f"LocalCluster(workers={len(self.names)}{faulty})"
