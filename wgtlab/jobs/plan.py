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
    """How a job's results are checked (see DESIGN.md, "Verification and trust").

    ``redundancy``: each chunk runs on ``replicas`` distinct workers; it is decided when they
    agree unanimously, and any dissent adds replicas (up to ``max_replicas``, default every
    eligible worker) until one outcome has a strict majority of all replies and at least
    ``replicas`` votes. ``spot_check`` (off by default) is BOINC's adaptive replication: a
    worker with a long run of agreed results runs a chunk alone, replicated only with that
    probability.
    """

    mode: VerificationMode = defaults.JOB_VERIFICATION
    replicas: int = defaults.JOB_REPLICAS
    max_replicas: int | None = None  # None: every eligible worker
    spot_check: float | None = None  # None: every chunk fully replicated

    @classmethod
    def of(
        cls,
        mode: str,
        replicas: int | None = None,
        max_replicas: int | None = None,
        spot_check: float | None = None,
        adaptive: bool | None = None,
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
        if max_replicas is not None and (
            isinstance(max_replicas, bool)
            or not isinstance(max_replicas, int)
            or max_replicas < replicas
        ):
            raise JobDefinitionError(
                f"max_replicas ({max_replicas!r}) must be an int >= replicas ({replicas}), or "
                "None for every eligible worker"
            )
        spot_check = _spot_check(spot_check, adaptive)
        if spot_check is not None and (mode != "redundancy" or replicas == 1):
            raise JobDefinitionError(
                "spot_check applies to verify('redundancy', replicas=N) with N >= 2: it lets a "
                "trusted worker run a chunk alone"
            )
        return cls(mode, replicas, max_replicas, spot_check)


def _spot_check(spot_check: float | None, adaptive: bool | None) -> float | None:
    """``spot_check`` checked; ``adaptive=True`` (the older spelling) is the policy's own rate,
    one chunk in ``ADAPTIVE_RUN_LENGTH``."""
    if adaptive is not None and adaptive not in (True, False):
        raise JobDefinitionError(f"adaptive must be True or False, got {adaptive!r}")
    if spot_check is None:
        return 1.0 / defaults.ADAPTIVE_RUN_LENGTH if adaptive else None
    if adaptive is False:
        raise JobDefinitionError("adaptive=False turns spot checking off: drop spot_check")
    if (
        isinstance(spot_check, bool)
        or not isinstance(spot_check, (int, float))
        or not 0.0 < spot_check <= 1.0
    ):
        raise JobDefinitionError(
            f"spot_check is the probability that a trusted worker's chunk is still replicated, "
            f"in (0, 1], e.g. 0.1; got {spot_check!r}"
        )
    return float(spot_check)


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
    chunking: str = ""  # how chunk sizes were chosen, when the kernel chose them
    cache: bool = True  # reuse (and keep) verified chunk outcomes: the verified-result cache

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
