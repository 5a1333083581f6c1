"""The processes behind ``DaskCluster.local``: a scheduler and sandboxed workers on loopback.

They are started with the same ``wgtlab scheduler`` / ``wgtlab worker`` commands as on several
machines, so the notebook's process never runs the scheduler (which decodes workers' messages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import wgtlab
from wgtlab import defaults
from wgtlab.cluster.certs import CertBundle
from wgtlab.errors import ClusterError

__all__ = ["LoopbackProcesses"]


def _environment() -> dict[str, str]:
    # The children import this very wgtlab, installed or not.
    root = str(Path(wgtlab.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


class LoopbackProcesses:
    """A scheduler and ``n_workers`` workers, each a ``wgtlab`` process, logging to
    ``workdir/NAME.log``; ``stop()`` ends them all (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.address: str | None = None

    def _start(self, name: str, arguments: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (kept by the child)
        with log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "wgtlab.cli", *arguments],
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

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
