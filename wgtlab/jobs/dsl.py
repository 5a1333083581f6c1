"""The thread-local job DSL: ``wgt.input``, ``wgt.kernel``, ``wgt.verify``, ``wgt.limits``.

Inside ``with wgt.Job(...)`` these module-level calls reach that job; each thread has its own
stack of open jobs, so threads defining jobs at once never cross.
"""

from __future__ import annotations

import threading
import types
from typing import TYPE_CHECKING, Any

from wgtlab.errors import JobDefinitionError

if TYPE_CHECKING:
    from wgtlab.jobs.job import Job

_local = threading.local()


def thread_stack(name: str) -> list[Any]:
    """This thread's stack called ``name`` (open jobs, open ``@Job.define`` builders)."""
    stack = getattr(_local, name, None)
    if stack is None:
        stack = []
        setattr(_local, name, stack)
    return stack


def _stack() -> list[Any]:
    return thread_stack("jobs")


def push(job: Any) -> None:
    _stack().append(job)


def pop(job: Any) -> None:
    """Remove ``job`` (and anything opened above it and left behind) from this thread's stack."""
    stack = _stack()
    if job in stack:
        del stack[stack.index(job) :]


def current_job() -> Job:
    """The innermost job being defined in this thread; a clear error outside a ``with`` block."""
    stack = _stack()
    if not stack:
        raise JobDefinitionError(
            "no job is being defined in this thread: call this inside `with wgt.Job(name) as job:`"
            " or call the method on the job object (job.input(...))"
        )
    return stack[-1]


def input(source: Any, **options: Any) -> Job:
    """``job.input(...)`` on the current job."""
    return current_job().input(source, **options)


def kernel(kernel: Any, **options: Any) -> Job:
    """``job.kernel(...)`` on the current job."""
    return current_job().kernel(kernel, **options)


def limits(limits: Any = None, **fields: int) -> Job:
    """``job.limits(...)`` on the current job."""
    return current_job().limits(limits, **fields)


def retries(n: int) -> Job:
    """``job.retries(n)`` on the current job."""
    return current_job().retries(n)


def verify(mode: str, **options: Any) -> Job:
    """``job.verify(...)`` on the current job."""
    return current_job().verify(mode, **options)


class _CallableVerifyModule(types.ModuleType):
    """``wgt.verify`` is the verification package and, called, the DSL's ``verify``."""

    def __call__(self, mode: str, **options: Any) -> Job:
        return verify(mode, **options)


def make_verify_callable(module: types.ModuleType) -> None:
    if not isinstance(module, _CallableVerifyModule):
        module.__class__ = _CallableVerifyModule
