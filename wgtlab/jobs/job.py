"""``Job``: what to run (kernel), over what (input, chunking), how to check it, under which limits.

A job is only a definition; ``job.run(on=cluster)`` hands it to a cluster, which runs it through
the manager. The seed system's decorator form (``@Job.define`` with ``split`` / ``execute`` /
``merge``) builds the same kind of job.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from wgtlab import defaults
from wgtlab.errors import ConfigError, JobDefinitionError
from wgtlab.jobs import dsl, runtime
from wgtlab.jobs.chunking import (
    InputSpec,
    default_chunk_bytes,
    input_columns,
    rows_head,
    source_kind,
)
from wgtlab.jobs.events import Subscriber
from wgtlab.jobs.kernels import resolve_kernel
from wgtlab.jobs.plan import (
    ON_ERROR,
    VERIFICATION_MODES,
    ChunkSource,
    JobDefinition,
    JobPlan,
    JobRunner,
    OnError,
    Verification,
)
from wgtlab.sandbox.kernels.base import Kernel
from wgtlab.sandbox.limits import ResourceLimits

if TYPE_CHECKING:
    from wgtlab.jobs.result import JobResult

__all__ = ["ON_ERROR", "VERIFICATION_MODES", "DefinedJob", "Job", "JobSettings", "Verification"]

_KERNEL_INPUTS = {  # which input kinds each kernel input kind accepts
    "float64": ("table", "array", "list", "shards"),  # shard sets made by shard_dataframe
    "records": ("table", "array", "list", "shards"),
    "bytes": ("bytes", "text", "file", "shards"),
    "text": ("bytes", "text", "file", "shards"),
}

_Settings = TypeVar("_Settings", bound="JobSettings")


class JobSettings:
    """How a job runs, whatever it runs: verification, sandbox limits, retries, error policy and
    subscribers. ``Job`` and ``DefinedJob`` both have these settings (and these methods).

    Each setting is given once: a second ``verify``, ``retries`` or ``on_error`` (or a limit
    given twice) would silently replace the first, so it is a JobDefinitionError; derive a
    variant with ``copy()`` and set it there."""

    name: str

    def __init__(self) -> None:
        self.verification = Verification()
        self.resource_limits = ResourceLimits()
        self.max_retries = defaults.JOB_RETRIES
        self.error_policy: OnError = "fail"
        self.subscribers: list[Subscriber] = []
        self._given: set[str] = set()

    def _once(self, setting: str, call: str) -> None:
        """Refuse ``setting`` given a second time (by ``call``)."""
        if setting in self._given:
            raise JobDefinitionError(
                f"job {self.name!r} already has {setting} from an earlier {call}; a second one "
                "would replace it silently. Give it once, or make a variant with job.copy() "
                "and set it there"
            )
        self._given.add(setting)

    def verify(
        self: _Settings,
        mode: str,
        *,
        replicas: int | None = None,
        max_replicas: int | None = None,
        spot_check: float | None = None,
        adaptive: bool | None = None,
    ) -> _Settings:
        """``"hash"``, ``"merkle"`` or ``"redundancy"``.

        Redundancy runs each chunk on ``replicas`` distinct workers (default 2). A chunk is
        decided when they agree unanimously; any dissent adds replicas (up to ``max_replicas``,
        default every eligible worker) until one outcome has a strict majority of all replies
        and at least ``replicas`` votes. No wrong result is accepted while fewer than
        ``replicas`` workers collude and honest workers are a majority of the eligible pool.

        ``spot_check=p`` (off by default) is BOINC's adaptive replication: a worker with a long
        run of agreed results runs a chunk alone, and only with probability ``p`` is that chunk
        replicated too. It trades assurance for throughput (``result.assurance`` says how many
        chunks rest on one worker); ``adaptive=True`` is the same with ``p = 0.1``."""
        verification = Verification.of(mode, replicas, max_replicas, spot_check, adaptive)
        self._once("its verification", "verify(...)")
        self.verification = verification
        return self

    def limits(self: _Settings, limits: ResourceLimits | None = None, **fields: int) -> _Settings:
        """Override the sandbox limits: a ``ResourceLimits``, or fields to change."""
        base = limits if limits is not None else self.resource_limits
        if not isinstance(base, ResourceLimits):
            raise JobDefinitionError(f"limits must be a ResourceLimits, got {type(base).__name__}")
        try:
            resource_limits = base.replace(**fields) if fields else base
        except ValueError as exc:
            raise JobDefinitionError(str(exc)) from exc
        given = sorted(base.to_dict()) if limits is not None else []
        for field in [*given, *fields]:
            self._once(f"a {field} limit", "limits(...)")
        self.resource_limits = resource_limits
        return self

    def retries(self: _Settings, n: int) -> _Settings:
        """How many times a chunk is re-run elsewhere after a crash, timeout or rejected reply."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise JobDefinitionError(f"retries must be an int >= 0, got {n!r}")
        self._once("its retries", "retries(...)")
        self.max_retries = n
        return self

    def on_error(self: _Settings, policy: str) -> _Settings:
        """``"fail"`` (default): a chunk whose kernel errors fails the job once all chunks are in;
        ``"continue"``: the job's value combines the chunks that succeeded."""
        if policy not in ON_ERROR:
            raise JobDefinitionError(f"on_error must be one of {ON_ERROR}, got {policy!r}")
        self._once("its error policy", "on_error(...)")
        self.error_policy = policy
        return self

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        """Call ``subscriber(event)`` for every event of this job's runs (see jobs/events.py)."""
        self.subscribers.append(subscriber)
        return subscriber

    def _settings_from(self, other: JobSettings) -> None:
        self.verification = other.verification
        self.resource_limits = other.resource_limits
        self.max_retries = other.max_retries
        self.error_policy = other.error_policy
        self.subscribers = list(other.subscribers)


class Job(JobSettings, JobDefinition):
    """A job definition. Use as ``with wgt.Job("name") as job: ...`` then ``job.run(on=...)``."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise JobDefinitionError(f"a job needs a non-empty name, got {name!r}")
        super().__init__()
        self.name = name
        self.input_spec: InputSpec | None = None
        self.kernel_obj: Kernel | None = None
        self.splitter: Callable[[Any], Sequence[Any]] | None = None

    # --- the context manager -----------------------------------------------------------------

    def __enter__(self) -> Job:
        dsl.push(self)
        return self

    def __exit__(self, *exc: object) -> None:
        dsl.pop(self)

    # --- definition ----------------------------------------------------------------------------

    def input(
        self,
        source: Any,
        *,
        chunk_rows: int | None = None,
        chunk_bytes: int | None = None,
        chunk_lines: int | None = None,
        pipeline: Any = None,
    ) -> Job:
        """What to read: DataFrame / Series / numpy array / list (row chunks), bytes / str /
        pathlib.Path (byte or line chunks; text is cut at whitespace), or a CES shard list or
        URL together with its ``pipeline`` (decoded on the fly)."""
        spec = InputSpec(source, chunk_rows, chunk_bytes, chunk_lines, pipeline)
        self._once("an input", "input(...)")
        self.input_spec = spec
        self._check_kernel_fits_input()
        return self

    def kernel(self, kernel: Any, *, combine: Callable[[list[Any]], Any] | None = None) -> Job:
        """What runs on each chunk: a built-in kernel, a ``WasmModule``, or a ``@wgt.udf``
        function. ``combine`` (trusted side) overrides how chunk results become the value."""
        resolved = resolve_kernel(kernel, combine=combine)
        self._once("a kernel", "kernel(...)")
        self.kernel_obj = resolved
        self._check_kernel_fits_input()
        return self

    def copy(self) -> Job:
        """An independent copy to make a variant: its settings may be given again, and changing
        them leaves this job as it is."""
        twin = copy.copy(self)
        twin.subscribers = list(self.subscribers)
        twin._given = set()
        return twin

    # --- planning and running -----------------------------------------------------------------

    def plan(self) -> JobPlan:
        """This job checked and frozen for running (JobDefinitionError if it cannot run)."""
        if self.input_spec is None:
            raise JobDefinitionError(f"job {self.name!r} has no input: call job.input(...)")
        if self.kernel_obj is None:
            raise JobDefinitionError(f"job {self.name!r} has no kernel: call job.kernel(...)")
        self._check_kernel_fits_input()
        columns = input_columns(self.input_spec) if self.splitter is None else None
        if columns is not None:
            self.kernel_obj.check_columns(columns)
        spec, chunking = self._sized_input(self.input_spec, self.kernel_obj)
        source = ChunkSource(self.name, spec, self.kernel_obj.input_kind, self.splitter)
        return JobPlan(
            name=self.name,
            kernel=self.kernel_obj.fit(source),  # a pass over the data only if it needs one
            source=source,
            verification=self.verification,
            limits=self.resource_limits,
            retries=self.max_retries,
            on_error=self.error_policy,
            subscribers=tuple(self.subscribers),
            chunking=chunking,
        )

    def _sized_input(self, spec: InputSpec, kernel: Kernel) -> tuple[InputSpec, str]:
        """``spec`` with ``chunk_rows="auto"`` (or no chunk size) resolved by the kernel's own
        trial, when it has a preference (a @wgt.udf does), and why; else as it is."""
        automatic = spec.chunk_rows == "auto" or (
            spec.chunk_rows is None and spec.chunk_bytes is None and spec.chunk_lines is None
        )
        head = rows_head(spec) if automatic and self.splitter is None else None
        sized = kernel.auto_chunk_rows(head, self.resource_limits) if head is not None else None
        if sized is None:
            return spec, ""
        rows, why = sized
        return dataclasses.replace(spec, chunk_rows=rows), why

    def validate(self, workers: int | None = None) -> None:
        """Raise JobDefinitionError if the job cannot run (on ``workers`` workers, if given)."""
        plan = self.plan()
        if workers is not None:
            plan.check_workers(workers)

    def run(self, on: JobRunner | None = None, *, cache: bool = True) -> JobResult:
        """Run on a cluster (default: the session's, else a new ``LocalCluster``) -> JobResult.

        Chunks verified before (by any run, in any process, under the same kernel, limits and
        at least as strong a verification) come from the verified-result cache, so a rerun or
        a run after a restart resumes where it stopped; ``cache=False`` recomputes them all."""
        cluster = on if on is not None else runtime.default_cluster()
        if not isinstance(cluster, JobRunner):
            raise ConfigError(
                f"on= takes a cluster (wgt.LocalCluster(...), wgt.DaskCluster(...)), "
                f"got {type(cluster).__name__} {cluster!r:.60}"
            )
        if cache not in (True, False):
            raise ConfigError(f"cache must be True or False, got {cache!r}")
        return cluster.run(dataclasses.replace(self.plan(), cache=cache))

    def _check_kernel_fits_input(self) -> None:
        if self.input_spec is None or self.kernel_obj is None or self.splitter is not None:
            return
        kind = source_kind(self.input_spec.source, self.input_spec.pipeline)
        accepted = _KERNEL_INPUTS.get(self.kernel_obj.input_kind)
        if accepted is not None and kind not in accepted:
            raise JobDefinitionError(
                f"kernel {self.kernel_obj.name!r} takes {self.kernel_obj.input_kind} input, "
                f"but the job's input is {kind}; give it {' or '.join(accepted)} input"
            )

    def __repr__(self) -> str:
        kernel = self.kernel_obj.name if self.kernel_obj is not None else None
        return (
            f"Job({self.name!r}, kernel={kernel!r}, verify={self.verification.mode!r}, "
            f"replicas={self.verification.replicas})"
        )

    # --- the seed system's decorator form ------------------------------------------------------

    @staticmethod
    def define(fn: Callable[[], None]) -> DefinedJob:
        """``@wgt.Job.define``: the body registers ``split`` / ``execute`` / ``merge``."""
        builder = _Builder(getattr(fn, "__name__", "job"))
        _builders().append(builder)
        try:
            fn()
        finally:
            _builders().remove(builder)
        return builder.build()

    @staticmethod
    def split(fn: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
        """Trusted side: cut the input into chunks."""
        _current_builder("split").split = fn
        return fn

    @staticmethod
    def execute(fn: Any) -> Any:
        """Sandboxed: runs on each chunk (a Python function runs in the WebAssembly sandbox;
        a WasmModule or kernel object is used as it is)."""
        _current_builder("execute").execute = fn
        return fn

    @staticmethod
    def merge(fn: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """Trusted side: combine the chunk results, in chunk order."""
        _current_builder("merge").merge = fn
        return fn


def _builders() -> list[_Builder]:
    return dsl.thread_stack("builders")


def _current_builder(what: str) -> _Builder:
    stack = _builders()
    if not stack:
        raise JobDefinitionError(
            f"@wgt.Job.{what} must be used inside a function decorated with @wgt.Job.define"
        )
    return stack[-1]


class _Builder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.split: Callable[[Any], list[Any]] | None = None
        self.execute: Any = None
        self.merge: Callable[[list[Any]], Any] | None = None

    def build(self) -> DefinedJob:
        if self.execute is None:
            raise JobDefinitionError(
                f"@wgt.Job.define {self.name!r} registered no @wgt.Job.execute function"
            )
        return DefinedJob(self.name, self.split, self.execute, self.merge)


def _default_split(data: Any) -> list[bytes]:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    size = default_chunk_bytes(len(raw))
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def _default_merge(parts: list[Any]) -> Any:
    if all(isinstance(p, (bytes, bytearray)) for p in parts):
        return b"".join(parts)
    return parts


class DefinedJob(JobSettings):
    """A job built by ``@wgt.Job.define``; ``.run(data, on=cluster)`` runs it over ``data``.

    Defaults follow the seed system: verification "hash", 3 retries, 1 replica, byte chunks
    between 64 KiB and 1 MiB, results concatenated (or, for a built-in kernel or ``@wgt.udf``
    as ``execute`` and no ``merge``, combined the kernel's own way). ``verify``, ``limits``,
    ``retries``, ``on_error`` and ``subscribe`` work as on ``Job`` and apply to every run.
    """

    def __init__(
        self,
        name: str,
        split: Callable[[Any], Sequence[Any]] | None,
        execute: object,
        merge: Callable[[list[Any]], Any] | None,
    ) -> None:
        super().__init__()
        self.name = name
        self.split_fn = split or _default_split
        if merge is None and not isinstance(execute, Kernel):
            merge = _default_merge
        self.kernel_obj = resolve_kernel(execute, combine=merge, input="bytes")

    def job(self, data: Any) -> Job:
        """The plain ``Job`` this definition runs over ``data`` (to tune before running)."""
        job = Job(self.name)
        job._settings_from(self)
        job.input_spec = InputSpec(data if not isinstance(data, str) else data.encode())
        job.splitter = self.split_fn
        job.kernel_obj = self.kernel_obj
        return job

    def plan(self, data: Any) -> JobPlan:
        """The frozen plan of a run over ``data``."""
        return self.job(data).plan()

    def run(self, data: Any, on: JobRunner | None = None, *, cache: bool = True) -> JobResult:
        return self.job(data).run(on=on, cache=cache)

    def __repr__(self) -> str:
        return f"DefinedJob({self.name!r})"
