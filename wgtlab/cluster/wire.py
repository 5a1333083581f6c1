"""The wire format between a client and its remote workers: plain msgpack values, never pickles.

A task travels as a header (ids, code digest, limits) plus the payload bytes; a reply as one
msgpack map whose fields are ``WorkerReply``'s (less ``worker``: the client says who answered),
or a map saying the worker crashed or refused. Installing code is answered by an acknowledgement
or a refusal. Everything a worker sends is untrusted: every field is type-checked here, and a
refusal becomes one of a short list of error types, whatever class the worker names.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from wgtlab.cluster.task import Task, WorkerReply
from wgtlab.errors import (
    AbiError,
    ClusterError,
    ConfigError,
    ForbiddenImport,
    InvalidModule,
    UdfBuildError,
    WgtError,
)
from wgtlab.sandbox.kernels.base import Kernel
from wgtlab.sandbox.limits import ResourceLimits

__all__ = [
    "REFUSALS",
    "RemoteTaskError",
    "TaskHeader",
    "crash_to_wire",
    "refusal_from_wire",
    "refusal_to_wire",
    "reply_from_wire",
    "reply_to_wire",
    "task_from_wire",
    "task_to_wire",
]

#: what a worker may say it refused code with; any other name arrives as a ClusterError
REFUSALS: Mapping[str, type[WgtError]] = {
    cls.__name__: cls
    for cls in (InvalidModule, ForbiddenImport, AbiError, UdfBuildError, ConfigError, ClusterError)
}

TaskHeader = dict[str, Any]  # msgpack map: job_id, task_id, chunk, replica, digest, limits


class RemoteTaskError(ClusterError):
    """A remote worker's answer could not be accepted (crashed, refused, malformed); what it
    said was not unpickled."""


def _pack(values: Mapping[str, Any]) -> bytes:
    # One msgpack blob, not a dict for Dask to serialize field by field (7x the cost per task).
    return msgpack.packb(values, use_bin_type=True)


# --- tasks ---------------------------------------------------------------------------------------


def task_to_wire(task: Task, code_digest: str) -> TaskHeader:
    """The plain header of ``task`` (its payload travels beside it, its code by digest)."""
    return {
        "job_id": task.job_id,
        "task_id": task.task_id,
        "chunk": task.chunk,
        "replica": task.replica,
        "digest": code_digest,
        "limits": task.limits.to_dict(),
    }


def task_from_wire(header: Mapping[str, Any], payload: bytes, kernel: Kernel) -> Task:
    """The task a header describes, running ``kernel`` (installed earlier by its digest)."""
    return Task(
        job_id=str(header["job_id"]),
        task_id=int(header["task_id"]),
        chunk=int(header["chunk"]),
        replica=int(header["replica"]),
        kernel=kernel,
        payload=payload,
        limits=ResourceLimits(**header["limits"]),
    )


# --- replies -------------------------------------------------------------------------------------


def _checker(hint: object) -> Callable[[object], bool]:
    if hint is bool:
        return lambda v: isinstance(v, bool)
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint in (str, bytes):
        return lambda v: isinstance(v, hint)
    options = typing.get_args(hint)
    if type(None) in options and len(options) == 2:
        inner = _checker(next(o for o in options if o is not type(None)))
        return lambda v: v is None or inner(v)
    raise TypeError(f"no wire check for {hint!r}")  # a new WorkerReply field needs one


@functools.cache
def _reply_fields() -> tuple[tuple[str, object, Callable[[object], bool]], ...]:
    """(name, type, check) of every field a worker sends: all of WorkerReply's but ``worker``."""
    hints = typing.get_type_hints(WorkerReply)
    return tuple(
        (f.name, hints[f.name], _checker(hints[f.name]))
        for f in dataclasses.fields(WorkerReply)
        if f.name != "worker"
    )


def _expected(hint: object) -> str:
    names: dict[object, str] = {int: "an int", float: "a number", str: "a str", bytes: "bytes"}
    if hint in names:
        return names[hint]
    return " or ".join("None" if o is type(None) else names[o] for o in typing.get_args(hint))


def reply_to_wire(reply: WorkerReply) -> bytes:
    """A reply as msgpack of plain values (the worker's name is the client's to say)."""
    return _pack({name: getattr(reply, name) for name, _, _ in _reply_fields()})


def crash_to_wire(why: str) -> bytes:
    """This worker failed the task (not an outcome of the chunk): the client reruns it."""
    return _pack({"crashed": why[:500]})


def refused_to_wire(why: str) -> bytes:
    """This worker would not run the task (e.g. its code is not installed)."""
    return _pack({"refused": why[:500]})


def reply_from_wire(blob: object, worker: str, task: Task) -> WorkerReply:
    """A worker's msgpack blob -> a WorkerReply, every field type-checked (the manager then
    checks what they say: assignment, digest, signature). RemoteTaskError if anything is off."""
    if not isinstance(blob, bytes):
        raise RemoteTaskError(f"worker {worker} answered with a {type(blob).__name__}, not bytes")
    limit = task.limits.max_output_bytes + 2 * task.limits.max_log_bytes + (1 << 16)
    if len(blob) > limit:
        raise RemoteTaskError(f"worker {worker} answered with {len(blob):,} bytes, over the caps")
    try:
        wire = msgpack.unpackb(blob, raw=False, strict_map_key=True, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteTaskError(f"worker {worker} answered with malformed msgpack: {exc}") from None
    if not isinstance(wire, Mapping):
        raise RemoteTaskError(f"worker {worker} answered with a {type(wire).__name__}, not a reply")
    for problem in ("crashed", "refused"):
        if problem in wire:
            raise RemoteTaskError(f"worker {worker} {problem}: {str(wire[problem])[:500]}")
    values: dict[str, Any] = {}
    for name, hint, check in _reply_fields():
        value: Any = wire.get(name)
        if not check(value):
            raise RemoteTaskError(
                f"malformed reply from worker {worker}: {name} is a {type(value).__name__}, "
                f"expected {_expected(hint)}"
            )
        values[name] = float(value) if hint is float else value
    return WorkerReply(worker=worker, **values)


# --- installing code -----------------------------------------------------------------------------


def refusal_to_wire(exc: WgtError) -> dict[str, Any]:
    """A worker's answer that it refused code: the error's type name and message."""
    return {"ok": False, "error": type(exc).__name__, "message": str(exc)[:1000]}


def refusal_from_wire(answer: object, worker: str) -> WgtError:
    """The typed error for a worker's refusal: one of ``REFUSALS`` by name, else ClusterError.
    The message is the worker's (cut to 1,000 characters), introduced as such."""
    name = answer.get("error") if isinstance(answer, Mapping) else None
    message = answer.get("message") if isinstance(answer, Mapping) else None
    cls = REFUSALS.get(name, ClusterError) if isinstance(name, str) else ClusterError
    return cls(f"worker {worker} refused the code: {str(message)[:1000]}")
