"""The processes behind ``DaskCluster.local``: a scheduler and sandboxed workers on loopback.

They are started with the same ``wgtlab scheduler`` / ``wgtlab worker`` commands as on several
machines, so the notebook's process never runs the scheduler (which decodes workers' messages).

They never outlive the process that started them (their *owner*), however it ends: ``close()``,
a normal exit without it, ``os._exit``, a crash or SIGKILL.

- Each child is tied to its owner (``tie_to_owner``, run first thing in the child): on Linux a
  parent-death signal (SIGKILL), and on every system a thread that watches its parent pid and
  kills the child's process group (the child leads one: it runs in a session of its own, so
  whatever it starts goes with it) once the owner is gone.
- A reaper process, started before any child, waits on a pipe only the owner writes to; when the
  owner ends, the pipe closes, and the reaper kills every child (by pidfd: exactly those
  processes) and anything left in their sessions, waits until they are gone, and removes the
  working directory (member keys, worker signing keys, logs).
- The CA's private key never reaches the disk (``certs.init_local_certs``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import wgtlab
from wgtlab import defaults
from wgtlab.errors import ClusterError

if TYPE_CHECKING:
    from wgtlab.cluster.certs import CertBundle

__all__ = ["LoopbackProcesses", "tie_to_owner"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_INTERVAL_S = 0.25  # how often a child and the reaper look at their parent pid
_REAP_WAIT_S = 10.0  # how long the reaper waits for the children to be gone


def _environment() -> dict[str, str]:
    # The children import this very wgtlab, installed or not.
    root = str(Path(wgtlab.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


# --- the owner's side ----------------------------------------------------------------------------


class _Spawner:
    """Starts processes from one thread that lives as long as this process does.

    Linux sends a child its parent-death signal when the *thread* that forked it ends, not the
    process; ``DaskCluster.local`` may be called from a short-lived thread, whose end must not
    take the cluster with it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._requests: queue.SimpleQueue[tuple[Future[Any], list[str], dict[str, Any]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._serve, name="wgtlab-dask-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, argv, options = self._requests.get()
            try:
                future.set_result(subprocess.Popen(argv, **options))
            except BaseException as exc:
                future.set_exception(exc)

    def popen(self, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        future: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((future, argv, options))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _popen(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():  # none yet, or we are a fork
            _spawner = _Spawner()
        spawner = _spawner
    return spawner.popen(argv, **options)


class LoopbackProcesses:
    """A scheduler and ``n_workers`` workers, each a ``wgtlab`` process, logging to
    ``workdir/NAME.log``; ``stop()`` ends them all (SIGTERM, then SIGKILL) and removes
    ``workdir``. If this process ends without ``stop()``, they end with it all the same, and a
    reaper removes ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.address: str | None = None
        self.reaper: subprocess.Popen[bytes] | None = None

    def _start_reaper(self) -> None:
        self.reaper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wgtlab.cluster.dask_local",
                "--owner",
                str(os.getpid()),
                str(self.workdir),
            ],
            env=_environment(),
            stdin=subprocess.PIPE,  # the lifeline: only this process holds its other end
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a signal to this process's group does not reach it
        )

    def _start(self, name: str, arguments: list[str]) -> None:
        if self.reaper is None:
            self._start_reaper()
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (kept by the child)
        with log:
            process = self.processes[name] = _popen(
                [sys.executable, "-m", "wgtlab.cli", *arguments, "--owner", str(os.getpid())],
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # leads its own process group, reaped as one
            )
        self._tell_reaper(f"{process.pid}\n")

    def _tell_reaper(self, line: str) -> None:
        stdin: IO[bytes] | None = self.reaper.stdin if self.reaper is not None else None
        if stdin is None:
            return
        try:
            stdin.write(line.encode())
            stdin.flush()
        except OSError as exc:  # the reaper is gone: the children still die with us
            raise ClusterError(
                f"the local Dask cluster's reaper process has ended ({exc})"
            ) from None

    def log_tail(self, name: str, lines: int = 12) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start(
        self,
        n_workers: int,
        bundles: dict[str, CertBundle] | None,
        *,
        threads_per_worker: int,
        identity_dir: Path,
        dashboard: bool,
    ) -> str:
        """Start everything; return the scheduler's address once it listens."""
        scheduler_file = self.workdir / "scheduler.json"
        tls = ["--certs", str(bundles["scheduler"].cert_file.parent)] if bundles else []
        self._start(
            "scheduler",
            [
                "scheduler",
                *(tls or ["--insecure-loopback"]),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(scheduler_file),
                *(["--dashboard-address", "127.0.0.1:0"] if dashboard else []),
            ],
        )
        deadline = time.monotonic() + defaults.DASK_CONNECT_TIMEOUT_S
        while self.address is None:
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                if self.processes["scheduler"].poll() is not None or time.monotonic() > deadline:
                    raise ClusterError(
                        "the local Dask scheduler did not start:\n" + self.log_tail("scheduler")
                    ) from None
                time.sleep(0.05)
        for i in range(n_workers):
            name = f"dask-{i}"
            tls = ["--certs", str(bundles[f"worker-{i}"].cert_file.parent)] if bundles else []
            self._start(
                name,
                [
                    "worker",
                    "--scheduler",
                    self.address,
                    *(tls or ["--insecure-loopback"]),
                    "--name",
                    name,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    str(threads_per_worker),
                    "--identity-dir",
                    str(identity_dir),
                ],
            )
        return self.address

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}

    def stop(self) -> None:
        # Workers first, so the scheduler does not reschedule around them while going down.
        ordered = sorted(self.processes.items(), key=lambda item: item[0] == "scheduler")
        for _, process in ordered:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for _, process in ordered:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.reaper is not None:
            # Closing the lifeline is what the reaper waits for: it checks that nothing is left
            # and removes the working directory.
            if self.reaper.stdin is not None:
                self.reaper.stdin.close()
            try:
                self.reaper.wait(_REAP_WAIT_S + 5)
            except subprocess.TimeoutExpired:
                self.reaper.kill()
                self.reaper.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- the children's side -------------------------------------------------------------------------


def tie_to_owner(owner: int) -> None:
    """Make this process (started by ``LoopbackProcesses``) end as soon as ``owner``, its
    parent, does: a parent-death signal on Linux, and a thread watching the parent pid (on
    every system) that kills this process and its process group."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != owner:  # it died before the signal was set up
        _die()
    threading.Thread(
        target=_watch_owner, args=(owner,), name="wgtlab-owner-watch", daemon=True
    ).start()


def _watch_owner(owner: int) -> None:
    while os.getppid() == owner:
        time.sleep(_WATCH_INTERVAL_S)
    _die()


def _die() -> None:
    if os.getpgid(0) == os.getpid():  # we lead our group (start_new_session): take it along
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


# --- the reaper ----------------------------------------------------------------------------------


class _Child:
    """A process the owner started, held by pidfd where there are pidfds: signals reach exactly
    that process, never a later one that reuses its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:  # already gone (and reaped)
                self.pidfd = -1

    def kill(self) -> None:
        with contextlib.suppress(OSError):  # gone already
            if self.pidfd is None:
                os.kill(self.pid, signal.SIGKILL)
            elif self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def exited(self) -> bool:
        if self.pidfd is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except OSError:
                return False
            return False
        if self.pidfd < 0:
            return True
        return bool(select.select([self.pidfd], [], [], 0)[0])  # readable once it has exited


def _in_sessions(sessions: set[int]) -> list[int]:
    """Live processes in these sessions (on Linux; elsewhere none are found)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(entry))
    return found


def _reap(owner: int, workdir: Path) -> None:
    """Wait for ``owner`` to end (or to close the cluster), then kill what it started, wait
    until it is gone, and remove ``workdir``. Reads one child pid per line on stdin."""
    children: list[_Child] = []
    pending = b""
    while True:
        ready = select.select([sys.stdin.fileno()], [], [], _WATCH_INTERVAL_S)[0]
        if os.getppid() != owner:  # it ended, though a fork of it may hold the lifeline
            break
        if not ready:
            continue
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:  # the owner closed the cluster, or ended
            break
        *lines, pending = (pending + data).split(b"\n")
        children.extend(_Child(int(line)) for line in lines if line.strip())
    sessions = {child.pid for child in children}
    deadline = time.monotonic() + _REAP_WAIT_S
    while True:
        for child in children:
            child.kill()
        left = _in_sessions(sessions)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if (all(child.exited() for child in children) and not left) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    shutil.rmtree(workdir, ignore_errors=True)


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "--owner":
        print("usage: python -m wgtlab.cluster.dask_local --owner PID WORKDIR", file=sys.stderr)
        return 2
    _reap(int(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
