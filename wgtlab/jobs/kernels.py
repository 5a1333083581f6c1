"""Turning whatever an analyst passes to ``job.kernel(...)`` into a kernel object.

Built-in kernels and ``@wgt.udf`` functions already are kernels; a ``WasmModule`` is wrapped
as raw bytes in, bytes out; a plain Python function becomes a UDF.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wgtlab.errors import JobDefinitionError

_KERNEL_MEMBERS = ("name", "digest", "input_kind", "encode", "execute", "decode", "combine")


def is_kernel(obj: Any) -> bool:
    return all(hasattr(obj, member) for member in _KERNEL_MEMBERS)


def resolve_kernel(
    obj: Any, *, combine: Callable[[list[Any]], Any] | None = None, input: str | None = None
) -> Any:
    """A kernel for ``obj``; ``combine`` overrides how partial results combine (trusted side)."""
    from wgtlab.sandbox.module import WasmModule

    if isinstance(obj, WasmModule):
        from wgtlab.sandbox.kernels import WasmKernel

        kernel = WasmKernel(obj)
    elif is_kernel(obj):
        kernel = obj
    elif callable(obj):
        from wgtlab.sandbox.python import udf

        kernel = udf(obj, input=input) if input else udf(obj)
    else:
        raise JobDefinitionError(
            f"cannot use a {type(obj).__name__} as a kernel; give a built-in kernel "
            "(wgt.kernels.histogram(...)), a wgt.WasmModule, or a @wgt.udf function"
        )
    return CombinedKernel(kernel, combine) if combine is not None else kernel


class CombinedKernel:
    """A kernel whose partial results are combined by a user function on the trusted side."""

    def __init__(self, kernel: Any, combine: Callable[[list[Any]], Any]) -> None:
        if not callable(combine):
            raise JobDefinitionError(f"combine must be callable, got {type(combine).__name__}")
        self.inner = kernel
        self._combine = combine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def combine(self, partials: list[Any]) -> Any:
        return self._combine(partials)

    def empty(self) -> Any:
        return self._combine([])

    def __repr__(self) -> str:
        return f"{self.inner!r} combined by {getattr(self._combine, '__name__', 'a function')}"
