# mypy: ignore-errors
# (Runs on the guest's CPython 3.14 against componentize-py's generated wit_world and patches the
# interpreter it runs in; the host's type check, for Python 3.10 without those modules, does not
# apply. tests/test_udf_*.py run it for real instead.)
"""Guest side of wgtlab's Python-in-WebAssembly runner: runs one analyst function on one chunk.

componentize-py snapshots this module after it has run at build time, so everything imported and
patched here is what every task starts from. Runs on the guest's CPython 3.14, never on the host.
"""

import builtins
import datetime
import gc
import importlib
import importlib.machinery
import io
import json
import linecache
import marshal
import os
import random
import sys
import time
import traceback
import types

import wit_world
from componentize_py_types import Err, Ok
from guest_modules import GUEST_MODULES
from udf_columns import decode_columns

# Present so that code trying them fails at the refusal below, not with a missing module; the
# host still rejects importing them by name (they are not in GUEST_MODULES).
_PRESENT_BUT_REFUSED = ("socket", "subprocess", "threading", "tempfile", "shutil", "glob")
# Imported lazily by the modules above; only modules imported now exist at run time.
_LAZY_IMPORTS = (
    "_strptime",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.cp1252",
    "encodings.utf_8_sig",
    "encodings.utf_16",
    "encodings.utf_16_le",
    "encodings.utf_16_be",
    "encodings.utf_32",
    "encodings.hex_codec",
    "encodings.base64_codec",
)
for _module in (*GUEST_MODULES, *_PRESENT_BUT_REFUSED, *_LAZY_IMPORTS):
    importlib.import_module(_module)

_MAX_MESSAGE_CHARS = 4000
_MAX_TYPE_CHARS = 300
_MAX_TRACEBACK_LINES = 120
_MAX_FRAMES = 12  # each costs ~1M fuel to format (source line, carets)
_RUNNER_FILE = __file__
_task_seed = 0
# The task's argument and result, kept until the instance is dropped: freeing a chunk's hundred
# thousand values one by one (a third of a typed-column chunk's fuel) buys nothing in an
# instance that is thrown away after this one call.
_kept: list = []


class _Capture:
    """A stdout / stderr that keeps the first ``limit`` characters written to it.

    Text that UTF-8 cannot encode (lone surrogates) is treated as CPython's own streams treat
    it: ``errors="strict"`` (stdout) raises UnicodeEncodeError at the write, so the function
    fails where it printed; ``errors="backslashreplace"`` (stderr) escapes it.
    """

    encoding = "utf-8"

    def __init__(self, limit: int, errors: str = "strict") -> None:
        self._parts: list[str] = []
        self._room = limit
        self.errors = errors

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        written = len(text)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                if self.errors == "strict":
                    raise
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if self._room > 0:
            kept = text[: self._room]
            self._parts.append(kept)
            self._room -= len(kept)
        return written

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return _utf8_text("".join(self._parts))


def _utf8_text(text: str) -> str:
    """``text`` as it can cross into the host (a WIT string is UTF-8): lone surrogates, which
    UTF-8 cannot encode, escaped as ``\\udc80``. Cheap for the usual ASCII text."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _check_result_text(text: str, name: str) -> None:
    """Refuse a result the host cannot receive: a WIT string is UTF-8, and a lone surrogate
    (half of a UTF-16 pair, e.g. from bytes decoded with errors="surrogateescape") is not."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnicodeEncodeError(
            exc.encoding,
            exc.object,
            exc.start,
            exc.end,
            f"the result of {name} (as JSON text) contains a lone surrogate, which UTF-8 cannot "
            "encode, so it is not text the host can receive: return valid strings (e.g. "
            "s.encode('utf-8', 'replace').decode() replaces lone surrogates)",
        ) from None


# --- results ---------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        # Sorted, so set order (which follows the runner's hash seed) never reaches the output.
        try:
            return sorted(value)
        except TypeError:
            return sorted(value, key=repr)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(
        f"the result contains a {type(value).__name__} ({value!r:.80}), which JSON cannot hold: "
        "return numbers, strings, booleans, None, lists, tuples, dicts, sets or dates "
        "(convert others with float(), str() or list() first)"
    )


def _json_key(key: object) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise TypeError(
        f"the result has a dict key of type {type(key).__name__} ({key!r:.80}); JSON keys must "
        "be str, int, float, bool or None: join the parts into a string, e.g. f'{a}|{b}'"
    )


def _string_keys(value: object) -> object:
    if isinstance(value, dict):
        return {_json_key(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_string_keys(v) for v in value]
    return value


# Built once: constructing an encoder costs more than encoding a small result.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
)


def _canonical_json(value: object) -> str:
    """One text per value: sorted keys, no spaces, so equal results are equal bytes."""
    try:
        return _ENCODER.encode(value)
    except TypeError as exc:
        # Mixed key types cannot be sorted as they are; JSON turns keys into strings anyway.
        if "not supported between instances" not in str(exc) and "keys must be" not in str(exc):
            raise
    return _ENCODER.encode(_string_keys(value))


def _encode_result(value: object, output_kind: str, name: str) -> str:
    if output_kind == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"{name} returned {type(value).__name__}; a bytes kernel must return bytes "
                "(encode text with .encode())"
            )
        return bytes(value).decode("latin-1")
    return _canonical_json(value)


# --- errors ----------------------------------------------------------------------------------


# Built-in exception classes by identity (taken at build time, before any function runs): a
# class of the function's own named MemoryError is not the interpreter's MemoryError.
_BUILTIN_EXCEPTIONS = {
    id(cls): (cls, name)
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__name__ == name
}
_UDF_MODULES = ("__wgt_udf__", "__main__", "builtins", "")


def _class_name(cls: type) -> str:
    """The name an exception class is reported under: a built-in class (by identity) by its
    bare name; any other class module-qualified, the function's own (defined in its source, or
    claiming to be built in) as ``__main__.<qualname>``, as Python names a notebook's classes."""
    builtin = _BUILTIN_EXCEPTIONS.get(id(cls))
    if builtin is not None and builtin[0] is cls:
        return builtin[1]
    try:
        module = type.__dict__["__module__"].__get__(cls)
        qualname = type.__dict__["__qualname__"].__get__(cls)
    except Exception:  # a class whose metaclass breaks even these
        module, qualname = "__main__", "<unnamed exception class>"
    if not isinstance(module, str) or module in _UDF_MODULES:
        module = "__main__"
    if not isinstance(qualname, str) or not qualname:
        qualname = "<unnamed exception class>"
    return _utf8_text(f"{module}.{qualname}")[:_MAX_TYPE_CHARS]


def _exc_type_name(exc: BaseException) -> str:
    return _class_name(type(exc))


def _without_runner_frames(te: traceback.TracebackException, seen: set) -> None:
    # The traceback shows the analyst's code and the library code it called, not the runner.
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    kept = [frame for frame in te.stack if frame.filename != _RUNNER_FILE]
    te.stack = traceback.StackSummary.from_list(kept)
    cls = getattr(te, "_exc_type", None)
    if isinstance(cls, type):
        # Each exception's last line names its class as exc_type does (a module of "builtins"
        # is not printed), so a class of the function's own never reads like a built-in one.
        te.exc_type_qualname = _class_name(cls)
        te.exc_type_module = "builtins"
    _without_runner_frames(te.__cause__, seen)
    _without_runner_frames(te.__context__, seen)
    for inner in te.exceptions or ():
        _without_runner_frames(inner, seen)


def _innermost(tb: types.TracebackType | None) -> types.TracebackType | None:
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    return (
        entries[-_MAX_FRAMES] if len(entries) > _MAX_FRAMES else (entries[0] if entries else None)
    )


def _failure(exc: BaseException, source: str, name: str) -> "wit_world.Failure":
    filename = f"<udf {name}>"
    # Registered so the traceback shows the analyst's lines (there is no file to read them from);
    # only now, as successful tasks never need it.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    if isinstance(exc, MemoryError):
        # Free the failed frames' locals first: they hold the memory formatting needs.
        traceback.clear_frames(exc.__traceback__)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the error itself
        message = f"<unprintable {type(exc).__name__}>"
    try:
        # Only the innermost frames: formatting a RecursionError's thousand frames would cost
        # more fuel than the task itself.
        report = traceback.TracebackException(
            type(exc), exc, _innermost(exc.__traceback__), compact=True
        )
        _without_runner_frames(report, set())
        text = "".join(report.format())
    except Exception:
        text = f"{_exc_type_name(exc)}: {message}"
    lines = _utf8_text(text).rstrip("\n").splitlines()
    if len(lines) > _MAX_TRACEBACK_LINES:
        half = _MAX_TRACEBACK_LINES // 2
        lines = [*lines[:half], f"... {len(lines) - 2 * half} lines omitted ...", *lines[-half:]]
    message = _utf8_text(message[: _MAX_MESSAGE_CHARS * 2])[:_MAX_MESSAGE_CHARS]
    return wit_world.Failure(_exc_type_name(exc), message, lines)


# --- the task --------------------------------------------------------------------------------


def _compiled(source: str, name: str) -> types.CodeType:
    return compile(source, f"<udf {name}>", "exec", dont_inherit=True)


def _run(
    source: str, code: str, name: str, seed: int, input_kind: str, output_kind: str, chunk: str
) -> str:
    global _task_seed
    _task_seed = seed
    if "random" in source:  # seeding costs ~0.1 ms; code that never names random cannot draw
        random.seed(seed)
    try:
        compiled = marshal.loads(code.encode("latin-1")) if code else _compiled(source, name)
    except (ValueError, EOFError, TypeError):  # not what compile() gave: compile afresh
        compiled = _compiled(source, name)
    namespace = {"__name__": "__wgt_udf__", "__builtins__": builtins}
    exec(compiled, namespace)
    function = namespace.get(name)
    if not callable(function):
        raise NameError(f"the source given to the runner defines no function named {name!r}")
    if input_kind == "bytes":
        argument = chunk.encode("latin-1")
    elif input_kind == "text":
        argument = chunk
    elif input_kind == "columns":
        argument = decode_columns(chunk.encode("latin-1"))
    else:
        argument = json.loads(chunk)
    _kept.append(argument)
    # The argument lives as long as the task: the collector need not rescan it, in the young
    # generation or later, however many containers the function makes.
    gc.freeze()
    result = function(argument)
    _kept.append(result)
    text = _encode_result(result, output_kind, name)
    if output_kind != "bytes":  # bytes travel as latin-1 text: always valid
        _check_result_text(text, name)
    return text


class WitWorld(wit_world.WitWorld):
    def compile(self, source: str, name: str) -> str:
        try:
            return marshal.dumps(_compiled(source, name)).decode("latin-1")
        except BaseException as exc:
            raise Err(_failure(exc, source, name)) from None

    def run(
        self,
        source: str,
        code: str,
        name: str,
        seed: int,
        input_kind: str,
        output_kind: str,
        chunk: str,
        log_limit: int,
    ) -> "wit_world.Outcome":
        stdout, stderr = _Capture(log_limit), _Capture(log_limit, "backslashreplace")
        sys.stdout = sys.__stdout__ = stdout
        sys.stderr = sys.__stderr__ = stderr
        try:
            value = Ok(_run(source, code, name, seed, input_kind, output_kind, chunk))
        except BaseException as exc:  # SystemExit too: every ending is reported, none escapes
            value = Err(_failure(exc, source, name))
        return wit_world.Outcome(value, stdout.getvalue(), stderr.getvalue())

    def modules(self) -> list[str]:
        return sorted(sys.modules)


# --- warm-up and lock-down (run once, at build time) -----------------------------------------

# One passing and one failing task, so lazily built state (strptime's regex cache, traceback
# machinery) is in the snapshot rather than missing at run time.
_WARM_UP = """
import datetime, re, statistics, collections
def warm(rows):
    datetime.datetime.strptime("2024-02-29 12:34:56", "%Y-%m-%d %H:%M:%S")
    datetime.date.fromisoformat("2024-02-29")
    re.findall(r"\\d+", "a1b22")
    collections.Counter(r["k"] for r in rows).most_common(1)
    print("warm", file=__import__("sys").stderr)
    return statistics.mean(r["v"] for r in rows) / 0
"""
_WARM_CODE = WitWorld().compile(_WARM_UP.replace(" / 0", ""), "warm")
WitWorld().run(_WARM_UP, "", "warm", 0, "json", "json", '[{"k": "a", "v": 1.5}]', 100)
WitWorld().run(_WARM_UP, _WARM_CODE, "warm", 0, "json", "json", '[{"k":"a","v":2}]', 10)
sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__ = _Capture(0), _Capture(0)
sys.stdin = sys.__stdin__ = io.StringIO("")


_SANDBOX_NOTE = (
    "inside the wgtlab sandbox: a @wgt.udf function sees only its chunk (no files, network, "
    "processes, threads, clock, entropy or environment)"
)


def _refuse(what: str) -> PermissionError:
    return PermissionError(f"{what} is not available {_SANDBOX_NOTE}")


# Audit events for operations the sandbox cannot serve become a clear PermissionError instead of
# reaching the (trapping) WASI stubs. The WebAssembly sandbox is the real boundary; this only
# turns a trap into an exception the analyst can read and catch.
_REFUSED_EVENTS = (
    "open",
    "os.",
    "shutil.",
    "socket.",
    "subprocess.",
    "ctypes.",
    "_thread.",
    "glob.",
    "tempfile.",
    "sqlite3.",
    "urllib.Request",
    "http.",
    "ftplib.",
    "smtplib.",
    "webbrowser.",
    "pty.",
    "fcntl.",
    "mmap.",
    "resource.",
    "signal.",
    "time.sleep",
)


def _audit(event: str, args: tuple) -> None:
    if event.startswith(_REFUSED_EVENTS):
        raise _refuse(f"{event}{args!r:.60}")


def _no_clock(label: str):
    def refused(*args, **kwargs):
        raise _refuse(f"{label} (the clock)")

    refused.__name__ = label.rpartition(".")[2].rstrip("()")
    return refused


def _needs_time_argument(function, label: str, arity: int):
    # localtime(secs) and friends are pure arithmetic; without secs they read the clock.
    def guarded(*args):
        if len(args) < arity:
            raise _refuse(f"{label} without an explicit time (the clock)")
        return function(*args)

    guarded.__name__ = function.__name__
    return guarded


for _name in (
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "process_time",
    "process_time_ns",
    "thread_time",
    "thread_time_ns",
    "clock_gettime",
    "clock_gettime_ns",
    "sleep",
):
    if hasattr(time, _name):
        setattr(time, _name, _no_clock(f"time.{_name}()"))
for _name, _arity in (("localtime", 1), ("gmtime", 1), ("ctime", 1), ("asctime", 1)):
    setattr(time, _name, _needs_time_argument(getattr(time, _name), f"time.{_name}()", _arity))
time.strftime = _needs_time_argument(time.strftime, "time.strftime()", 2)


def _no_entropy(*args, **kwargs):
    raise _refuse("os.urandom() (entropy; use the random module, seeded per task)")


os.urandom = _no_entropy
random._urandom = _no_entropy  # SystemRandom and secrets read through this name
_seed = random.Random.seed


def _task_seeded(self, a=None, version=2):
    # Unseeded generators take the task's seed: replicas of a chunk draw the same numbers.
    _seed(self, _task_seed if a is None else a, version)


random.Random.seed = _task_seeded
random.seed = random._inst.seed
os.environ.clear()
# Nothing new can be imported from a filesystem that is not there: stop looking for one.
sys.meta_path[:] = [
    finder for finder in sys.meta_path if finder is not importlib.machinery.PathFinder
]
sys.path_hooks.clear()
sys.path_importer_cache.clear()
sys.path[:] = []
# Tracebacks read source only from linecache's entries; stat-ing files would trap.
linecache.updatecache = lambda filename, module_globals=None: []
linecache.checkcache = lambda filename=None: None
linecache.lazycache = lambda filename, module_globals: False
sys.addaudithook(_audit)


# Everything made by now lasts as long as the instance: frozen, it is never scanned by a task's
# collections.
gc.collect()
gc.freeze()
