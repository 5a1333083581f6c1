"""A strict, bounded reader of a core WebAssembly module's declarations, run before wasmtime.

It reads what the sandbox must know before handing the bytes to wasmtime: the shape of every
import and export (described here, because wasmtime-py 50 aborts the process describing a
``v128`` or GC reference type), tables and memories (limits), globals, and how many functions
and how much code there is (compile cost). Function bodies, data and element segments are
skipped, not decoded: wasmtime validates them. Every length is checked against the bytes left
before it is used, so any input ends in a ``ModuleShape`` or one ``WasmFormatError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Declaration",
    "FuncSig",
    "ModuleShape",
    "OverCap",
    "TableShape",
    "UndescribableType",
    "WasmFormatError",
    "read_module",
]

_MAGIC = b"\0asm\x01\x00\x00\x00"

# value types. wasmtime-py describes funcref and externref safely and aborts on any other
# reference type (GC and typed function references, which the engine has off anyway; its GC
# runtime is off too, so wasmtime then refuses externref as well).
I32, I64, F32, F64, V128, FUNCREF, EXTERNREF = 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F
_NUMERIC = {I32: "i32", I64: "i64", F32: "f32", F64: "f64"}
_VALUE_NAMES = {**_NUMERIC, V128: "v128", FUNCREF: "funcref", EXTERNREF: "externref"}
_REFERENCE_NAMES = {  # the other reference type encodings, named in refusals
    0x74: "nullexnref",
    0x73: "nullfuncref",
    0x72: "nullexternref",
    0x71: "nullref",
    0x6E: "anyref",
    0x6D: "eqref",
    0x6C: "i31ref",
    0x6B: "structref",
    0x6A: "arrayref",
    0x69: "exnref",
    0x68: "contref",
    0x75: "nullcontref",
    0x64: "(ref T)",
    0x63: "(ref null T)",
}

# section ids in the order the binary format requires them (custom sections go anywhere)
_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}
_SECTION_NAMES = {
    1: "type",
    2: "import",
    3: "function",
    4: "table",
    5: "memory",
    6: "global",
    7: "export",
    8: "start",
    9: "element",
    10: "code",
    11: "data",
    12: "data count",
    13: "tag",
}
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class WasmFormatError(ValueError):
    """The bytes are not a well-formed module (the reason says where)."""


class UndescribableType(WasmFormatError):
    """The module uses a type the sandbox refuses (v128 at a boundary, a GC reference type)."""


class OverCap(WasmFormatError):
    """The module is larger than a ModuleCaps field allows."""

    def __init__(self, cap: str, value: int, limit: int, what: str) -> None:
        super().__init__(f"{what}: {value:,}, over the cap {cap}={limit:,}")
        self.cap, self.value, self.limit, self.what = cap, value, limit, what


@dataclass(frozen=True)
class FuncSig:
    params: tuple[int, ...]
    results: tuple[int, ...]

    def __str__(self) -> str:
        params = ", ".join(_VALUE_NAMES[t] for t in self.params)
        results = ", ".join(_VALUE_NAMES[t] for t in self.results)
        return f"({params}) -> ({results})"

    @property
    def has_v128(self) -> bool:
        return V128 in self.params or V128 in self.results


@dataclass(frozen=True)
class TableShape:
    element: int  # FUNCREF or EXTERNREF
    minimum: int
    maximum: int | None


@dataclass(frozen=True)
class Declaration:
    """An import (``module`` set) or an export: name, kind, and its type described as text."""

    module: str | None
    name: str
    kind: str
    signature: str


@dataclass(frozen=True)
class ModuleShape:
    """What the reader found. Counts include imported items."""

    imports: tuple[Declaration, ...]
    exports: tuple[Declaration, ...]
    functions: int
    code_bytes: int  # the code section's payload
    largest_function_bytes: int
    tables: tuple[TableShape, ...]
    memories: int
    memory_minimum_bytes: dict[str, int]  # export name -> initial size, of exported memories
    globals: int


class _Reader:
    """A cursor over ``data[pos:end]`` that never reads past ``end``."""

    __slots__ = ("data", "end", "pos", "where")

    def __init__(self, data: bytes, pos: int, end: int, where: str) -> None:
        self.data, self.pos, self.end, self.where = data, pos, end, where

    def fail(self, reason: str) -> WasmFormatError:
        return WasmFormatError(f"{reason} (at byte {self.pos:#x}, {self.where})")

    def left(self) -> int:
        return self.end - self.pos

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, size: int) -> bytes:
        if size > self.left():
            raise self.fail(f"a length of {size:,} runs past the end")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def skip(self, size: int) -> None:
        if size > self.left():
            raise self.fail(f"a length of {size:,} runs past the end")
        self.pos += size

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        for _ in range(-(-bits // 7)):
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if result >> bits:
                    raise self.fail(f"an unsigned LEB128 over {bits} bits")
                return result
        raise self.fail(f"an unsigned LEB128 longer than {bits} bits allow")

    def sleb(self, bits: int) -> None:
        """Skip a signed LEB128 of at most ``bits`` bits (const expressions only need skipping)."""
        for _ in range(-(-bits // 7)):
            if not self.byte() & 0x80:
                return
        raise self.fail(f"a signed LEB128 longer than {bits} bits allow")

    def count(self, what: str, smallest_item: int = 1) -> int:
        """A vector's length, refused if its items could not fit in the bytes left."""
        n = self.uleb()
        if n * smallest_item > self.left():
            raise self.fail(f"{n:,} {what} cannot fit in {self.left():,} bytes")
        return n

    def name(self) -> str:
        raw = self.take(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a name that is not UTF-8") from None


def _value_type(r: _Reader, context: str) -> int:
    code = r.byte()
    if code in _VALUE_NAMES:
        return code
    if code in _REFERENCE_NAMES:
        raise UndescribableType(
            f"{context} uses the reference type {_REFERENCE_NAMES[code]}; the sandbox allows "
            "only funcref and externref (GC and typed function references are off)"
        )
    raise r.fail(f"unknown value type {code:#04x} in {context}")


def _reference_type(r: _Reader, context: str) -> int:
    code = _value_type(r, context)
    if code not in (FUNCREF, EXTERNREF):
        raise r.fail(f"{context} needs a reference type, got {_VALUE_NAMES[code]}")
    return code


@dataclass(frozen=True)
class _Limits:
    minimum: int
    maximum: int | None
    shared: bool = False
    is64: bool = False
    page_size_log2: int = 16


def _limits(r: _Reader, memory: bool) -> _Limits:
    """A table's or memory's limits (flags: max present, shared, 64-bit, custom page size)."""
    flags = r.byte()
    if flags & ~0x0F or (not memory and flags & 0x0A):
        raise r.fail(f"limits flags {flags:#04x}")
    bits = 64 if flags & 0x04 else 32
    minimum = r.uleb(bits)
    maximum = r.uleb(bits) if flags & 0x01 else None
    page_size_log2 = r.uleb() if flags & 0x08 else 16
    if page_size_log2 > 16:
        raise r.fail(f"a page size of 2**{page_size_log2} bytes")
    return _Limits(minimum, maximum, bool(flags & 0x02), bool(flags & 0x04), page_size_log2)


def _const_expr(r: _Reader) -> None:
    """Skip a constant expression up to its ``end`` (the opcodes allowed in one, and nothing
    else: wasmtime validates what they mean)."""
    for _ in range(r.left() + 1):
        op = r.byte()
        if op == 0x0B:
            return
        if op == 0x41:
            r.sleb(32)
        elif op == 0x42:
            r.sleb(64)
        elif op == 0x43:
            r.skip(4)
        elif op == 0x44:
            r.skip(8)
        elif op in (0x23, 0xD2):  # global.get, ref.func
            r.uleb()
        elif op == 0xD0:  # ref.null: a heap type, funcref / externref only
            heap = r.byte()
            if heap not in (FUNCREF, EXTERNREF):
                name = _REFERENCE_NAMES.get(heap, f"{heap:#04x}")
                raise UndescribableType(
                    f"a constant expression uses ref.null {name}; the sandbox allows only "
                    "funcref and externref"
                )
        elif op in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended constant arithmetic
            pass
        elif op == 0xFD:  # v128.const: only in v128 globals, which are refused before this
            raise UndescribableType("a constant expression makes a v128")
        else:
            raise r.fail(f"opcode {op:#04x} in a constant expression")
    raise r.fail("a constant expression without end")


def _memory_text(limits: _Limits) -> str:
    kind = "memory64" if limits.is64 else "memory32"
    return f"shared {kind}" if limits.shared else kind


class _Declarations:
    """What the sections declared so far (imported items first, as the index spaces go)."""

    def __init__(self) -> None:
        self.types: list[FuncSig] = []
        self.functions: list[FuncSig] = []
        self.tables: list[TableShape] = []
        self.memories: list[_Limits] = []
        self.globals: list[int] = []  # value types
        self.imports: list[Declaration] = []
        self.exports: list[Declaration] = []
        self.memory_minimum_bytes: dict[str, int] = {}
        self.defined_functions = 0
        self.code_bodies = 0
        self.code_bytes = 0
        self.largest_function = 0

    def type_at(self, r: _Reader, index: int, where: str) -> FuncSig:
        if index >= len(self.types):
            raise r.fail(f"{where} names type {index}, which does not exist")
        return self.types[index]


def read_module(wasm: bytes, check_cap: Callable[[str, int, str], None]) -> ModuleShape:
    """Read ``wasm``'s declarations; ``check_cap(cap, value, what)`` raises OverCap when a
    count is over its cap (it is called before the items are read)."""
    if not wasm.startswith(_MAGIC):
        raise WasmFormatError("not a core WebAssembly module (bad magic or version)")
    r = _Reader(wasm, len(_MAGIC), len(wasm), "module")
    d = _Declarations()
    last = 0
    seen: set[int] = set()
    while r.left():
        section_id = r.byte()
        size = r.uleb()
        if size > r.left():
            raise r.fail(f"section {section_id} of {size:,} bytes runs past the end")
        where = f"{_SECTION_NAMES.get(section_id, 'custom')} section"
        body = _Reader(wasm, r.pos, r.pos + size, where)
        r.pos += size
        if section_id == 0:
            body.name()  # a custom section: a well-formed name, then anything
            continue
        if section_id not in _ORDER:
            raise body.fail(f"unknown section id {section_id}")
        if section_id in seen or _ORDER[section_id] < last:
            raise body.fail("a section out of order or repeated")
        seen.add(section_id)
        last = _ORDER[section_id]
        reader = _SECTION_READERS.get(section_id)
        if reader is not None:
            reader(body, d, check_cap)
            if body.left():
                raise body.fail(f"{body.left():,} bytes left over")
        # start, element, data count, data: wasmtime validates them; they count against
        # max_module_bytes
    if d.code_bodies != d.defined_functions:
        raise WasmFormatError(
            f"{d.defined_functions:,} functions declared but {d.code_bodies:,} bodies given"
        )
    return ModuleShape(
        imports=tuple(d.imports),
        exports=tuple(d.exports),
        functions=len(d.functions),
        code_bytes=d.code_bytes,
        largest_function_bytes=d.largest_function,
        tables=tuple(d.tables),
        memories=len(d.memories),
        memory_minimum_bytes=d.memory_minimum_bytes,
        globals=len(d.globals),
    )


_CapCheck = Callable[[str, int, str], None]


def _types(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    n = r.count("types", 3)
    check_cap("max_types", n, "function types")
    for i in range(n):
        form = r.byte()
        if form != 0x60:
            raise UndescribableType(
                f"type {i} is not a function type (form {form:#04x}; GC types are off)"
            )
        where = f"type {i}"
        params = tuple(_value_type(r, where) for _ in range(r.count("parameters")))
        results = tuple(_value_type(r, where) for _ in range(r.count("results")))
        d.types.append(FuncSig(params, results))


def _imports(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    n = r.count("imports", 4)
    check_cap("max_imports", n, "imports")
    for _ in range(n):
        module, field = r.name(), r.name()
        kind = r.byte()
        where = f"import {module}.{field}"
        if kind == 0:
            sig = d.type_at(r, r.uleb(), where)
            if sig.has_v128:
                raise UndescribableType(f"{where} has v128 in its signature {sig}")
            d.functions.append(sig)
            d.imports.append(Declaration(module, field, "func", str(sig)))
        elif kind == 1:
            element = _reference_type(r, where)
            limits = _limits(r, memory=False)
            d.tables.append(TableShape(element, limits.minimum, limits.maximum))
            d.imports.append(Declaration(module, field, "table", _VALUE_NAMES[element]))
        elif kind == 2:
            limits = _limits(r, memory=True)
            d.memories.append(limits)
            d.imports.append(Declaration(module, field, "memory", _memory_text(limits)))
        elif kind == 3:
            value = _value_type(r, where)
            if value == V128:
                raise UndescribableType(f"{where} is a v128 global")
            r.byte()  # mutability
            d.globals.append(value)
            d.imports.append(Declaration(module, field, "global", _VALUE_NAMES[value]))
        else:
            raise UndescribableType(f"{where} is of kind {kind} (tags are off)")


def _functions(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    n = r.count("functions")
    check_cap("max_functions", len(d.functions) + n, "functions")
    for _ in range(n):
        d.functions.append(d.type_at(r, r.uleb(), f"function {len(d.functions)}"))
    d.defined_functions = n


def _tables(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    n = r.count("tables", 2)
    check_cap("max_tables", len(d.tables) + n, "tables")
    for _ in range(n):
        where = f"table {len(d.tables)}"
        if r.left() and r.data[r.pos] == 0x40:
            raise UndescribableType(f"{where} has an initializer (typed references are off)")
        element = _reference_type(r, where)
        limits = _limits(r, memory=False)
        d.tables.append(TableShape(element, limits.minimum, limits.maximum))


def _memories(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    for _ in range(r.count("memories", 2)):
        d.memories.append(_limits(r, memory=True))


def _globals(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    n = r.count("globals", 3)
    check_cap("max_globals", len(d.globals) + n, "globals")
    for _ in range(n):
        where = f"global {len(d.globals)}"
        value = _value_type(r, where)
        if value == V128:
            raise UndescribableType(f"{where} is a v128 global")
        r.byte()  # mutability
        _const_expr(r)
        d.globals.append(value)


def _exports(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    n = r.count("exports", 2)
    check_cap("max_exports", n, "exports")
    names: set[str] = set()
    for _ in range(n):
        field = r.name()
        if field in names:
            raise r.fail(f"export {field!r} twice")
        names.add(field)
        kind, index = r.byte(), r.uleb()
        where = f"export {field!r}"
        if kind == 0 and index < len(d.functions):
            sig = d.functions[index]
            if sig.has_v128:
                raise UndescribableType(f"{where} has v128 in its signature {sig}")
            signature = str(sig)
        elif kind == 1 and index < len(d.tables):
            signature = _VALUE_NAMES[d.tables[index].element]
        elif kind == 2 and index < len(d.memories):
            memory = d.memories[index]
            signature = _memory_text(memory)
            d.memory_minimum_bytes[field] = memory.minimum << memory.page_size_log2
        elif kind == 3 and index < len(d.globals):
            signature = _VALUE_NAMES[d.globals[index]]
        elif kind in (0, 1, 2, 3):
            raise r.fail(f"{where} names {_KINDS[kind]} {index}, which does not exist")
        else:
            raise UndescribableType(f"{where} is of kind {kind} (tags are off)")
        d.exports.append(Declaration(None, field, _KINDS[kind], signature))


def _code(r: _Reader, d: _Declarations, check_cap: _CapCheck) -> None:
    check_cap("max_code_bytes", r.left(), "bytes of code")
    d.code_bytes = r.left()
    n = r.count("function bodies", 2)
    for i in range(n):
        size = r.uleb()
        if size > d.largest_function:
            check_cap("max_function_bytes", size, f"bytes in the body of function {i}")
            d.largest_function = size
        r.skip(size)
    d.code_bodies = n


_SECTION_READERS: dict[int, Callable[[_Reader, _Declarations, _CapCheck], None]] = {
    1: _types,
    2: _imports,
    3: _functions,
    4: _tables,
    5: _memories,
    6: _globals,
    7: _exports,
    10: _code,
}
