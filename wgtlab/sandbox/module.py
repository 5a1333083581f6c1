"""WasmModule: WebAssembly bytes checked against ABI v1, compiled and linked once per engine.

A module is validated once, when built (bad bytes, missing or mistyped exports, imports outside
WASI preview 1, types the sandbox refuses, anything past its ModuleCaps are refused before
anything runs). Its imports and exports are read by binary.py, never described by wasmtime-py
(which aborts the process on a v128 or GC reference type). Its compiled code comes from the
compiled-code cache (cache.py), keyed on the engine fingerprint and the module's SHA-256, or
from compiler.py, which compiles any but a small module in a child process.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from wgtlab import defaults
from wgtlab.errors import ForbiddenImport, InvalidModule
from wgtlab.sandbox.abi import ABI_EXPORTS, check_exports
from wgtlab.sandbox.binary import (
    OverCap,
    TableShape,
    UndescribableType,
    WasmFormatError,
    read_module,
)
from wgtlab.sandbox.cache import clear_memory_cache, compile_cached, engine_key
from wgtlab.sandbox.compiler import compile_module
from wgtlab.sandbox.engine import SandboxEngine, get_engine
from wgtlab.sandbox.limits import ModuleCaps
from wgtlab.sandbox.wasi import (
    WASI_MODULE,
    WASI_PREVIEW1_FUNCTIONS,
    WASI_PREVIEW1_SIGNATURES,
    core_linker,
)

__all__ = [
    "ABI_EXPORTS",  # defined in abi.py; importable from here as before
    "ExportSpec",
    "ImportSpec",
    "WasmModule",
    "clear_memory_cache",  # defined in cache.py; importable from here as before
    "compile_cached",  # defined in cache.py; importable from here as before
]

_WASM_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"


# --- module description -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSpec:
    """One import of a module: ``module.name`` of a kind ("func", "memory", "table", "global")."""

    module: str
    name: str
    kind: str
    signature: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name} ({self.kind} {self.signature})"


@dataclass(frozen=True)
class ExportSpec:
    """One export of a module: its name, kind and signature."""

    name: str
    kind: str
    signature: str

    def __str__(self) -> str:
        return f"{self.name} ({self.kind} {self.signature})"


@dataclass(frozen=True)
class _Prepared:
    """A module made ready for one engine: compiled, imports resolved."""

    pre: wasmtime.InstancePre
    uses_wasi: bool


class WasmModule:
    """A WebAssembly module that follows ABI v1, validated when built.

    Build it with ``from_wat``, ``from_bytes`` or ``from_file``. ``digest`` is the SHA-256 (hex)
    of the wasm bytes and identifies the code everywhere (caches, task records, Merkle leaves).
    ``caps`` (a ModuleCaps) bounds what loading it may cost; defaults in wgtlab.defaults.
    """

    __slots__ = (
        "_code_bytes",
        "_lock",
        "_prepared",
        "caps",
        "digest",
        "exports",
        "imports",
        "initial_memory_bytes",
        "name",
        "tables",
        "wasm",
    )

    def __init__(
        self, wasm: bytes, *, name: str | None = None, caps: ModuleCaps | None = None
    ) -> None:
        if not isinstance(wasm, (bytes, bytearray, memoryview)):
            hint = "; for WAT text use WasmModule.from_wat" if isinstance(wasm, str) else ""
            raise TypeError(f"WasmModule needs the module's bytes, got {type(wasm).__name__}{hint}")
        if caps is None:
            caps = ModuleCaps()
        elif not isinstance(caps, ModuleCaps):
            raise TypeError(f"WasmModule caps must be a ModuleCaps, got {type(caps).__name__}")
        self.caps = caps
        wasm = bytes(wasm)
        self.wasm = wasm
        self.digest = hashlib.sha256(wasm).hexdigest()
        self.name = name or f"module-{self.digest[:12]}"
        self._lock = threading.Lock()
        self._prepared: dict[str, _Prepared] = {}
        if not wasm.startswith(_WASM_MAGIC):
            raise InvalidModule(
                f"{self.name}: not a WebAssembly binary (it does not start with \\0asm); "
                "for text use WasmModule.from_wat"
            )
        if wasm[4:8] != _CORE_VERSION:
            raise InvalidModule(
                f"{self.name}: not a core WebAssembly module (version bytes {wasm[4:8].hex()}); "
                "components are run by @wgt.udf, kernels must be core modules"
            )
        if len(wasm) > caps.max_module_bytes:
            raise self._over_cap(
                OverCap("max_module_bytes", len(wasm), caps.max_module_bytes, "bytes")
            )
        try:
            shape = read_module(wasm, self._check_cap)
        except OverCap as exc:
            raise self._over_cap(exc) from None
        except UndescribableType as exc:
            raise InvalidModule(
                f"{self.name} uses a type the sandbox refuses: {exc}. wasmtime-py cannot "
                "describe v128 or GC reference types (it aborts the process): keep v128 inside "
                "functions, out of imports, exports and globals"
            ) from None
        except WasmFormatError as exc:
            raise InvalidModule(f"{self.name} is not a valid WebAssembly module: {exc}") from None
        self.imports = tuple(
            ImportSpec(d.module or "", d.name, d.kind, d.signature) for d in shape.imports
        )
        self.exports = tuple(ExportSpec(d.name, d.kind, d.signature) for d in shape.exports)
        self.tables: tuple[TableShape, ...] = shape.tables
        self._code_bytes = shape.code_bytes
        self._check_imports()
        if shape.memories > 1:
            raise InvalidModule(
                f"{self.name} defines more than one linear memory; ABI v1 kernels have exactly "
                "one, exported as `memory`"
            )
        self._check_exports()
        self.initial_memory_bytes = shape.memory_minimum_bytes["memory"]
        self.prepared(get_engine())  # compiles (under the caps) and links

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_bytes(
        cls, wasm: bytes, *, name: str | None = None, caps: ModuleCaps | None = None
    ) -> WasmModule:
        """A module from its binary form."""
        return cls(wasm, name=name, caps=caps)

    @classmethod
    def from_wat(
        cls, text: str | bytes, *, name: str | None = None, caps: ModuleCaps | None = None
    ) -> WasmModule:
        """A module from WebAssembly text (WAT), a str (or its UTF-8 bytes)."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
            if raw.startswith(_WASM_MAGIC):
                raise TypeError(
                    "WasmModule.from_wat needs WAT text, got the bytes of a binary module; "
                    "use WasmModule.from_bytes"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidModule(
                    "the WAT bytes are not UTF-8 text; pass WAT as a str, or a binary module "
                    "to WasmModule.from_bytes"
                ) from None
        elif not isinstance(text, str):
            raise TypeError(
                f"WasmModule.from_wat needs WebAssembly text (WAT) as a str, got "
                f"{type(text).__name__}; for a binary module use WasmModule.from_bytes, for a "
                "file WasmModule.from_file"
            )
        try:
            wasm = wasmtime.wat2wasm(text)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(f"the WAT text does not parse: {exc}") from None
        return cls(bytes(wasm), name=name, caps=caps)

    @classmethod
    def from_file(cls, path: str | Path, *, caps: ModuleCaps | None = None) -> WasmModule:
        """A module from a ``.wasm`` (binary) or ``.wat`` (text) file."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InvalidModule(f"cannot read module file {path}: {exc.strerror}") from None
        if raw.startswith(_WASM_MAGIC):
            return cls(raw, name=path.stem, caps=caps)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidModule(
                f"{path} is neither a WebAssembly binary nor UTF-8 WAT text"
            ) from None
        return cls.from_wat(text, name=path.stem, caps=caps)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as bytes only: whoever unpickles it validates it again.
        return (_rebuild, (self.wasm, self.name, self.caps))

    def __repr__(self) -> str:
        return f"WasmModule({self.name!r}, {len(self.wasm):,} bytes, sha256={self.digest[:16]}...)"

    def _repr_html_(self) -> str:
        from wgtlab.views import wasm_module_html

        return wasm_module_html(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WasmModule) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    @property
    def uses_wasi(self) -> bool:
        return bool(self.imports)

    # --- validation -------------------------------------------------------------------------

    def _check_cap(self, cap: str, value: int, what: str) -> None:
        limit = getattr(self.caps, cap)
        if value > limit:
            raise OverCap(cap, value, limit, what)

    def _over_cap(self, exc: OverCap) -> InvalidModule:
        return InvalidModule(
            f"{self.name} has {exc.value:,} {exc.what}, over the cap {exc.cap}={exc.limit:,} "
            "(loading a module costs the host time and memory in proportion); if the module is "
            f"trusted, raise it with WasmModule(..., caps=ModuleCaps({exc.cap}=...)) "
            "(ModuleCaps from wgtlab.sandbox)"
        )

    def _check_imports(self) -> None:
        forbidden = [
            imp
            for imp in self.imports
            if imp.module != WASI_MODULE
            or imp.kind != "func"
            or imp.name not in WASI_PREVIEW1_FUNCTIONS
        ]
        if forbidden:
            names = ", ".join(str(imp) for imp in forbidden)
            raise ForbiddenImport(
                f"{self.name} imports what the sandbox does not provide: {names}. A kernel may "
                f"import nothing, or functions of WASI preview 1 ({WASI_MODULE}) only",
                imports=tuple(f"{imp.module}.{imp.name}" for imp in forbidden),
            )
        for imp in self.imports:
            expected = WASI_PREVIEW1_SIGNATURES[imp.name]
            if imp.signature != expected:
                raise InvalidModule(
                    f"{self.name} imports {imp.module}.{imp.name} as {imp.signature}, but WASI "
                    f"preview 1 defines it as {expected}; import WASI preview 1 functions with "
                    "their standard signatures"
                )

    def _check_exports(self) -> None:
        check_exports(self.name, {exp.name: (exp.kind, exp.signature) for exp in self.exports})

    # --- compiled code ----------------------------------------------------------------------

    @property
    def _source_key(self) -> str:
        return f"module:{self.digest}"

    def compiled_key(self, engine: SandboxEngine) -> str:
        """The key of this module's compiled code for ``engine`` in the compiled-code cache."""
        return engine_key(engine, self._source_key)

    def _compiled(self, engine: SandboxEngine) -> wasmtime.Module:
        wasm = self.wasm

        def build() -> wasmtime.Module:
            return compile_module(
                engine, wasm, name=self.name, code_bytes=self._code_bytes, caps=self.caps
            )

        return compile_cached(
            engine,
            self._source_key,
            build,
            serialize=wasmtime.Module.serialize,
            deserialize=lambda blob: wasmtime.Module.deserialize(engine.engine, blob),
        )

    def prepared(self, engine: SandboxEngine) -> _Prepared:
        """Compiled code with imports resolved, for ``engine`` (built once, then reused)."""
        prepared = self._prepared.get(engine.fingerprint)
        if prepared is None:
            with self._lock:
                prepared = self._prepared.get(engine.fingerprint)
                if prepared is None:
                    compiled = self._compiled(engine)
                    try:
                        pre = core_linker(engine).instantiate_pre(compiled)
                    except wasmtime.WasmtimeError as exc:
                        # names were checked already, so this is a WASI function imported with
                        # the wrong signature
                        raise InvalidModule(
                            f"{self.name}: {str(exc).strip()}; import WASI preview 1 functions "
                            "with their standard signatures"
                        ) from None
                    prepared = _Prepared(pre=pre, uses_wasi=self.uses_wasi)
                    self._prepared[engine.fingerprint] = prepared
        return prepared

    def warm(self, max_stack_bytes: int = defaults.MAX_STACK_BYTES) -> WasmModule:
        """Compile and link now for the engine of this stack limit (e.g. on a worker at start)."""
        self.prepared(get_engine(max_stack_bytes))
        return self


def _rebuild(wasm: bytes, name: str, caps: ModuleCaps | None = None) -> WasmModule:
    return WasmModule(wasm, name=name, caps=caps)
