"""What a worker runs for one task: the sandboxed kernel, the digest, and the signature."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache

from wgtlab.cluster.base import Task, WorkerReply, error_digest
from wgtlab.cluster.identity import WorkerIdentity, result_message
from wgtlab.errors import SandboxError
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.runner import Sandbox

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
        memory_bytes=getattr(result, "memory_bytes", 0),
        stdout=getattr(result, "stdout", b""),
        stderr=getattr(result, "stderr", b""),
    )
