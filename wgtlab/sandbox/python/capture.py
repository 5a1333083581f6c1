"""Turning a Python function into the self-contained source the guest runs, or a clear refusal.

The function's source is read with inspect (decorators dropped); every global it uses must be a
guest module, a constant, or another function with source, all checked before any chunk runs.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import datetime
import decimal
import dis
import fractions
import inspect
import math
import re
import sys
import textwrap
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wgtlab.errors import UdfBuildError
from wgtlab.sandbox.python.guest.guest_modules import GUEST_MODULES

__all__ = ["GuestProgram", "capture"]

_MAX_CONSTANT_CHARS = 1 << 20  # bigger state belongs in the job's input, not in the code
_LAMBDA_ENTRY = "_wgt_lambda"
_GUEST_MODULE_SET = frozenset(GUEST_MODULES)
_NAME_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"})


@dataclass(frozen=True)
class GuestProgram:
    """Source defining ``entry`` and everything it uses; what the guest execs for each task."""

    source: str
    entry: str  # the name of the function to call in ``source``
    name: str  # the analyst's name for it (for messages)


def _refuse(function_name: str, problem: str, remedy: str) -> UdfBuildError:
    return UdfBuildError(f"@wgt.udf cannot run {function_name} in the sandbox: {problem}; {remedy}")


# --- source of one function ----------------------------------------------------------------------


def _function_source(fn: types.FunctionType) -> tuple[str, str]:
    """(source defining the function without decorators, the name it is defined under)."""
    label = _label(fn)
    try:
        raw = inspect.getsource(fn)
    except (OSError, TypeError):
        raise _refuse(
            label,
            "its source code cannot be read (defined at an interactive prompt, with exec(), or "
            "in a file that changed since)",
            "define it with def in a notebook cell or a .py file",
        ) from None
    text = textwrap.dedent(raw)
    if fn.__name__ == "<lambda>":
        return _lambda_source(fn, text, label), _LAMBDA_ENTRY
    try:
        tree = ast.parse(text)
    except SyntaxError:
        raise _refuse(
            label, "its source could not be parsed", "define it with a plain def"
        ) from None
    node = tree.body[0] if tree.body else None
    if isinstance(node, ast.AsyncFunctionDef):
        raise _refuse(label, "it is an async function", "make it a plain def")
    if not isinstance(node, ast.FunctionDef) or node.name != fn.__name__:
        raise _refuse(label, "its source does not start with its def", "define it with def")
    lines = text.splitlines()
    # Decorators (@wgt.udf itself, and any others) are left on the host side.
    return "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n", fn.__name__


def _lambda_source(fn: types.FunctionType, text: str, label: str) -> str:
    arguments = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    candidates = []
    for attempt in (text, f"(\n{text}\n)"):
        try:
            tree = ast.parse(attempt)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda) and tuple(a.arg for a in node.args.args) == arguments:
                candidates.append(ast.get_source_segment(attempt, node))
        break
    if len(candidates) != 1 or candidates[0] is None:
        raise _refuse(
            label,
            "its source line does not show which lambda it is"
            if candidates
            else "the source of this lambda cannot be isolated",
            "define it with def",
        )
    return f"{_LAMBDA_ENTRY} = {candidates[0]}\n"


def _label(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return "a lambda" if "<lambda>" in name else repr(name)


# --- what a function uses ------------------------------------------------------------------------


def _global_names(source: str) -> set[str]:
    # Compiled with lazy annotations, as the guest's Python 3.14 treats them: names used only in
    # annotations (rows: pd.DataFrame) need not exist inside the sandbox.
    flags = __future__.annotations.compiler_flag
    code = compile(source, "<udf>", "exec", flags=flags, dont_inherit=True)
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        for instruction in dis.get_instructions(current):
            if instruction.opname in _NAME_OPS:
                names.add(instruction.argval)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def _imports(source: str) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


def _module_remedy() -> str:
    return (
        "inside the sandbox only these standard-library modules exist: "
        f"{', '.join(sorted(m for m in GUEST_MODULES if '.' not in m))}"
    )


def _check_imports(label: str, source: str) -> None:
    for module, level in _imports(source):
        if level:
            raise _refuse(
                label, "it uses a relative import", "import standard-library modules only"
            )
        if module not in _GUEST_MODULE_SET:
            raise _refuse(
                label, f"it imports {module}, which the sandbox does not have", _module_remedy()
            )


# Values of these types are rebuilt inside the guest from their parts (module alias, constructor).
_VALUE_MODULES = {
    "datetime": "_wgt_datetime",
    "decimal": "_wgt_decimal",
    "fractions": "_wgt_fractions",
    "re": "_wgt_re",
}


def _literal(value: Any, needs: set[str], depth: int = 0) -> str | None:
    """Python source rebuilding a constant, or None if it is not one. Sets are sorted, so the
    text (and so the udf's digest) does not depend on this process's hash seed."""
    if depth > 50:
        return None
    kind = type(value)
    if value is None or kind in (bool, int, str, bytes, complex):
        return repr(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else f'float("{value}")'
    if kind in (list, tuple, set, frozenset):
        maybe = [_literal(v, needs, depth + 1) for v in value]
        items = [item for item in maybe if item is not None]
        if len(items) != len(maybe):
            return None
        if kind is list:
            return "[" + ", ".join(items) + "]"
        if kind is tuple:
            return "(" + "".join(item + ", " for item in items) + ")"
        body = "{" + ", ".join(sorted(items)) + "}" if items else "()"
        return f"{kind.__name__}({body})"
    if kind is dict:
        pairs = [
            (_literal(k, needs, depth + 1), _literal(v, needs, depth + 1)) for k, v in value.items()
        ]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return _value_literal(value, needs)


def _value_literal(value: Any, needs: set[str]) -> str | None:
    kind = type(value)
    text = None
    if kind is re.Pattern:
        needs.add("re")
        return f"_wgt_re.compile({value.pattern!r}, {int(value.flags)})"
    if kind is decimal.Decimal:
        needs.add("decimal")
        return f"_wgt_decimal.Decimal({str(value)!r})"
    if kind is fractions.Fraction:
        needs.add("fractions")
        return f"_wgt_fractions.Fraction({value.numerator}, {value.denominator})"
    if kind in (
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
    ):
        tz = getattr(value, "tzinfo", None)
        if tz is not None and type(tz) is not datetime.timezone:
            return None  # zoneinfo / pytz zones need tz data the sandbox does not have
        text = repr(value)
    if text is None:
        return None
    needs.add("datetime")
    return text.replace("datetime.", "_wgt_datetime.")


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers; everything else unchanged."""
    if (
        type(value).__module__ == "numpy"
        and hasattr(value, "item")
        and getattr(value, "ndim", 1) == 0
    ):
        return value.item()
    return value


def _describe(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class CapturedFunction(ABC):
    """A function that is already a sandboxed kernel (``@wgt.udf``): another function that
    calls it captures its native function in its place."""

    @property
    @abstractmethod
    def native_function(self) -> Callable[..., Any] | None:
        """The plain Python function, or None where only the program travelled (a worker)."""


class _Assembler:
    """Collects the definitions a function needs, checking each one."""

    def __init__(self, main_label: str) -> None:
        self.main_label = main_label
        self.imports: dict[str, str] = {}  # bound name -> import statement
        self.constants: dict[str, str] = {}  # bound name -> assignment
        self.functions: dict[str, str] = {}  # defined name -> source
        self.aliases: dict[str, str] = {}  # bound name -> assignment
        self.bound: dict[str, Any] = {}  # name -> host value it stands for
        self.seen: set[int] = set()

    def add_function(self, fn: types.FunctionType, bound_as: str | None) -> str:
        source, entry = _function_source(fn)
        label = _label(fn)
        if entry == _LAMBDA_ENTRY and bound_as is not None:
            source = f"{bound_as} = {source.partition(' = ')[2]}"
            entry = bound_as
        _check_imports(label, source)
        if id(fn) not in self.seen:
            self.seen.add(id(fn))
            self._claim(entry, fn, label)
            self.functions[entry] = source
            self._resolve_names(fn, source, label, entry)
        if bound_as is not None and bound_as != entry:
            self._claim(bound_as, fn, label)
            self.aliases[bound_as] = f"{bound_as} = {entry}\n"
        return entry

    def _claim(self, name: str, value: Any, label: str) -> None:
        if name in self.bound and self.bound[name] is not value:
            raise _refuse(
                self.main_label,
                f"the name {name!r} means two different things in the functions it uses "
                f"(one of them in {label})",
                "rename one of them",
            )
        self.bound[name] = value

    def _resolve_names(self, fn: types.FunctionType, source: str, label: str, entry: str) -> None:
        closure = {}
        if fn.__closure__:
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
                try:
                    closure[var] = cell.cell_contents
                except ValueError:  # an empty cell: the variable was never assigned
                    raise _refuse(
                        label,
                        f"it uses {var!r} from an enclosing function before it is set",
                        "set it first",
                    ) from None
        for name in sorted(_global_names(source) - {entry}):
            if name.startswith("__") and name.endswith("__"):
                continue  # __name__, __builtins__...: the guest namespace has its own
            if name in closure:
                value = closure[name]
            elif name in fn.__globals__:
                value = fn.__globals__[name]
                if _library_stand_in(name, value, fn):
                    continue  # e.g. IPython's wrapper of open(): the guest has the real builtin
            else:
                continue  # a builtin, or a name that is undefined natively too
            self._bind(name, value, label)

    def _bind(self, name: str, value: Any, label: str) -> None:
        if name in self.bound and self.bound[name] is value:
            return
        if isinstance(value, types.ModuleType):
            module = value.__name__
            if module not in _GUEST_MODULE_SET:
                raise _refuse(
                    label,
                    f"it uses the module {module} (as {name!r}), which the sandbox does not have",
                    _module_remedy(),
                )
            self._claim(name, value, label)
            self.imports[name] = (
                f"import {module} as {name}\n" if module != name else f"import {module}\n"
            )
            return
        if isinstance(value, CapturedFunction):
            value = value.native_function
            if value is None:
                raise _refuse(
                    label,
                    f"it calls the udf {name!r}, whose function is not available here",
                    "define it again in this session",
                )
        if isinstance(value, types.FunctionType):
            module = value.__module__
            if module in _GUEST_MODULE_SET and _importable_from(module, value):
                self._import_from(name, module, value, label)
            else:
                self.add_function(value, name)
            return
        origin = _guest_origin(value)
        if origin is not None:
            self._import_from(name, origin, value, label)
            return
        needs: set[str] = set()
        text = _literal(_plain(value), needs)
        if text is not None:
            if len(text) > _MAX_CONSTANT_CHARS:
                raise _refuse(
                    label,
                    f"the global {name!r} is a constant of {len(text):,} characters",
                    "pass large data as the job's input instead of through the function",
                )
            self._claim(name, value, label)
            for module in sorted(needs):
                self.imports[_VALUE_MODULES[module]] = (
                    f"import {module} as {_VALUE_MODULES[module]}\n"
                )
            self.constants[name] = f"{name} = {text}\n"
            return
        if value is builtins.__dict__.get(name):
            return  # a builtin re-bound under its own name
        raise _refuse(
            label,
            f"it uses the global {name!r}, a {_describe(value)}, which cannot be sent into the "
            "sandbox",
            "only standard-library modules, constants (numbers, strings, lists, tuples, dicts, "
            "sets, dates, Decimals, compiled regexes) and plain functions defined with def can "
            "be used from outside; pass data as the job's input, or define it inside the function",
        )

    def _import_from(self, name: str, module: str, value: Any, label: str) -> None:
        self._claim(name, value, label)
        attribute = value.__qualname__
        if attribute == name:
            self.imports[name] = f"from {module} import {attribute}\n"
        else:
            self.imports[name] = f"from {module} import {attribute} as {name}\n"

    def program(self, entry: str, name: str) -> GuestProgram:
        main = self.functions[entry]
        support = [
            *self.imports.values(),
            *self.constants.values(),
            *(source + "\n" for key, source in self.functions.items() if key != entry),
            *self.aliases.values(),
        ]
        # The function goes first, so the line numbers in guest tracebacks count from its def;
        # unless its def line itself (defaults) needs the support code defined before it.
        first = not (_def_line_names(main) & set(self.bound))
        parts = [main, "\n", *support] if first else [*support, main]
        return GuestProgram(source="".join(parts), entry=entry, name=name)


def _def_line_names(source: str) -> set[str]:
    """Names evaluated when ``source`` (one def or lambda assignment) runs, outside any body."""
    statement = ast.parse(source).body[0]
    # a lambda's defaults and body are all that there is
    node: ast.AST = statement.value if isinstance(statement, ast.Assign) else statement
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    arguments = node.args if isinstance(node, functions) else None
    expressions = [*arguments.defaults, *filter(None, arguments.kw_defaults)] if arguments else []
    return {n.id for e in expressions for n in ast.walk(e) if isinstance(n, ast.Name)}


def _importable_from(module: str, value: Any) -> bool:
    qualname = getattr(value, "__qualname__", "")
    if not qualname or "." in qualname or "<" in qualname:
        return False
    return getattr(sys.modules.get(module), qualname, None) is value


def _guest_origin(value: Any) -> str | None:
    """The guest module ``value`` can be imported from by name (math.sqrt, collections.Counter)."""
    module = getattr(value, "__module__", None)
    if not isinstance(module, str):
        return None
    # Builtin functions and classes report their C module (_operator, _collections...); the
    # public module re-exports them under the same name.
    for candidate in (module, module.lstrip("_")):
        if candidate in _GUEST_MODULE_SET and _importable_from(candidate, value):
            return candidate
    return None


def capture(fn: Callable[..., Any]) -> GuestProgram:
    """The guest program for ``fn``, or a UdfBuildError saying what stops it and what to do."""
    label = _label(fn)
    if inspect.ismethod(fn):
        raise _refuse(label, "it is a bound method", "use a plain function (def) instead")
    fn = inspect.unwrap(fn)
    if not isinstance(fn, types.FunctionType):
        raise _refuse(
            label,
            f"it is a {_describe(fn)}, not a Python function",
            "pass a function defined with def (or a lambda)",
        )
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
        raise _refuse(
            label, "it is a generator or async function", "return a list or a value instead"
        )
    assembler = _Assembler(label)
    entry = assembler.add_function(fn, None)
    name = fn.__name__ if fn.__name__ != "<lambda>" else "lambda"
    program = assembler.program(entry, name)
    try:
        compile(
            program.source,
            "<udf>",
            "exec",
            flags=__future__.annotations.compiler_flag,
            dont_inherit=True,
        )
    except SyntaxError as exc:  # pragma: no cover - each part was compiled already
        raise _refuse(
            label, f"its assembled source does not compile ({exc})", "report this"
        ) from None
    return program


def _library_stand_in(name: str, value: Any, fn: Any) -> bool:
    """True for a wrapper of the builtin of the same name (IPython puts a ``functools.wraps``
    wrapper of ``open`` in every notebook's namespace): the guest uses its real builtin."""
    builtin = vars(builtins).get(name)
    if builtin is None or value is builtin or not callable(value):
        return False
    try:
        return inspect.unwrap(value) is builtin
    except ValueError:  # a __wrapped__ cycle: not a plain wrapper
        return False
