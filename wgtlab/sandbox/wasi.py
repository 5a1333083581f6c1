"""The locked-down WASI preview 1 a kernel may import: no files, environment, arguments or sockets.

Every one of its 46 functions is defined here, in Python, and each call goes through one gate
(``_host``): a host call runs outside wasm, where neither fuel nor the epoch deadline reach it
(and the epoch ticker, a Python thread, cannot even run while a host call holds the GIL). So
each call pays fuel for the host's work (``WASI_CALL_FUEL`` plus ``WASI_BYTE_FUEL`` per byte it
makes or moves), checks the task's wall-clock deadline, and does at most ``WASI_MAX_CALL_BYTES``.
A call that finds the task over a limit does nothing, answers ECANCELED and empties the
task's fuel, so the guest traps at its next fuel check; ``task_stop`` then tells the runner
which limit ended the task (``proc_exit`` ends it the same way). The gate never raises:
wasmtime-py keeps an exception raised in a host function in one slot shared by all threads.

Only stdout and stderr lead anywhere: into per-task buffers capped at ``max_log_bytes``. The
clock and the entropy source are deterministic (see ``clock_time_get`` and ``random_get``): a
kernel's output may not depend on when or where it ran, or replicas on different workers would
disagree and honest workers would look like liars. Answers on the standard streams (fdstat,
filestat, seek) are those wasmtime's own WASI gave with this configuration. The linkers every
guest is instantiated through are built here too: ``core_linker`` (kernels) and
``component_linker`` (the Python runner, which imports nothing).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import _ffi as ffi

from wgtlab import defaults

if TYPE_CHECKING:
    from wasmtime import component as wc

    from wgtlab.sandbox.engine import SandboxEngine

__all__ = [
    "CLOCK_STEP_NS",
    "REALTIME_EPOCH_NS",
    "WASI_MODULE",
    "WASI_PREVIEW1_FUNCTIONS",
    "WASI_PREVIEW1_SIGNATURES",
    "CappedLog",
    "TaskLogs",
    "TaskStop",
    "begin_task",
    "component_linker",
    "core_linker",
    "set_task_wasi",
    "task_stop",
]

WASI_MODULE = "wasi_snapshot_preview1"

# Every function of WASI preview 1 (a frozen standard), as (parameters, results): "i" is an
# i32, "I" an i64. Importing one is allowed; none reaches a file, a socket or the environment.
_SIGNATURE_CODES = {
    "args_get": "ii",
    "args_sizes_get": "ii",
    "environ_get": "ii",
    "environ_sizes_get": "ii",
    "clock_res_get": "ii",
    "clock_time_get": "iIi",
    "fd_advise": "iIIi",
    "fd_allocate": "iII",
    "fd_close": "i",
    "fd_datasync": "i",
    "fd_fdstat_get": "ii",
    "fd_fdstat_set_flags": "ii",
    "fd_fdstat_set_rights": "iII",
    "fd_filestat_get": "ii",
    "fd_filestat_set_size": "iI",
    "fd_filestat_set_times": "iIIi",
    "fd_pread": "iiiIi",
    "fd_prestat_get": "ii",
    "fd_prestat_dir_name": "iii",
    "fd_pwrite": "iiiIi",
    "fd_read": "iiii",
    "fd_readdir": "iiiIi",
    "fd_renumber": "ii",
    "fd_seek": "iIii",
    "fd_sync": "i",
    "fd_tell": "ii",
    "fd_write": "iiii",
    "path_create_directory": "iii",
    "path_filestat_get": "iiiii",
    "path_filestat_set_times": "iiiiIIi",
    "path_link": "iiiiiii",
    "path_open": "iiiiiIIii",
    "path_readlink": "iiiiii",
    "path_remove_directory": "iii",
    "path_rename": "iiiiii",
    "path_symlink": "iiiii",
    "path_unlink_file": "iii",
    "poll_oneoff": "iiii",
    "proc_exit": "i",
    "proc_raise": "i",
    "sched_yield": "",
    "random_get": "ii",
    "sock_accept": "iii",
    "sock_recv": "iiiiii",
    "sock_send": "iiiii",
    "sock_shutdown": "ii",
}
_TYPE_NAMES = {"i": "i32", "I": "i64"}
# name -> "(i32, i32) -> (i32)", as module.ImportSpec prints a function's signature
WASI_PREVIEW1_SIGNATURES = {
    name: "({}) -> ({})".format(
        ", ".join(_TYPE_NAMES[c] for c in codes), "" if name == "proc_exit" else "i32"
    )
    for name, codes in _SIGNATURE_CODES.items()
}
WASI_PREVIEW1_FUNCTIONS = frozenset(_SIGNATURE_CODES)

# errno values of WASI preview 1
_OK, _EBADF, _ECANCELED, _EFAULT, _EINVAL, _EIO = 0, 8, 11, 21, 28, 29
_ENOTDIR, _ENOTSOCK, _ENOTSUP, _ESPIPE = 54, 57, 58, 70
_U32 = 0xFFFFFFFF


class CappedLog:
    """Collects what the guest writes to one stream, keeping at most ``cap`` bytes."""

    __slots__ = ("_buf", "_cap", "_lock", "truncated")

    def __init__(self, cap: int) -> None:
        self._buf = bytearray()
        self._cap = cap
        self._lock = threading.Lock()
        self.truncated = False

    def room(self) -> int:
        return max(self._cap - len(self._buf), 0)

    def write(self, data: bytes) -> int:
        # The guest is told everything was written, so a chatty kernel is not pushed into
        # retry loops.
        size = len(data)
        with self._lock:
            room = self._cap - len(self._buf)
            if size > room:
                self.truncated = True
                data = data[: max(room, 0)]
            self._buf += data
        return size

    def getvalue(self) -> bytes:
        with self._lock:
            return bytes(self._buf)


class TaskLogs:
    """A task's captured stdout and stderr."""

    __slots__ = ("stderr", "stdout")

    def __init__(self, cap: int) -> None:
        self.stdout = CappedLog(cap)
        self.stderr = CappedLog(cap)


class TaskStop:
    """Why a WASI call ended its task: ``"fuel"``, ``"time"`` or ``"exit"`` (with ``code``)."""

    __slots__ = ("code", "reason")

    def __init__(self, reason: str, code: int = 0) -> None:
        self.reason, self.code = reason, code

    def __repr__(self) -> str:
        return f"TaskStop({self.reason!r}, code={self.code})"


class _Task:
    """One task's WASI state: its deadline, streams, clock and entropy counters, and stop."""

    __slots__ = ("deadline", "draws", "fds", "logs", "readings", "stop")

    def __init__(self, logs: TaskLogs, deadline: float) -> None:
        self.logs = logs
        self.deadline = deadline  # time.monotonic() past which every call stops the task
        self.readings = 0  # clock readings so far
        self.draws = 0  # random_get calls so far
        # the standard streams (fd_close and fd_renumber change them); nothing else is open
        self.fds: dict[int, CappedLog | None] = {0: None, 1: logs.stdout, 2: logs.stderr}
        self.stop: TaskStop | None = None


# A Store runs on the thread that calls into it, so per-thread state is per-task state.
_current = threading.local()


def begin_task(logs: TaskLogs | None = None, deadline: float = math.inf) -> None:
    """Start this thread's next task from the same clock and entropy state as every task."""
    _current.task = _Task(logs or TaskLogs(defaults.MAX_LOG_BYTES), deadline)


def set_task_wasi(max_log_bytes: int, deadline: float = math.inf) -> TaskLogs:
    """Start this thread's next task (``deadline`` in ``time.monotonic()`` seconds); returns
    the buffers its stdout and stderr go to."""
    logs = TaskLogs(max_log_bytes)
    begin_task(logs, deadline)
    return logs


def task_stop() -> TaskStop | None:
    """The limit a WASI call of this thread's current task stopped it at, if any."""
    task: _Task | None = getattr(_current, "task", None)
    return task.stop if task is not None else None


def _task() -> _Task:
    task: _Task | None = getattr(_current, "task", None)
    if task is None:  # a call outside Sandbox.run (a test instantiating by hand)
        begin_task()
        task = _current.task
    return task


# --- fuel, the deadline and guest memory, from inside a host call ---------------------------------


def _get_fuel(caller: wasmtime.Caller) -> int:
    left = ctypes.c_uint64()
    if ffi.wasmtime_context_get_fuel(caller._context(), ctypes.byref(left)):
        return 0  # fuel is always on in our engines; treat an error as none left
    return left.value


def _set_fuel(caller: wasmtime.Caller, fuel: int) -> None:
    ffi.wasmtime_context_set_fuel(caller._context(), fuel)


def _stop(caller: wasmtime.Caller, task: _Task, stop: TaskStop) -> int:
    """End the task: no fuel left, so the guest traps at its next fuel check."""
    if task.stop is None:
        task.stop = stop
    _set_fuel(caller, 0)
    return _ECANCELED


def _charge(caller: wasmtime.Caller, task: _Task, fuel: int) -> bool:
    """Take ``fuel`` from the task, or stop it (False) if it has not that much left or its
    deadline has passed."""
    if task.stop is not None:
        _set_fuel(caller, 0)
        return False
    if time.monotonic() >= task.deadline:
        _stop(caller, task, TaskStop("time"))
        return False
    left = _get_fuel(caller)
    if left < fuel:
        _stop(caller, task, TaskStop("fuel"))
        return False
    _set_fuel(caller, left - fuel)
    return True


class _Memory:
    """The guest's linear memory during one host call, every access bounds-checked."""

    __slots__ = ("base", "size")

    def __init__(self, caller: wasmtime.Caller) -> None:
        memory = caller.get("memory")
        if isinstance(memory, wasmtime.Memory):
            self.size = memory.data_len(caller)
            self.base = ctypes.addressof(memory.data_ptr(caller).contents) if self.size else 0
        else:
            self.size = self.base = 0

    def fits(self, address: int, size: int) -> bool:
        return (address & _U32) + size <= self.size

    def read(self, address: int, size: int) -> bytes:
        return ctypes.string_at(self.base + (address & _U32), size)

    def write(self, address: int, data: bytes) -> None:
        ctypes.memmove(self.base + (address & _U32), data, len(data))


def _host(function: Callable[..., int | None]) -> Callable[..., int | None]:
    """The gate every WASI function goes through: the call fee, the deadline, no exceptions."""

    def call(caller: wasmtime.Caller, *args: int) -> int | None:
        task = _task()
        if not _charge(caller, task, defaults.WASI_CALL_FUEL):
            return None if function is _proc_exit else _ECANCELED
        try:
            return function(caller, task, *args)
        except Exception:  # a bug here must not cross wasmtime-py's shared exception slot
            return None if function is _proc_exit else _EIO

    call.__name__ = function.__name__
    return call


# --- the functions --------------------------------------------------------------------------------

REALTIME_EPOCH_NS = 946_684_800 * 10**9  # what the realtime clock starts at: 2000-01-01 UTC
CLOCK_STEP_NS = 1_000  # every reading of a clock is 1 us after the task's previous reading
_RANDOM_DOMAIN = b"wgtlab-wasi-random-v1:"
_CLOCKS = (0, 1, 2, 3)  # realtime, monotonic, process and thread CPU time
_RIGHT_FD_READ, _RIGHT_FD_WRITE = 0x02, 0x40


def _write_u32s(caller: wasmtime.Caller, *pairs: tuple[int, int]) -> int:
    """Write each (address, u32 value); EFAULT (nothing written) if one is out of bounds."""
    memory = _Memory(caller)
    if not all(memory.fits(address, 4) for address, _ in pairs):
        return _EFAULT
    for address, value in pairs:
        memory.write(address, struct.pack("<I", value & _U32))
    return _OK


def _no_arguments(caller: wasmtime.Caller, task: _Task, count_at: int, size_at: int) -> int:
    """args_sizes_get / environ_sizes_get: none, of total size 0."""
    return _write_u32s(caller, (count_at, 0), (size_at, 0))


def _nothing_to_copy(caller: wasmtime.Caller, task: _Task, _list: int, _buf: int) -> int:
    """args_get / environ_get: there is nothing to copy."""
    return _OK


def clock_res_get(caller: wasmtime.Caller, task: _Task, clock: int, out: int) -> int:
    if clock not in _CLOCKS:
        return _EINVAL
    memory = _Memory(caller)
    if not memory.fits(out, 8):
        return _EFAULT
    memory.write(out, CLOCK_STEP_NS.to_bytes(8, "little"))
    return _OK


def clock_time_get(
    caller: wasmtime.Caller, task: _Task, clock: int, _precision: int, out: int
) -> int:
    """Virtual time: the n-th reading in a task is n microseconds (after 2000-01-01 for the
    realtime clock), the same on every worker and every run."""
    if clock not in _CLOCKS:
        return _EINVAL
    memory = _Memory(caller)
    if not memory.fits(out, 8):
        return _EFAULT
    task.readings += 1
    now = task.readings * CLOCK_STEP_NS + (REALTIME_EPOCH_NS if clock == 0 else 0)
    memory.write(out, now.to_bytes(8, "little"))
    return _OK


def random_get(caller: wasmtime.Caller, task: _Task, buf: int, length: int) -> int:
    """Seeded "entropy": the n-th draw in a task is SHAKE-256 of a fixed label and n, so hash
    tables and shuffles come out the same on every replica (it is no secret: never a key).

    The buffer is checked against the guest's memory and the per-call cap before anything is
    made, and the draw is paid for in fuel first."""
    length &= _U32
    memory = _Memory(caller)
    if not memory.fits(buf, length):
        return _EFAULT
    if length > defaults.WASI_MAX_CALL_BYTES:
        return _EINVAL
    if not _charge(caller, task, length * defaults.WASI_BYTE_FUEL):
        return _ECANCELED
    task.draws += 1
    if length:
        label = _RANDOM_DOMAIN + str(task.draws).encode()
        memory.write(buf, hashlib.shake_256(label).digest(length))
    return _OK


def _iovecs(
    caller: wasmtime.Caller, task: _Task, iovs: int, count: int
) -> list[tuple[int, int]] | int:
    """The (address, length) pairs of a ciovec array, all inside memory; else an errno."""
    count &= _U32
    if count > defaults.WASI_MAX_IOVECS:
        return _EINVAL
    memory = _Memory(caller)
    if not memory.fits(iovs, 8 * count):
        return _EFAULT
    if not _charge(caller, task, 8 * count * defaults.WASI_BYTE_FUEL):
        return _ECANCELED
    raw = memory.read(iovs, 8 * count)
    pairs = [struct.unpack_from("<II", raw, 8 * i) for i in range(count)]
    if not all(memory.fits(address, length) for address, length in pairs):
        return _EFAULT
    return pairs


def fd_write(
    caller: wasmtime.Caller, task: _Task, fd: int, iovs: int, count: int, nwritten: int
) -> int:
    """To stdout or stderr: kept up to the log cap, at most WASI_MAX_CALL_BYTES a call (a short
    write, which callers loop on); only the bytes kept are copied and paid for."""
    if fd not in task.fds:
        return _EBADF
    log = task.fds[fd]
    if log is None:  # stdin
        return _EBADF
    pairs = _iovecs(caller, task, iovs, count)
    if isinstance(pairs, int):
        return pairs
    memory = _Memory(caller)
    if not memory.fits(nwritten, 4):
        return _EFAULT
    accepted = kept = 0
    for address, length in pairs:
        length = min(length, defaults.WASI_MAX_CALL_BYTES - accepted)
        keep = min(length, log.room())
        if keep:
            if not _charge(caller, task, keep * defaults.WASI_BYTE_FUEL):
                return _ECANCELED
            log.write(memory.read(address, keep))
            kept += keep
        if length > keep:
            log.truncated = True
        accepted += length
        if accepted >= defaults.WASI_MAX_CALL_BYTES:
            break
    memory.write(nwritten, struct.pack("<I", accepted))
    return _OK


def fd_read(
    caller: wasmtime.Caller, task: _Task, fd: int, iovs: int, count: int, nread: int
) -> int:
    """stdin is empty; nothing else is readable."""
    if fd not in task.fds or task.fds[fd] is not None:
        return _EBADF
    return _write_u32s(caller, (nread, 0))


def fd_close(caller: wasmtime.Caller, task: _Task, fd: int) -> int:
    if fd not in task.fds:
        return _EBADF
    del task.fds[fd]
    return _OK


def fd_renumber(caller: wasmtime.Caller, task: _Task, fd: int, to: int) -> int:
    if fd not in task.fds or to not in task.fds:
        return _EBADF
    task.fds[to] = task.fds.pop(fd)
    return _OK


def fd_fdstat_get(caller: wasmtime.Caller, task: _Task, fd: int, out: int) -> int:
    """A stream of unknown file type, no flags, readable (stdin) or writable (stdout, stderr)."""
    if fd not in task.fds:
        return _EBADF
    memory = _Memory(caller)
    if not memory.fits(out, 24):
        return _EFAULT
    rights = _RIGHT_FD_READ if task.fds[fd] is None else _RIGHT_FD_WRITE
    memory.write(out, b"\0")  # filetype: unknown (byte 1 is padding, left as it was)
    memory.write(out + 2, b"\0\0")  # flags
    memory.write(out + 8, struct.pack("<QQ", rights, rights))
    return _OK


def fd_filestat_get(caller: wasmtime.Caller, task: _Task, fd: int, out: int) -> int:
    """All zero: device, inode, file type (unknown), links, size and times."""
    if fd not in task.fds:
        return _EBADF
    memory = _Memory(caller)
    if not memory.fits(out, 64):
        return _EFAULT
    memory.write(out, bytes(17))  # dev, ino, filetype (bytes 17-23 are padding)
    memory.write(out + 24, bytes(40))  # nlink, size, atim, mtim, ctim
    return _OK


def _on_a_stream(answer: int) -> Callable[..., int]:
    """A call that answers ``answer`` on an open stream and EBADF on any other descriptor."""

    def call(caller: wasmtime.Caller, task: _Task, fd: int, *_args: int) -> int:
        return answer if fd in task.fds else _EBADF

    return call


def _fd_pread(caller: wasmtime.Caller, task: _Task, fd: int, *_args: int) -> int:
    return _ESPIPE if fd in task.fds and task.fds[fd] is None else _EBADF


def _fd_pwrite(caller: wasmtime.Caller, task: _Task, fd: int, *_args: int) -> int:
    return _ESPIPE if task.fds.get(fd) is not None else _EBADF


def _answer(errno: int) -> Callable[..., int]:
    def call(caller: wasmtime.Caller, task: _Task, *_args: int) -> int:
        return errno

    return call


def _proc_exit(caller: wasmtime.Caller, task: _Task, code: int) -> None:
    # The guest's next fuel check traps; the runner reports ProcessExit with this code.
    _stop(caller, task, TaskStop("exit", code & _U32))


# No preopened directory exists, so every path_* call and every call on a descriptor other than
# the standard streams is EBADF; the streams cannot seek, sync, allocate or be sockets.
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "args_get": _nothing_to_copy,
    "args_sizes_get": _no_arguments,
    "environ_get": _nothing_to_copy,
    "environ_sizes_get": _no_arguments,
    "clock_res_get": clock_res_get,
    "clock_time_get": clock_time_get,
    "fd_advise": _answer(_EBADF),
    "fd_allocate": _answer(_EBADF),
    "fd_close": fd_close,
    "fd_datasync": _answer(_EBADF),
    "fd_fdstat_get": fd_fdstat_get,
    "fd_fdstat_set_flags": _answer(_EBADF),
    "fd_fdstat_set_rights": _answer(_EBADF),
    "fd_filestat_get": fd_filestat_get,
    "fd_filestat_set_size": _answer(_EBADF),
    "fd_filestat_set_times": _answer(_EBADF),
    "fd_pread": _fd_pread,
    "fd_prestat_get": _answer(_EBADF),
    "fd_prestat_dir_name": _on_a_stream(_ENOTDIR),
    "fd_pwrite": _fd_pwrite,
    "fd_read": fd_read,
    "fd_readdir": _answer(_EBADF),
    "fd_renumber": fd_renumber,
    "fd_seek": _on_a_stream(_ESPIPE),
    "fd_sync": _answer(_EBADF),
    "fd_tell": _on_a_stream(_ESPIPE),
    "fd_write": fd_write,
    "path_create_directory": _answer(_EBADF),
    "path_filestat_get": _answer(_EBADF),
    "path_filestat_set_times": _answer(_EBADF),
    "path_link": _answer(_EBADF),
    "path_open": _answer(_EBADF),
    "path_readlink": _answer(_EBADF),
    "path_remove_directory": _answer(_EBADF),
    "path_rename": _answer(_EBADF),
    "path_symlink": _answer(_EBADF),
    "path_unlink_file": _answer(_EBADF),
    # poll_oneoff would sleep: kernels have no reason to wait for anything
    "poll_oneoff": _answer(_ENOTSUP),
    "proc_exit": _proc_exit,
    "proc_raise": _answer(_ENOTSUP),
    "sched_yield": _answer(_OK),
    "random_get": random_get,
    "sock_accept": _on_a_stream(_ENOTSOCK),
    "sock_recv": _on_a_stream(_ENOTSOCK),
    "sock_send": _on_a_stream(_ENOTSOCK),
    "sock_shutdown": _on_a_stream(_ENOTSOCK),
}
assert set(_FUNCTIONS) == WASI_PREVIEW1_FUNCTIONS


# --- the linkers guests are instantiated through --------------------------------------------------

_core_linkers: dict[str, wasmtime.Linker] = {}
_component_linkers: dict[int, wc.Linker] = {}
_linkers_lock = threading.Lock()


def _func_type(name: str) -> wasmtime.FuncType:
    types = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
    results = [] if name == "proc_exit" else [wasmtime.ValType.i32()]
    return wasmtime.FuncType([types[c] for c in _SIGNATURE_CODES[name]], results)


def core_linker(engine: SandboxEngine) -> wasmtime.Linker:
    """One linker per engine offering every WASI preview 1 function, all defined here."""
    linker = _core_linkers.get(engine.fingerprint)
    if linker is None:
        with _linkers_lock:
            linker = _core_linkers.get(engine.fingerprint)
            if linker is None:
                linker = wasmtime.Linker(engine.engine)
                for name, function in _FUNCTIONS.items():
                    linker.define_func(
                        WASI_MODULE,
                        name,
                        _func_type(name),
                        _host(function),
                        access_caller=True,
                    )
                _core_linkers[engine.fingerprint] = linker
    return linker


def component_linker(engine: SandboxEngine) -> wc.Linker:
    """One empty linker per engine for the Python runner component, which imports nothing at all
    (componentize-py --stub-wasi): it gets no WASI, so it can reach nothing outside itself."""
    linker = _component_linkers.get(id(engine))
    if linker is None:
        from wasmtime import component as wc  # only the Python runner needs it

        with _linkers_lock:
            linker = _component_linkers.setdefault(id(engine), wc.Linker(engine.engine))
    return linker
