"""The locked-down WASI preview 1 a kernel may import: no files, environment, arguments or sockets.

Only stdout and stderr lead anywhere: into per-task buffers capped at ``max_log_bytes``. The
clock and the entropy source are deterministic (see ``clock_time_get`` and ``random_get``
below): a kernel's output may not depend on when or where it ran, or replicas on different
workers would disagree and honest workers would look like liars. The linkers every guest is
instantiated through are built here too: ``core_linker`` (kernels) and ``component_linker``
(the Python runner, which imports nothing).
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

import wasmtime

if TYPE_CHECKING:
    from wasmtime import component as wc

    from wgtlab.sandbox.engine import SandboxEngine

__all__ = [
    "CLOCK_STEP_NS",
    "REALTIME_EPOCH_NS",
    "WASI_MODULE",
    "WASI_PREVIEW1_FUNCTIONS",
    "CappedLog",
    "TaskLogs",
    "begin_task",
    "clock_time_get",
    "component_linker",
    "core_linker",
    "random_get",
    "set_task_wasi",
    "wasi_config",
]

WASI_MODULE = "wasi_snapshot_preview1"

# Every function of WASI preview 1 (a frozen standard). Importing one is allowed; what it can
# reach is decided by the WasiConfig below: no preopened directory means path_open and friends
# fail with EBADF, and preview 1 has no call that creates a socket.
WASI_PREVIEW1_FUNCTIONS = frozenset(
    """
    args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get
    fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags
    fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread
    fd_prestat_get fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek fd_sync
    fd_tell fd_write path_create_directory path_filestat_get path_filestat_set_times path_link
    path_open path_readlink path_remove_directory path_rename path_symlink path_unlink_file
    poll_oneoff proc_exit proc_raise sched_yield random_get sock_accept sock_recv sock_send
    sock_shutdown
    """.split()  # noqa: SIM905  (a readable block of names)
)


class CappedLog:
    """Collects what the guest writes to one stream, keeping at most ``cap`` bytes."""

    __slots__ = ("_buf", "_cap", "_lock", "truncated")

    def __init__(self, cap: int) -> None:
        self._buf = bytearray()
        self._cap = cap
        self._lock = threading.Lock()
        self.truncated = False

    def write(self, data: bytes) -> int:
        # Called by wasmtime from inside the guest's fd_write; must never raise. The guest is
        # told everything was written, so a chatty kernel is not pushed into retry loops.
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


def wasi_config(logs: TaskLogs) -> wasmtime.WasiConfig:
    """A WasiConfig with nothing in it but stdout/stderr going to ``logs`` (stdin is empty)."""
    config = wasmtime.WasiConfig()
    config.stdout_custom = logs.stdout.write
    config.stderr_custom = logs.stderr.write
    return config


def set_task_wasi(store: wasmtime.Store, max_log_bytes: int) -> TaskLogs:
    """Give ``store`` (one task's) an empty WASI and a fresh clock and entropy state; returns
    the buffers its stdout and stderr go to."""
    logs = TaskLogs(max_log_bytes)
    store.set_wasi(wasi_config(logs))
    begin_task()
    return logs


# --- a deterministic clock and entropy source -------------------------------------------------

REALTIME_EPOCH_NS = 946_684_800 * 10**9  # what the realtime clock starts at: 2000-01-01 UTC
CLOCK_STEP_NS = 1_000  # every reading of a clock is 1 us after the task's previous reading
_RANDOM_DOMAIN = b"wgtlab-wasi-random-v1:"
_ERRNO_FAULT, _ERRNO_INVAL, _ERRNO_NOTSUP = 21, 28, 58
_U32 = 0xFFFFFFFF
_CLOCKS = (0, 1, 2, 3)  # realtime, monotonic, process and thread CPU time

# A Store runs on the thread that calls into it, so per-thread state is per-task state.
_task = threading.local()


def begin_task() -> None:
    """Start this thread's next task from the same clock and entropy state as every task."""
    _task.readings = 0
    _task.draws = 0


def clock_time_get(caller: wasmtime.Caller, clock: int, _precision: int, out: int) -> int:
    """Virtual time: the n-th reading in a task is n microseconds (after 2000-01-01 for the
    realtime clock), the same on every worker and every run."""
    if clock not in _CLOCKS:
        return _ERRNO_INVAL
    memory = _guest_memory(caller, out, 8)
    if memory is None:
        return _ERRNO_FAULT
    readings = getattr(_task, "readings", 0) + 1
    _task.readings = readings
    now = readings * CLOCK_STEP_NS + (REALTIME_EPOCH_NS if clock == 0 else 0)
    memory.write(caller, now.to_bytes(8, "little"), out & _U32)
    return 0


def random_get(caller: wasmtime.Caller, buf: int, length: int) -> int:
    """Seeded "entropy": the n-th draw in a task is SHAKE-256 of a fixed label and n, so hash
    tables and shuffles come out the same on every replica (it is no secret: never a key).

    The buffer is checked against the guest's memory before anything is made, so a draw costs
    the host no more than the memory the limits already allow the guest."""
    length &= _U32
    memory = _guest_memory(caller, buf, length)
    if memory is None:
        return _ERRNO_FAULT
    draws = getattr(_task, "draws", 0) + 1
    _task.draws = draws
    if length:
        label = _RANDOM_DOMAIN + str(draws).encode()
        memory.write(caller, hashlib.shake_256(label).digest(length), buf & _U32)
    return 0


def _guest_memory(caller: wasmtime.Caller, address: int, size: int) -> wasmtime.Memory | None:
    """The guest's memory if ``size`` bytes at ``address`` (a u32) lie inside it, else None."""
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return None
    if (address & _U32) + size > memory.data_len(caller):
        return None
    return memory


def _poll_oneoff_refused(_in: int, _out: int, _count: int, _events: int) -> int:
    return _ERRNO_NOTSUP


# --- the linkers guests are instantiated through ------------------------------------------------

_core_linkers: dict[str, wasmtime.Linker] = {}
_component_linkers: dict[int, wc.Linker] = {}
_linkers_lock = threading.Lock()


def core_linker(engine: SandboxEngine) -> wasmtime.Linker:
    """One linker per engine offering WASI preview 1; each task's Store supplies its WasiConfig."""
    linker = _core_linkers.get(engine.fingerprint)
    if linker is None:
        with _linkers_lock:
            linker = _core_linkers.get(engine.fingerprint)
            if linker is None:
                linker = wasmtime.Linker(engine.engine)
                linker.define_wasi()
                # poll_oneoff can sleep in the host, where neither fuel nor the epoch deadline
                # reaches: a kernel could hold a worker thread for ever. Kernels have no reason
                # to wait for anything, so it answers ENOTSUP.
                linker.allow_shadowing = True
                i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
                linker.define_func(
                    WASI_MODULE,
                    "poll_oneoff",
                    wasmtime.FuncType([i32, i32, i32, i32], [i32]),
                    _poll_oneoff_refused,
                )
                # Time and entropy are deterministic, so replicas of a task agree (see above).
                linker.define_func(
                    WASI_MODULE,
                    "clock_time_get",
                    wasmtime.FuncType([i32, i64, i32], [i32]),
                    clock_time_get,
                    access_caller=True,
                )
                linker.define_func(
                    WASI_MODULE,
                    "random_get",
                    wasmtime.FuncType([i32, i32], [i32]),
                    random_get,
                    access_caller=True,
                )
                linker.allow_shadowing = False
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
