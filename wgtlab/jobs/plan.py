"""``JobPlan``: a job frozen for running (kernel, limits, verification, retries, error policy,
chunk source), and ``JobRunner``, what runs plans (every cluster).

``Job.plan()`` and ``DefinedJob.plan(data)`` make plans; the manager reads nothing else. The
modes and policies a plan takes are the ``Literal`` aliases below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from wgtlab import defaults
from wgtlab.errors import JobDefinitionError, JobError
from wgtlab.jobs.chunking import InputSpec, iter_chunks
from wgtlab.jobs.events import Subscriber
from wgtlab.jobs.result import JobResult
from wgtlab.sandbox.kernels.base import Kernel
from wgtlab.sandbox.limits import ResourceLimits

__all__ = [
    "ON_ERROR",
    "VERIFICATION_MODES",
    "ChunkSource",
    "JobDefinition",
    "JobPlan",
    "JobRunner",
    "OnError",
    "Verification",
    "VerificationMode",
]

VerificationMode = Literal["hash", "merkle", "redundancy"]
OnError = Literal["fail", "continue"]

VERIFICATION_MODES: tuple[VerificationMode, ...] = get_args(VerificationMode)
ON_ERROR: tuple[OnError, ...] = get_args(OnError)


@dataclass(frozen=True)
class Verification:
    """How a job's results are checked (see DESIGN.md, "Verification and trust")."""

    mode: VerificationMode = defaults.JOB_VERIFICATION
    replicas: int = defaults.JOB_REPLICAS
    max_replicas: int = defaults.JOB_REPLICAS
    adaptive: bool = True  # trusted workers may be spot-checked instead (redundancy only)

    @classmethod
    def of(
        cls,
        mode: str,
        replicas: int | None = None,
        max_replicas: int | None = None,
        adaptive: bool = True,
    ) -> Verification:
        if mode not in VERIFICATION_MODES:
            raise JobDefinitionError(
                f"unknown verification mode {mode!r}; use one of {', '.join(VERIFICATION_MODES)}"
            )
        if replicas is None:
            replicas = 2 if mode == "redundancy" else 1
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise JobDefinitionError(f"replicas must be a positive int, got {replicas!r}")
        if mode != "redundancy" and replicas != 1:
            raise JobDefinitionError(
                f"verify({mode!r}) runs each chunk once; use verify('redundancy', "
                f"replicas={replicas}) to run it on {replicas} workers"
            )
        if max_replicas is None:
            max_replicas = replicas + defaults.MAX_EXTRA_REPLICAS if replicas > 1 else 1
        if not isinstance(max_replicas, int) or max_replicas < replicas:
            raise JobDefinitionError(
                f"max_replicas ({max_replicas!r}) must be an int >= replicas ({replicas})"
            )
        if adaptive not in (True, False):
            raise JobDefinitionError(f"adaptive must be True or False, got {adaptive!r}")
        return cls(mode, replicas, max_replicas, bool(adaptive))


@dataclass(frozen=True)
class ChunkSource:
    """Where a plan's chunks come from: the input cut by its chunk sizes, or by a ``split``
    function (the seed system's form; trusted side). Iterating it reads the input anew."""

    job_name: str
    input: InputSpec
    input_kind: str
    splitter: Callable[[Any], Sequence[Any]] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self.splitter is None:
            return iter_chunks(self.input, self.input_kind)
        try:
            parts = self.splitter(self.input.source)
        except Exception as exc:  # the user's split (trusted side)
            raise JobError(
                f"job {self.job_name!r}: split() raised {type(exc).__name__}: {exc}; nothing "
                "was sent to any worker"
            ) from exc
        if not isinstance(parts, (list, tuple)):
            raise JobDefinitionError(
                f"split() must return a list of chunks, got {type(parts).__name__}"
            )
        return iter(parts)


@dataclass(frozen=True)
class JobPlan:
    """Everything the manager needs to run a job, checked and frozen."""

    name: str
    kernel: Kernel
    source: ChunkSource
    verification: Verification
    limits: ResourceLimits
    retries: int
    on_error: OnError
    subscribers: tuple[Subscriber, ...] = ()

    def check_workers(self, workers: int) -> None:
        """Raise JobDefinitionError if ``workers`` workers are too few for this plan."""
        if self.verification.replicas > workers:
            raise JobDefinitionError(
                f"job {self.name!r} asks for {self.verification.replicas} replicas but the "
                f"cluster has {workers} workers; lower replicas or add workers"
            )


class JobDefinition(ABC):
    """A job ready to be planned: ``wgt.Job`` (and anything else that makes a ``JobPlan``)."""

    @abstractmethod
    def plan(self) -> JobPlan:
        """The checked, frozen plan of this job (JobDefinitionError if it cannot run)."""


class JobRunner(ABC):
    """What runs a ``JobPlan`` and returns its ``JobResult``: every cluster is one.

    Defined here, below the cluster layer, so ``job.run(on=...)`` can check what it is given.
    """

    @abstractmethod
    def run(self, job: JobPlan | JobDefinition) -> JobResult:
        """Run ``job`` (a plan, or a definition to plan first) -> ``JobResult``."""
