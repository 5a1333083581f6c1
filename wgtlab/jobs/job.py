"""``Job``: what to run (kernel), over what (input, chunking), how to check it, under which limits.

A job is only a definition; ``job.run(on=cluster)`` hands it to a cluster, which runs it through
the manager. The seed system's decorator form (``@Job.define`` with ``split`` / ``execute`` /
``merge``) builds the same kind of job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wgtlab import defaults
from wgtlab.errors import ConfigError, JobDefinitionError, JobError
from wgtlab.jobs import dsl, runtime
from wgtlab.jobs.chunking import InputSpec, default_chunk_bytes, iter_chunks, source_kind
from wgtlab.jobs.events import Subscriber
from wgtlab.jobs.kernels import is_kernel, resolve_kernel
from wgtlab.sandbox.limits import ResourceLimits

VERIFICATION_MODES = ("hash", "merkle", "redundancy")
ON_ERROR = ("fail", "continue")
_KERNEL_INPUTS = {  # which input kinds each kernel input kind accepts
    "float64": ("table", "array", "list", "shards"),  # shard sets made by shard_dataframe
    "records": ("table", "array", "list", "shards"),
    "bytes": ("bytes", "text", "file", "shards"),
    "text": ("bytes", "text", "file", "shards"),
}


@dataclass(frozen=True)
class Verification:
    """How a job's results are checked (see DESIGN.md, "Verification and trust")."""

    mode: str = defaults.JOB_VERIFICATION
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


class Job:
    """A job definition. Use as ``with wgt.Job("name") as job: ...`` then ``job.run(on=...)``."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise JobDefinitionError(f"a job needs a non-empty name, got {name!r}")
        self.name = name
        self.input_spec: InputSpec | None = None
        self.kernel_obj: Any = None
        self.verification = Verification()
        self.resource_limits = ResourceLimits()
        self.max_retries = defaults.JOB_RETRIES
        self.error_policy = "fail"
        self.splitter: Callable[[Any], list[Any]] | None = None
        self.subscribers: list[Subscriber] = []

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
        self.input_spec = InputSpec(source, chunk_rows, chunk_bytes, chunk_lines, pipeline)
        self._check_kernel_fits_input()
        return self

    def kernel(self, kernel: Any, *, combine: Callable[[list[Any]], Any] | None = None) -> Job:
        """What runs on each chunk: a built-in kernel, a ``WasmModule``, or a ``@wgt.udf``
        function. ``combine`` (trusted side) overrides how chunk results become the value."""
        self.kernel_obj = resolve_kernel(kernel, combine=combine)
        self._check_kernel_fits_input()
        return self

    def verify(
        self,
        mode: str,
        *,
        replicas: int | None = None,
        max_replicas: int | None = None,
        adaptive: bool = True,
    ) -> Job:
        """``"hash"``, ``"merkle"`` or ``"redundancy"`` (``replicas`` workers per chunk, strict
        majority; on disagreement more replicas up to ``max_replicas``).

        Under redundancy, a worker with a long run of agreed results is spot-checked (its chunk
        replicated with probability 1/run) rather than always replicated: BOINC's adaptive
        replication, which trades some assurance for throughput. ``adaptive=False`` replicates
        every chunk ``replicas`` times."""
        self.verification = Verification.of(mode, replicas, max_replicas, adaptive)
        return self

    def limits(self, limits: ResourceLimits | None = None, **fields: int) -> Job:
        """Override the sandbox limits: a ``ResourceLimits``, or fields to change."""
        base = limits if limits is not None else self.resource_limits
        if not isinstance(base, ResourceLimits):
            raise JobDefinitionError(f"limits must be a ResourceLimits, got {type(base).__name__}")
        try:
            self.resource_limits = base.replace(**fields) if fields else base
        except ValueError as exc:
            raise JobDefinitionError(str(exc)) from exc
        return self

    def retries(self, n: int) -> Job:
        """How many times a chunk is re-run elsewhere after a crash, timeout or rejected reply."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise JobDefinitionError(f"retries must be an int >= 0, got {n!r}")
        self.max_retries = n
        return self

    def on_error(self, policy: str) -> Job:
        """``"fail"`` (default): a chunk whose kernel errors fails the job once all chunks are in;
        ``"continue"``: the job's value combines the chunks that succeeded."""
        if policy not in ON_ERROR:
            raise JobDefinitionError(f"on_error must be one of {ON_ERROR}, got {policy!r}")
        self.error_policy = policy
        return self

    def copy(self) -> Job:
        """An independent copy: changing its settings leaves this job as it is."""
        twin = copy.copy(self)
        twin.subscribers = list(self.subscribers)
        return twin

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        """Call ``subscriber(event)`` for every event of this job's runs (see jobs/events.py)."""
        self.subscribers.append(subscriber)
        return subscriber

    # --- validation and execution --------------------------------------------------------------

    def validate(self, workers: int | None = None) -> None:
        """Raise JobDefinitionError if the job cannot run (on ``workers`` workers, if given)."""
        if self.input_spec is None:
            raise JobDefinitionError(f"job {self.name!r} has no input: call job.input(...)")
        if self.kernel_obj is None:
            raise JobDefinitionError(f"job {self.name!r} has no kernel: call job.kernel(...)")
        self._check_kernel_fits_input()
        if workers is not None and self.verification.replicas > workers:
            raise JobDefinitionError(
                f"job {self.name!r} asks for {self.verification.replicas} replicas but the "
                f"cluster has {workers} workers; lower replicas or add workers"
            )

    def chunks(self) -> Iterator[Any]:
        """The input's chunks, in order, as the kernel will receive them."""
        assert self.input_spec is not None
        if self.splitter is not None:
            try:
                parts = self.splitter(self.input_spec.source)
            except Exception as exc:  # the user's split (trusted side)
                raise JobError(
                    f"job {self.name!r}: split() raised {type(exc).__name__}: {exc}; nothing "
                    "was sent to any worker"
                ) from exc
            if not isinstance(parts, (list, tuple)):
                raise JobDefinitionError(
                    f"split() must return a list of chunks, got {type(parts).__name__}"
                )
            return iter(parts)
        return iter_chunks(self.input_spec, self.kernel_obj.input_kind)

    def run(self, on: Any = None) -> Any:
        """Run on a cluster (default: the session's, else a new ``LocalCluster``) -> JobResult."""
        cluster = on if on is not None else runtime.default_cluster()
        if not callable(getattr(cluster, "run", None)):
            raise ConfigError(
                f"on= takes a cluster (wgt.LocalCluster(...), wgt.DaskCluster(...)), "
                f"got {type(cluster).__name__} {cluster!r:.60}"
            )
        return cluster.run(self)

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
        kernel = getattr(self.kernel_obj, "name", None)
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


class DefinedJob:
    """A job built by ``@wgt.Job.define``; ``.run(data, on=cluster)`` runs it over ``data``.

    Defaults follow the seed system: verification "hash", 3 retries, 1 replica, byte chunks
    between 64 KiB and 1 MiB, results concatenated (or, for a built-in kernel or ``@wgt.udf``
    as ``execute`` and no ``merge``, combined the kernel's own way). ``verify``, ``limits``,
    ``retries``, ``on_error`` and ``subscribe`` work as on ``Job`` and apply to every run.
    """

    def __init__(
        self,
        name: str,
        split: Callable[[Any], list[Any]] | None,
        execute: Any,
        merge: Callable[[list[Any]], Any] | None,
    ) -> None:
        self.name = name
        self.split_fn = split or _default_split
        if merge is None and not is_kernel(execute):
            merge = _default_merge
        self.kernel_obj = resolve_kernel(execute, combine=merge, input="bytes")
        self.settings = Job(name)  # verification, limits, retries, error policy, subscribers

    def job(self, data: Any) -> Job:
        """The plain ``Job`` this definition runs over ``data`` (to tune before running)."""
        job = self.settings.copy()
        job.input_spec = InputSpec(data if not isinstance(data, str) else data.encode())
        job.splitter = self.split_fn
        job.kernel_obj = self.kernel_obj
        return job

    def verify(self, mode: str, **options: Any) -> DefinedJob:
        self.settings.verify(mode, **options)
        return self

    def limits(self, limits: ResourceLimits | None = None, **fields: int) -> DefinedJob:
        self.settings.limits(limits, **fields)
        return self

    def retries(self, n: int) -> DefinedJob:
        self.settings.retries(n)
        return self

    def on_error(self, policy: str) -> DefinedJob:
        self.settings.on_error(policy)
        return self

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        return self.settings.subscribe(subscriber)

    @property
    def verification(self) -> Verification:
        return self.settings.verification

    @property
    def resource_limits(self) -> ResourceLimits:
        return self.settings.resource_limits

    @property
    def max_retries(self) -> int:
        return self.settings.max_retries

    def run(self, data: Any, on: Any = None) -> Any:
        return self.job(data).run(on=on)

    def __repr__(self) -> str:
        return f"DefinedJob({self.name!r})"
