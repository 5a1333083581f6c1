"""Turning whatever an analyst passes to ``job.kernel(...)`` into a ``Kernel``.

Built-in kernels and ``@wgt.udf`` functions already are kernels; a ``WasmModule`` is wrapped
as raw bytes in, bytes out; a plain Python function becomes a UDF.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from wgtlab.errors import JobDefinitionError
from wgtlab.sandbox.kernels.base import ExecutionSpec, Kernel, WasmKernel
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.python.udf import udf
from wgtlab.sandbox.runner import Sandbox, TaskResult

__all__ = ["CombinedKernel", "resolve_kernel"]


def resolve_kernel(
    obj: object, *, combine: Callable[[list[Any]], Any] | None = None, input: str | None = None
) -> Kernel:
    """A kernel for ``obj``; ``combine`` overrides how partial results combine (trusted side)."""
    kernel: Kernel
    if isinstance(obj, WasmModule):
        kernel = WasmKernel(obj)
    elif isinstance(obj, Kernel):
        kernel = obj
    elif callable(obj):
        kernel = udf(obj, input=input) if input else udf(obj)
    else:
        raise JobDefinitionError(
            f"cannot use a {type(obj).__name__} as a kernel; give a built-in kernel "
            "(wgt.kernels.histogram(...)), a wgt.WasmModule, or a @wgt.udf function"
        )
    return CombinedKernel(kernel, combine) if combine is not None else kernel


class CombinedKernel(Kernel):
    """``inner`` with its partial results combined by a user function on the trusted side;
    everything else (what runs, on which input) is ``inner``'s."""

    def __init__(self, kernel: Kernel, combine: Callable[[list[Any]], Any]) -> None:
        if not callable(combine):
            raise JobDefinitionError(f"combine must be callable, got {type(combine).__name__}")
        self.inner = kernel
        self.name = kernel.name
        self.input_kind = kernel.input_kind
        self._combine = combine

    @property
    def digest(self) -> str:
        return self.inner.digest

    @property
    def params(self) -> Mapping[str, Any]:
        return self.inner.params

    def encode(self, chunk: Any) -> bytes:
        return self.inner.encode(chunk)

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        return self.inner.execute(sandbox, payload)

    def decode(self, output: bytes) -> Any:
        return self.inner.decode(output)

    def combine(self, partials: list[Any]) -> Any:
        return self._combine(partials)

    def empty(self) -> Any:
        return self._combine([])

    def execution_spec(self) -> ExecutionSpec:
        return self.inner.execution_spec()

    def check_columns(self, columns: Sequence[str]) -> None:
        self.inner.check_columns(columns)

    def auto_chunk_rows(
        self, head: Callable[[int], Any], limits: ResourceLimits
    ) -> tuple[int, str] | None:
        return self.inner.auto_chunk_rows(head, limits)

    def fit(self, chunks: Iterable[Any]) -> Kernel:
        fitted = self.inner.fit(chunks)
        return self if fitted is self.inner else CombinedKernel(fitted, self._combine)

    def __repr__(self) -> str:
        label = getattr(self._combine, "__name__", "a function")
        return f"{self.inner!r} combined by {label}"
