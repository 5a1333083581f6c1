"""The worker side of ``DaskCluster``: a WorkerPlugin holding the sandbox, and the task function.

Everything here runs inside a Dask worker process. What arrives is plain values and bytes; code
arrives once per worker by digest and is checked against it; what leaves is plain values only.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

from distributed import WorkerPlugin, get_worker

from wgtlab import defaults
from wgtlab.cluster import worker as worker_side
from wgtlab.cluster.faults import Fault, SimulatedCrash
from wgtlab.cluster.identity import WorkerIdentity
from wgtlab.cluster.wire import (
    crash_to_wire,
    refusal_to_wire,
    refused_to_wire,
    reply_to_wire,
    task_from_wire,
)
from wgtlab.errors import InvalidModule, WgtError
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.kernels.base import ExecutionSpec, Kernel, ModuleKernel
from wgtlab.sandbox.python.component import runner_component

__all__ = [
    "PLUGIN_NAME",
    "SandboxPlugin",
    "describe_worker",
    "install_code",
    "run_wire_task",
    "worker_label",
]

PLUGIN_NAME = "wgtlab-sandbox"
_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def worker_label(name: object) -> str:
    """The name the manager and the trust ledger show for a Dask worker: its Dask name, or
    ``dask-N`` for the integer names Dask's LocalCluster gives."""
    if isinstance(name, str) and name:
        return name
    return f"dask-{name}"


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
        self.kernels: dict[str, Kernel] = {}  # code digest -> executing part
        self.lock = threading.Lock()

    # --- installing code ---------------------------------------------------------------------

    def install(self, header: dict[str, Any], code: bytes) -> dict[str, Any]:
        digest = header.get("digest")
        actual = hashlib.sha256(code).hexdigest()
        if actual != digest:
            return refusal_to_wire(
                InvalidModule(
                    f"code for {str(header.get('name'))[:80]!r} does not match its digest "
                    f"(announced sha256 {str(digest)[:16]}..., received bytes hash to "
                    f"{actual[:16]}...); refused, nothing was installed"
                )
            )
        if digest in self.kernels:
            return {"ok": True, "digest": digest}
        spec = ExecutionSpec(str(header.get("kind")), str(header.get("name") or ""), code, actual)
        try:
            kernel = worker_side.kernel_from_spec(spec)
            engine = get_engine(defaults.MAX_STACK_BYTES)
            if isinstance(kernel, ModuleKernel):
                kernel.module.prepared(engine)  # compile now, once, not inside a deadline
            else:
                runner_component(engine)  # build or load the UDF runner now
        except WgtError as exc:
            return refusal_to_wire(exc)
        except (ValueError, TypeError, KeyError) as exc:
            return refusal_to_wire(InvalidModule(f"malformed code: {type(exc).__name__}: {exc}"))
        with self.lock:
            self.kernels[actual] = kernel
        return {"ok": True, "digest": actual}

    # --- running a task ----------------------------------------------------------------------

    def run(self, header: dict[str, Any], payload: bytes) -> bytes:
        kernel = self.kernels.get(header["digest"])
        if kernel is None:
            return refused_to_wire(f"code {str(header['digest'])[:16]}... is not installed here")
        task = task_from_wire(header, payload, kernel)
        try:
            reply = worker_side.run_task(task, self.identity, self.fault)
        except SimulatedCrash as exc:
            return crash_to_wire(f"SimulatedCrash: {exc}")
        except Exception as exc:  # anything else is this worker failing, not an outcome
            return crash_to_wire(f"{type(exc).__name__}: {str(exc)[:500]}")
        return reply_to_wire(reply)

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "public_key": self.identity.public_bytes,
            "pid": os.getpid(),
            "engine": self.engine_fingerprint,
            "fault": type(self.fault).__name__ if self.fault is not None else None,
        }


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


def run_wire_task(header: dict[str, Any], payload: bytes) -> bytes:
    """One chunk in this worker's sandbox; plain values in and out (its code installed first,
    by ``install_code``)."""
    plugin = _plugin(get_worker())
    if plugin is None:
        return refused_to_wire(_NO_PLUGIN)
    return plugin.run(header, payload)


async def dask_setup(worker: Any) -> None:
    """``dask worker --preload wgtlab.cluster.dask_worker``: the plugin on a plain Dask worker
    (its identity then lives in the worker's local directory)."""
    await worker.plugin_add(SandboxPlugin(), name=PLUGIN_NAME)
