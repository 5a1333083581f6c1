"""The Kernel protocol the job layer runs, and the two kinds of kernel built on WasmModules.

A kernel's ``encode``, ``decode``, ``combine`` and ``empty`` run on the trusted side; only
``execute`` runs on a (possibly untrusted) worker, and all it does is ``sandbox.run``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from wgtlab.errors import ConfigError
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox, TaskResult

__all__ = ["BuiltinKernel", "Kernel", "WasmKernel", "builtin_module", "chunk_bytes"]


@runtime_checkable
class Kernel(Protocol):
    """What the job layer needs from a kernel.

    ``input_kind`` is one of "float64", "bytes", "text", "records".
    """

    name: str  # "histogram"
    digest: str  # sha256 hex identifying the code that runs (module digest)
    params: Mapping[str, Any]  # e.g. {"bins": 20, "lo": 0.0, "hi": 100.0}
    input_kind: str

    def encode(self, chunk: Any) -> bytes:
        """Trusted side: one chunk of input -> the task payload (params included if needed)."""
        ...

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        """Worker side: run the payload in the sandbox."""
        ...

    def decode(self, output: bytes) -> Any:
        """Trusted side: one chunk's output -> its partial value."""
        ...

    def combine(self, partials: list[Any]) -> Any:
        """Trusted side: partial values in chunk order -> the final value."""
        ...

    def empty(self) -> Any:
        """The value for an input with no chunks."""
        ...


def chunk_bytes(chunk: Any) -> bytes:
    """A bytes chunk as bytes: bytes-like objects as they are, text as UTF-8."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise ConfigError(
        f"this kernel takes bytes or text chunks, got {type(chunk).__name__}; "
        "give it bytes, str, or a file"
    )


@functools.cache
def builtin_module(filename: str) -> WasmModule:
    """A built-in kernel's module, compiled from its WAT file in this package (once)."""
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    return WasmModule.from_wat(text, name=f"wgt.kernels.{filename.removesuffix('.wat')}")


class BuiltinKernel:
    """A built-in kernel: one WAT module of this package plus its trusted-side spec.

    Subclasses set ``name``, ``wat`` (file name) and ``input_kind``, and define ``encode``,
    ``decode``, ``combine`` and ``empty``. Instances pickle as their parameters only.
    """

    name: str
    wat: str
    input_kind: str

    def __init__(self, **params: Any) -> None:
        self._params = dict(params)

    @property
    def params(self) -> Mapping[str, Any]:
        return MappingProxyType(self._params)

    @property
    def module(self) -> WasmModule:
        return builtin_module(self.wat)

    @property
    def digest(self) -> str:
        return self.module.digest

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        return sandbox.run(self.module, payload)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"wgt.kernels.{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._params == self._params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._params.items()))))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_builtin, (type(self), self._params))


def _rebuild_builtin(cls: type[BuiltinKernel], params: dict[str, Any]) -> BuiltinKernel:
    return cls(**params)


class WasmKernel:
    """Any ABI v1 module as a kernel: chunk bytes in, output bytes out.

    Partial results are the raw output bytes; they combine by concatenation in chunk order, or
    by ``combine(partials)`` if given (it runs on the trusted side).
    """

    input_kind = "bytes"

    def __init__(
        self,
        module: WasmModule,
        combine: Callable[[list[bytes]], Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if not isinstance(module, WasmModule):
            raise ConfigError(f"WasmKernel needs a WasmModule, got {type(module).__name__}")
        if combine is not None and not callable(combine):
            raise ConfigError(f"combine must be callable, got {type(combine).__name__}")
        self.module = module
        self.name = name or module.name
        self.digest = module.digest
        self.params: Mapping[str, Any] = MappingProxyType({})
        self._combine = combine

    def encode(self, chunk: Any) -> bytes:
        return chunk_bytes(chunk)

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        return sandbox.run(self.module, payload)

    def decode(self, output: bytes) -> bytes:
        return output

    def combine(self, partials: list[bytes]) -> Any:
        if self._combine is not None:
            return self._combine(partials)
        return b"".join(partials)

    def empty(self) -> Any:
        return self.combine([])

    def __repr__(self) -> str:
        return f"WasmKernel({self.module!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (WasmKernel, (self.module, self._combine), {"name": self.name})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
