"""The worker side of ``DaskCluster``: a WorkerPlugin holding the sandbox, and the task function.

Everything here runs inside a Dask worker process. What arrives is plain values and bytes; code
arrives once per worker by digest and is checked against it; what leaves is plain values only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
from distributed import WorkerPlugin, get_worker

from wgtlab import defaults
from wgtlab.cluster.base import Task, WorkerReply
from wgtlab.cluster.faults import Fault, SimulatedCrash
from wgtlab.cluster.identity import WorkerIdentity
from wgtlab.cluster.worker import execute_chunk, sandbox_for
from wgtlab.errors import ConfigError, InvalidModule, WgtError
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox, TaskResult

__all__ = [
    "PLUGIN_NAME",
    "ExecutionSpec",
    "SandboxPlugin",
    "describe_worker",
    "execution_spec",
    "install_code",
    "run_task",
    "worker_label",
]

PLUGIN_NAME = "wgtlab-sandbox"
_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def worker_label(name: Any) -> str:
    """The name the manager and the trust ledger show for a Dask worker: its Dask name, or
    ``dask-N`` for the integer names Dask's LocalCluster gives."""
    if isinstance(name, str) and name:
        return name
    return f"dask-{name}"


# --- execution specs: what a worker needs to rebuild the executing part of a kernel -------------


@dataclass(frozen=True)
class ExecutionSpec:
    """``kind`` ("wasm" | "udf"), the code's bytes, and ``digest``, the SHA-256 of those bytes.

    For wasm kernels the code is the module itself; for ``@wgt.udf`` kernels it is canonical JSON
    of the function's source and options. Either way the worker checks the digest on arrival.
    """

    kind: str
    name: str
    code: bytes = field(repr=False)
    digest: str

    @classmethod
    def of(cls, kind: str, code: bytes, name: str) -> ExecutionSpec:
        return cls(kind, name, code, hashlib.sha256(code).hexdigest())

    def header(self) -> dict[str, str]:
        return {"kind": self.kind, "digest": self.digest, "name": self.name}


def _udf_class() -> type | None:
    try:
        from wgtlab.sandbox.python.udf import PythonUdf
    except ImportError:  # pragma: no cover - the UDF runner is part of wgtlab
        return None
    return PythonUdf


def execution_spec(kernel: Any) -> ExecutionSpec:
    """The plain-bytes form of ``kernel``'s worker side; its trusted side (encode, decode,
    combine) stays with the client and is never shipped."""
    from wgtlab.jobs.kernels import CombinedKernel
    from wgtlab.sandbox.kernels.base import BuiltinKernel, WasmKernel

    while isinstance(kernel, CombinedKernel):
        kernel = kernel.inner
    if isinstance(kernel, WasmModule):
        return ExecutionSpec.of("wasm", kernel.wasm, kernel.name)
    custom = getattr(kernel, "execution_spec", None)
    if callable(custom):
        spec = custom()
        if not isinstance(spec, ExecutionSpec):
            raise ConfigError(f"{kernel!r}.execution_spec() must return an ExecutionSpec")
        return spec
    udf = _udf_class()
    if udf is not None and isinstance(kernel, udf):
        return ExecutionSpec.of("udf", _udf_code(kernel), kernel.name)
    module = getattr(kernel, "module", None)
    runs_module = getattr(type(kernel), "execute", None) in (
        BuiltinKernel.execute,
        WasmKernel.execute,
    )
    if isinstance(module, WasmModule) and runs_module:
        return ExecutionSpec.of("wasm", module.wasm, module.name)
    raise ConfigError(
        f"{kernel!r} cannot run on a DaskCluster: a remote worker runs wasm modules "
        "(wgt.kernels, wgt.WasmModule) and @wgt.udf functions, shipped as bytes; give the "
        "kernel an execution_spec() or run it on a LocalCluster"
    )


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict) or type(value).__name__ == "mappingproxy":
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return None  # callables (a combine function) stay on the trusted side


def _udf_code(kernel: Any) -> bytes:
    # The kernel's own pickle state, minus the native function, as canonical JSON: nothing on
    # the worker is unpickled, and the worker rebuilds the very object the client built.
    state = dict(kernel.__getstate__())
    program = state.pop("program")
    state = {k: _plain(v) for k, v in state.items()}
    state["program"] = asdict(program)
    return json.dumps(state, sort_keys=True, separators=(",", ":")).encode()


def _udf_from_code(code: bytes) -> Any:
    from wgtlab.sandbox.python.capture import GuestProgram

    cls = _udf_class()
    state = json.loads(code)
    state["program"] = GuestProgram(**state["program"])
    state["_combine"] = "natural"  # combining happens on the trusted side, never here
    kernel = cls.__new__(cls)
    kernel.__setstate__(state)
    return kernel


class _ModuleKernel:
    """The executing part of a wasm kernel on a worker."""

    def __init__(self, module: WasmModule) -> None:
        self.module = module

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        return sandbox.run(self.module, payload)


# --- the plugin --------------------------------------------------------------------------------


class SandboxPlugin(WorkerPlugin):
    """Gives a Dask worker its sandbox: one wasmtime engine (with its epoch ticker) per
    process, a cache of code installed by digest, the UDF runner (built lazily), and the
    worker's Ed25519 identity, created on first start in ``identity_dir`` (default: the
    worker's local directory) and loaded from there afterwards.

    ``faults`` ({worker label: wgt.faults.Fault}) makes chosen workers misbehave, for demos
    and tests, exactly as on a LocalCluster.
    """

    name = PLUGIN_NAME
    idempotent = False

    def __init__(
        self,
        identity_dir: str | os.PathLike[str] | None = None,
        faults: dict[str, Fault] | None = None,
    ) -> None:
        self.identity_dir = None if identity_dir is None else os.fspath(identity_dir)
        self.faults = dict(faults or {})

    def setup(self, worker: Any) -> None:
        self.label = worker_label(worker.name)
        directory = self.identity_dir or os.path.join(worker.local_directory, "wgtlab-identity")
        self.identity = WorkerIdentity.load_or_create(_FILE_SAFE.sub("_", self.label), directory)
        engine = get_engine(defaults.MAX_STACK_BYTES)
        engine.deadline_ticks(1)  # starts the engine's ticker now, not inside the first task
        self.engine_fingerprint = engine.fingerprint
        self.fault = self.faults.get(self.label)
        self.kernels: dict[str, Any] = {}  # code digest -> executing part
        self.lock = threading.Lock()

    # --- installing code ---------------------------------------------------------------------

    def install(self, header: dict[str, Any], code: bytes) -> dict[str, Any]:
        digest = header.get("digest")
        actual = hashlib.sha256(code).hexdigest()
        if actual != digest:
            return _refusal(
                InvalidModule(
                    f"code for {str(header.get('name'))[:80]!r} does not match its digest "
                    f"(announced sha256 {str(digest)[:16]}..., received bytes hash to "
                    f"{actual[:16]}...); refused, nothing was installed"
                )
            )
        if digest in self.kernels:
            return {"ok": True, "digest": digest}
        try:
            kind = header.get("kind")
            if kind == "wasm":
                module = WasmModule(code, name=str(header.get("name") or digest[:12]))
                module.prepared(get_engine(defaults.MAX_STACK_BYTES))  # compile now, once
                kernel: Any = _ModuleKernel(module)
            elif kind == "udf":
                kernel = _udf_from_code(code)
                from wgtlab.sandbox.python.component import runner_component

                runner_component(get_engine(defaults.MAX_STACK_BYTES))  # build/load it now
            else:
                raise ConfigError(f"unknown kind of code {str(kind)[:40]!r}")
        except WgtError as exc:
            return _refusal(exc)
        except (ValueError, TypeError, KeyError) as exc:
            return _refusal(InvalidModule(f"malformed code: {type(exc).__name__}: {exc}"))
        with self.lock:
            self.kernels[digest] = kernel
        return {"ok": True, "digest": digest}

    # --- running a task ----------------------------------------------------------------------

    def run(self, header: dict[str, Any], payload: bytes) -> bytes:
        kernel = self.kernels.get(header["digest"])
        if kernel is None:
            return _wire({"refused": f"code {str(header['digest'])[:16]}... is not installed here"})
        task = Task(
            job_id=str(header["job_id"]),
            task_id=int(header["task_id"]),
            chunk=int(header["chunk"]),
            replica=int(header["replica"]),
            kernel=kernel,
            payload=payload,
            limits=ResourceLimits(**header["limits"]),
        )
        fault = self.fault
        try:
            if fault is not None:
                fault.before(task)
            reply = execute_chunk(
                task,
                sandbox_for(task.limits),
                self.identity,
                tamper=fault.tamper if fault is not None else None,
            )
            if fault is not None:
                reply = fault.after(task, reply)
        except SimulatedCrash as exc:
            return _wire({"crashed": f"SimulatedCrash: {exc}"})
        except Exception as exc:  # anything else is this worker failing, not an outcome
            return _wire({"crashed": f"{type(exc).__name__}: {str(exc)[:500]}"})
        return reply_to_wire(reply)

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "public_key": self.identity.public_bytes,
            "pid": os.getpid(),
            "engine": self.engine_fingerprint,
            "fault": type(self.fault).__name__ if self.fault is not None else None,
        }


def _refusal(exc: WgtError) -> dict[str, Any]:
    return {"ok": False, "error": type(exc).__name__, "message": str(exc)[:1000]}


_WIRE_FIELDS = (
    "job_id",
    "task_id",
    "chunk",
    "output",
    "output_sha256",
    "outcome_digest",
    "signature",
    "fuel_used",
    "wall_ms",
    "memory_bytes",
    "error_type",
    "error_message",
    "stdout",
    "stderr",
)


def _wire(values: dict[str, Any]) -> bytes:
    # One msgpack blob, not a dict for Dask to serialize field by field (7x the cost per task).
    return msgpack.packb(values, use_bin_type=True)


def reply_to_wire(reply: WorkerReply) -> bytes:
    """A reply as msgpack of plain values (the worker's name is the client's to say)."""
    return _wire({name: getattr(reply, name) for name in _WIRE_FIELDS})


# --- what the client calls on workers (module-level, so pickled by reference) -------------------


def _plugin(dask_worker: Any) -> SandboxPlugin | None:
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, SandboxPlugin) else None


# These run as ordinary Dask tasks pinned to one worker, never through ``client.run``: Dask's
# client unpickles the error replies of ``run`` and plugin registration, but the results of
# tasks come back through msgpack only (see dask.py).

_NO_PLUGIN = "this worker has no wgtlab sandbox plugin (start it with `wgtlab worker`)"


def describe_worker() -> dict[str, Any] | None:
    """This worker's label and raw public key, or None if it has no sandbox plugin."""
    plugin = _plugin(get_worker())
    return plugin.describe() if plugin is not None else None


def install_code(header: dict[str, Any], code: bytes) -> dict[str, Any]:
    """Check ``code`` against its digest, then install (and compile) it on this worker."""
    plugin = _plugin(get_worker())
    if plugin is None:
        return {"ok": False, "error": "ClusterError", "message": _NO_PLUGIN}
    return plugin.install(header, code)


def run_task(header: dict[str, Any], payload: bytes) -> bytes:
    """One chunk in this worker's sandbox; plain values in and out (its code installed first,
    by ``install_code``)."""
    plugin = _plugin(get_worker())
    if plugin is None:
        return _wire({"refused": _NO_PLUGIN})
    return plugin.run(header, payload)


def noop_task(header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """A bare task with the same arguments, for measuring Dask's own per-task cost."""
    return {"ok": True}


async def dask_setup(worker: Any) -> None:
    """``dask worker --preload wgtlab.cluster.dask_worker``: the plugin on a plain Dask worker
    (its identity then lives in the worker's local directory)."""
    await worker.plugin_add(SandboxPlugin(), name=PLUGIN_NAME)
