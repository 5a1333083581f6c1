"""What a worker runs for one task: the sandboxed kernel, the digest, and the signature.

``run_task`` is the one worker path, local or remote: a simulated fault's ``before`` -> the
sandboxed kernel -> the fault's ``tamper`` -> digest and signature -> the fault's ``after``.
``kernel_from_spec`` rebuilds, on a remote worker, the executing part of a kernel from the plain
bytes the client shipped.
"""

from __future__ import annotations

import hashlib
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


@lru_cache(maxsize=64)
def sandbox_for(limits: ResourceLimits) -> Sandbox:
    """One shared Sandbox per set of limits (a Sandbox is safe to share between threads)."""
    return Sandbox(limits)


def execute_chunk(
    task: Task, sandbox: Sandbox, identity: WorkerIdentity, fault: Fault | None = None
) -> WorkerReply:
    """Run ``task`` in ``sandbox`` and sign the outcome. A sandbox error is an outcome too
    (replicas agree on it by type). ``fault`` is how a simulated faulty worker bends the task:
    before it runs (crash, stall, claim an error), its output (lie) or its signed reply."""
    try:
        if fault is not None:
            fault.before(task)
        result = task.kernel.execute(sandbox, task.payload)
    except SandboxError as exc:
        digest = error_digest(type(exc).__name__)
        reply = WorkerReply(
            job_id=task.job_id,
            task_id=task.task_id,
            chunk=task.chunk,
            worker=identity.name,
            output=b"",
            output_sha256=hashlib.sha256(b"").hexdigest(),
            outcome_digest=digest,
            signature=identity.sign(_signed(task, digest)),
            error_type=type(exc).__name__,
            error_message=str(exc),
        )
        return reply if fault is None else fault.after(task, reply)
    output = result.output if fault is None else fault.tamper(task, result.output)
    digest = (
        bytes.fromhex(result.output_sha256)
        if output is result.output
        else hashlib.sha256(output).digest()
    )
    reply = WorkerReply(
        job_id=task.job_id,
        task_id=task.task_id,
        chunk=task.chunk,
        worker=identity.name,
        output=output,
        output_sha256=digest.hex(),
        outcome_digest=digest,
        signature=identity.sign(_signed(task, digest)),
        fuel_used=result.fuel_used,
        wall_ms=result.wall_ms,
        memory_bytes=result.memory_bytes,
        stdout=result.stdout,
        stderr=result.stderr,
    )
    return reply if fault is None else fault.after(task, reply)


def _signed(task: Task, outcome_digest: bytes) -> bytes:
    """The message this worker signs for ``task``: its own view of the input and code."""
    input_digest = task.input_digest or hashlib.sha256(task.payload).digest()
    return result_message(
        task.job_id,
        task.task_id,
        task.chunk,
        input_digest,
        bytes.fromhex(task.kernel.digest),
        outcome_digest,
    )


def run_task(task: Task, identity: WorkerIdentity, fault: Fault | None = None) -> WorkerReply:
    """One task on this worker (local or remote), as its simulated ``fault`` (if any) bends it."""
    return execute_chunk(task, sandbox_for(task.limits), identity, fault)


def kernel_from_spec(spec: ExecutionSpec) -> Kernel:
    """The executing part of a kernel, rebuilt from ``spec`` (a wasm module, compiled here, or a
    UDF program); the client keeps the trusted side. ConfigError/InvalidModule if malformed."""
    if spec.kind == "wasm":
        return WasmKernel(WasmModule(spec.code, name=spec.name or spec.digest[:12]))
    if spec.kind == "udf":
        return PythonUdf.from_execution_spec(spec)
    raise ConfigError(f"unknown kind of code {spec.kind[:40]!r}")
