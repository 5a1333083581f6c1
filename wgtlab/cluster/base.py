"""``Cluster``: the one interface every back-end implements (run a task on a named worker).

``LocalCluster`` and ``DaskCluster`` are two implementations; the manager only sees this class,
so verification, trust and rate limits work the same on both.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab.cluster.display import cluster_html
from wgtlab.cluster.faults import Fault, FaultMap
from wgtlab.cluster.identity import fingerprint
from wgtlab.cluster.manager import delegate_job
from wgtlab.cluster.ratelimit import RateLimit
from wgtlab.cluster.task import Task, WorkerReply
from wgtlab.errors import ConfigError
from wgtlab.jobs.plan import JobDefinition, JobPlan, JobRunner
from wgtlab.jobs.result import JobResult
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.trust.ledger import TrustLedger
from wgtlab.trust.policy import TrustPolicy

__all__ = ["Cluster"]


class Cluster(JobRunner):
    """A set of named, untrusted workers that run sandboxed tasks.

    A subclass provides:

    - ``worker_names()``: the workers that may get tasks now;
    - ``identities()``: each worker's Ed25519 public key, learnt when it registered;
    - ``submit(worker, task)``: start ``task`` on ``worker``; the future fails if the worker
      crashes or vanishes;

    and calls ``super().__init__(...)`` with its trust ledger, policy and rate limit. It may
    override ``has_left`` (a worker that left loses trust once, not once per task it held),
    ``slots_per_worker`` and ``deadline_slack_s`` (how the task deadline allows for queueing),
    ``_shutdown`` (what ``close`` releases) and ``_card_detail`` (the HTML card's line).

    It then gets ``run(job)``, ``close()`` / ``closed``, the context manager, one task-deadline
    formula, checked simulated faults (``faults``), worker fingerprints and the notebook card.
    """

    #: seconds added to every task deadline (a remote round trip)
    deadline_slack_s: float = 0.0

    def __init__(
        self,
        *,
        ledger: TrustLedger | str | Path | None,
        policy: TrustPolicy | None,
        rate_limit: RateLimit,
        seed: int | None,
    ) -> None:
        self.ledger, self.policy = _trust(ledger, policy, seed)
        self.rate_limit = rate_limit
        self.faults: dict[str, Fault] = {}
        self._closed = False

    # --- what a subclass provides ----------------------------------------------------------------

    @abstractmethod
    def worker_names(self) -> list[str]:
        """The workers that may be given tasks now."""

    @abstractmethod
    def identities(self) -> dict[str, Ed25519PublicKey]:
        """Each worker's public key, learnt when it registered."""

    @abstractmethod
    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        """Start ``task`` on ``worker``; the future fails if the worker crashes or vanishes."""

    def has_left(self, worker: str) -> bool:
        """Whether ``worker`` has left the cluster (its lost tasks run elsewhere)."""
        return False

    def slots_per_worker(self) -> int:
        """How many tasks one worker runs at once."""
        return self.rate_limit.max_in_flight

    def _shutdown(self) -> None:
        """Release what the cluster holds (threads, processes, connections); called once."""

    def _card_detail(self) -> str:
        """The HTML card's line under the cluster's kind."""
        return f"{len(self.worker_names())} sandboxed workers"

    # --- what every cluster gets ---------------------------------------------------------------

    def run(self, job: JobPlan | JobDefinition) -> JobResult:
        """Run a job (or its plan) on this cluster -> its verified ``JobResult``."""
        return delegate_job(job, self)

    def task_deadline_seconds(self, limits: ResourceLimits) -> float:
        """How long after submission a reply may take before the worker counts as stalled: the
        sandbox's own deadline with a margin, times the tasks queued ahead on one slot, plus
        ``deadline_slack_s``."""
        one = limits.max_execution_time_ms / 1000.0 * 1.5 + 1.0
        queued = math.ceil(self.rate_limit.max_in_flight / max(1, self.slots_per_worker()))
        return one * queued + self.deadline_slack_s

    def fingerprint(self, worker: str) -> str:
        """``worker``'s trust-ledger id: the fingerprint of its public key."""
        return fingerprint(self.identities()[worker])

    def worker_ids(self) -> dict[str, str]:
        """Each worker's name -> its trust-ledger id."""
        return {name: fingerprint(key) for name, key in self.identities().items()}

    @staticmethod
    def named_faults(faults: FaultMap | None, names: Sequence[str]) -> dict[str, Fault]:
        """``faults`` keyed by worker name (an int key is the worker's index), checked against
        ``names``: every key a worker, every value a ``wgt.faults`` fault."""
        named: dict[str, Fault] = {}
        unknown = []
        for key, fault in (faults or {}).items():
            index = key if isinstance(key, int) and not isinstance(key, bool) else None
            name = names[index] if index is not None and 0 <= index < len(names) else key
            if name not in names:
                unknown.append(key)
                continue
            if not isinstance(fault, Fault):
                raise ConfigError(f"faults[{key!r}] must be a wgt.faults fault, got {fault!r}")
            named[str(name)] = fault
        if unknown:
            raise ConfigError(
                f"faults name unknown workers {unknown}; this cluster has "
                f"{', '.join(names[:3])}{' .. ' + names[-1] if len(names) > 3 else ''}"
            )
        return named

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the workers; jobs running now fail with a ClusterError. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_html_(self) -> str:
        ids = self.worker_ids()
        states = self.ledger.states(ids.values())
        workers = [(n, states[ids[n]], self.faults.get(n)) for n in self.worker_names()]
        return cluster_html(
            type(self).__name__, self._card_detail(), workers, self.policy.quarantine_threshold
        )


def _trust(
    ledger: TrustLedger | str | Path | None, policy: TrustPolicy | None, seed: int | None
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
