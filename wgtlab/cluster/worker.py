"""What a worker runs for one task: the sandboxed kernel, the digest, and the signature.

``run_task`` is the one worker path, local or remote: fault (before) -> ``execute_chunk``
(execute, tamper, sign) -> fault (after). ``kernel_from_spec`` rebuilds, on a remote worker, the
executing part of a kernel from the plain bytes the client shipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache

from wgtlab.cluster.faults import Fault
from wgtlab.cluster.identity import WorkerIdentity, result_message
from wgtlab.cluster.task import Task, WorkerReply, error_digest
from wgtlab.errors import ConfigError, SandboxError
from wgtlab.sandbox.kernels.base import ExecutionSpec, Kernel, WasmKernel
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.python.udf import PythonUdf
from wgtlab.sandbox.runner import Sandbox

__all__ = ["execute_chunk", "kernel_from_spec", "run_task", "sandbox_for"]

Tamper = Callable[[Task, bytes], bytes]


@lru_cache(maxsize=64)
def sandbox_for(limits: ResourceLimits) -> Sandbox:
    """One shared Sandbox per set of limits (a Sandbox is safe to share between threads)."""
    return Sandbox(limits)


def execute_chunk(
    task: Task, sandbox: Sandbox, identity: WorkerIdentity, tamper: Tamper | None = None
) -> WorkerReply:
    """Run ``task`` in ``sandbox`` and sign the outcome. A sandbox error is an outcome too
    (replicas agree on it by type); ``tamper`` is how simulated liars alter their output."""
    try:
        result = task.kernel.execute(sandbox, task.payload)
    except SandboxError as exc:
        digest = error_digest(type(exc).__name__)
        return WorkerReply(
            job_id=task.job_id,
            task_id=task.task_id,
            chunk=task.chunk,
            worker=identity.name,
            output=b"",
            output_sha256=hashlib.sha256(b"").hexdigest(),
            outcome_digest=digest,
            signature=identity.sign(result_message(task.job_id, task.task_id, task.chunk, digest)),
            error_type=type(exc).__name__,
            error_message=str(exc),
        )
    output = result.output if tamper is None else tamper(task, result.output)
    digest = (
        hashlib.sha256(output).digest()
        if tamper is not None
        else bytes.fromhex(result.output_sha256)
    )
    return WorkerReply(
        job_id=task.job_id,
        task_id=task.task_id,
        chunk=task.chunk,
        worker=identity.name,
        output=output,
        output_sha256=digest.hex(),
        outcome_digest=digest,
        signature=identity.sign(result_message(task.job_id, task.task_id, task.chunk, digest)),
        fuel_used=result.fuel_used,
        wall_ms=result.wall_ms,
        memory_bytes=result.memory_bytes,
        stdout=result.stdout,
        stderr=result.stderr,
    )


def run_task(task: Task, identity: WorkerIdentity, fault: Fault | None = None) -> WorkerReply:
    """One task on this worker, as the worker's simulated ``fault`` (if any) bends it."""
    if fault is None:
        return execute_chunk(task, sandbox_for(task.limits), identity)
    fault.before(task)
    reply = execute_chunk(task, sandbox_for(task.limits), identity, tamper=fault.tamper)
    return fault.after(task, reply)


def kernel_from_spec(spec: ExecutionSpec) -> Kernel:
    """The executing part of a kernel, rebuilt from ``spec`` (a wasm module, compiled here, or a
    UDF program); the client keeps the trusted side. ConfigError/InvalidModule if malformed."""
    if spec.kind == "wasm":
        return WasmKernel(WasmModule(spec.code, name=spec.name or spec.digest[:12]))
    if spec.kind == "udf":
        return PythonUdf.from_execution_spec(spec)
    raise ConfigError(f"unknown kind of code {spec.kind[:40]!r}")
