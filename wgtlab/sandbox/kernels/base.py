"""The Kernel base class the job layer runs, and the two kinds of kernel built on WasmModules.

A kernel's ``encode``, ``decode``, ``combine`` and ``empty`` run on the trusted side; only
``execute`` runs on a (possibly untrusted) worker, and all it does is ``sandbox.run``.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from wgtlab.errors import ConfigError
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox, TaskResult

__all__ = [
    "BuiltinKernel",
    "ExecutionSpec",
    "Kernel",
    "ModuleKernel",
    "WasmKernel",
    "builtin_module",
    "chunk_bytes",
]


@dataclass(frozen=True)
class ExecutionSpec:
    """How a remote worker rebuilds a kernel's executing part: ``kind`` ("wasm" | "udf"), the
    code's bytes, and ``digest``, the SHA-256 of those bytes.

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


class Kernel(ABC):
    """What runs on each chunk of a job, and how its results come back together.

    A subclass provides ``name``, ``digest`` (sha256 hex of the code that runs), ``params`` (for
    display and receipts, e.g. ``{"bins": 20}``) and ``input_kind`` ("float64", "bytes", "text"
    or "records"), and the methods below. ``encode``, ``decode``, ``combine`` and ``empty`` run on
    the trusted side; only ``execute`` runs on a (possibly untrusted) worker, and all it does is
    ``sandbox.run``. ``execution_spec`` is how a remote worker rebuilds the executing part from
    plain bytes (nothing is unpickled there).
    """

    name: str
    input_kind: str

    @property
    @abstractmethod
    def digest(self) -> str:
        """SHA-256 (hex) identifying the code that runs on workers."""

    @property
    @abstractmethod
    def params(self) -> Mapping[str, Any]:
        """The kernel's parameters, e.g. ``{"bins": 20, "lo": 0.0, "hi": 100.0}``."""

    @abstractmethod
    def encode(self, chunk: Any) -> bytes:
        """Trusted side: one chunk of input -> the task payload (params included if needed)."""

    def payload(self, chunk: Any) -> tuple[bytes, bytes]:
        """Trusted side: ``chunk``'s task payload and its SHA-256 digest (what the Merkle leaf
        and the verified-result cache name). A kernel whose payloads repeat across runs may
        keep them rather than encode and hash again."""
        payload = self.encode(chunk)
        return payload, hashlib.sha256(payload).digest()

    @abstractmethod
    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        """Worker side: run the payload in the sandbox."""

    @abstractmethod
    def decode(self, output: bytes) -> Any:
        """Trusted side: one chunk's output -> its partial value."""

    @abstractmethod
    def combine(self, partials: list[Any]) -> Any:
        """Trusted side: partial values in chunk order -> the final value."""

    @abstractmethod
    def empty(self) -> Any:
        """The value for an input with no chunks."""

    @abstractmethod
    def execution_spec(self) -> ExecutionSpec:
        """The plain-bytes form of the executing part, for a remote worker to rebuild."""

    def fit(self, chunks: Iterable[Any]) -> Kernel:
        """A kernel whose parameters come from the data (a histogram without a range) returns
        its copy fitted to ``chunks``, read on the trusted side when a job is planned; every
        other kernel returns itself without reading anything."""
        return self

    def check_columns(self, columns: Sequence[str]) -> None:  # noqa: B027 (a no-op default)
        """Before any chunk runs: raise JobDefinitionError if the kernel reads a column the
        input (a table with these ``columns``) does not have. Most kernels read none."""

    def auto_chunk_rows(
        self, head: Callable[[int], Any], limits: ResourceLimits
    ) -> tuple[int, str] | None:
        """Rows per chunk for ``chunk_rows="auto"``, measured on the input's first rows
        (``head(n)``) on the trusted side, and why; None: no preference (default chunking)."""
        return None

    def note(self, value: Any) -> str:
        """One line about a combined ``value`` that the result's views show (e.g. values a
        histogram's range left out), or ""."""
        return ""


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


class ModuleKernel(Kernel):
    """A kernel whose executing part is one ABI v1 ``WasmModule`` (``module``)."""

    @property
    @abstractmethod
    def module(self) -> WasmModule:
        """The module each chunk runs in."""

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        return sandbox.run(self.module, payload)

    def execution_spec(self) -> ExecutionSpec:
        return ExecutionSpec.of("wasm", self.module.wasm, self.module.name)


@functools.cache
def builtin_module(filename: str) -> WasmModule:
    """A built-in kernel's module, compiled from its WAT file in this package (once)."""
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    return WasmModule.from_wat(text, name=f"wgt.kernels.{filename.removesuffix('.wat')}")


class BuiltinKernel(ModuleKernel):
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

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"wgt.kernels.{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BuiltinKernel)
            and type(other) is type(self)
            and other._params == self._params
        )

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._params.items()))))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_builtin, (type(self), self._params))


def _rebuild_builtin(cls: type[BuiltinKernel], params: dict[str, Any]) -> BuiltinKernel:
    return cls(**params)


class WasmKernel(ModuleKernel):
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
        self._module = module
        self.name = name or module.name
        self._combine = combine

    @property
    def module(self) -> WasmModule:
        return self._module

    @property
    def digest(self) -> str:
        return self._module.digest

    @property
    def params(self) -> Mapping[str, Any]:
        return MappingProxyType({})

    def encode(self, chunk: Any) -> bytes:
        return chunk_bytes(chunk)

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
