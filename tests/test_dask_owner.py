"""The processes of ``DaskCluster.local`` die with the process that started them (their owner),
whatever ends it (a normal exit without ``close()``, ``os._exit``, SIGKILL), within a fraction
of a second, and take their key material with them; the CA's private key never reaches the
disk. Real processes, real certificates, on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

REPO = Path(__file__).resolve().parents[1]
GONE_WITHIN_S = 15.0

# --- the owner, its children, their working directory -----------------------------------------

OWNER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import wgtlab as wgt

    how = sys.argv[1]
    if how == "thread-then-SIGKILL":
        # started from a thread that ends at once: the cluster must outlive that thread
        box = {}
        starter = threading.Thread(target=lambda: box.update(c=wgt.DaskCluster.local(2)))
        starter.start()
        starter.join()
        cluster = box["c"]
    else:
        cluster = wgt.DaskCluster.local(2)
    info = {
        "workdir": str(cluster.processes.workdir),
        "address": cluster.address,
        "workers": cluster.worker_names(),
    }
    print(json.dumps(info), flush=True)
    if how == "thread-then-SIGKILL":
        time.sleep(2)
        print(json.dumps({"workers": cluster.worker_names()}), flush=True)
    sys.stdin.readline()  # the test has looked at everything
    if how == "exit":
        sys.exit(0)  # a normal exit, without close()
    if how == "os._exit":
        os._exit(0)
    time.sleep(600)  # killed by the test
    """
)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid``, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root``: pid -> start time."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[0]
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found and (stat := _stat(pid)) is not None:
                found[pid] = stat[2]
                frontier.append(pid)
    return found


def _alive(pid: int, started: int) -> bool:
    """Whether that very process still runs (a zombie has freed everything but its pid)."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == started


def _listening(address: str) -> bool:
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _line(process: subprocess.Popen[str], timeout: float) -> dict:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the owner printed nothing in time"
    line = process.stdout.readline()
    assert line, "the owner ended before printing"
    return json.loads(line)


def _ca_private_keys_on_disk(workdir: Path) -> list[Path]:
    """Files under ``workdir`` holding the private key of the cluster CA."""

    def spki(key) -> bytes:
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    cas = {
        spki(x509.load_pem_x509_certificate(p.read_bytes()).public_key())
        for p in workdir.rglob("ca.pem")
    }
    assert cas, f"no CA certificate under {workdir}"
    found = []
    for path in workdir.rglob("*"):
        if not path.is_file() or b"PRIVATE KEY" not in path.read_bytes():
            continue
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if spki(key.public_key()) in cas:
            found.append(path)
    return found


@pytest.mark.parametrize("how", ["exit", "os._exit", "SIGKILL", "thread-then-SIGKILL"])
def test_dask_processes_and_keys_do_not_outlive_their_owner(how, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "WGTLAB_CACHE_DIR": str(tmp_path / "cache"),
    }
    with open(tmp_path / "owner.err", "w") as err:
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, how], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    below: dict[int, int] = {}
    workdir = None
    try:
        info = _line(owner, 90)
        workdir = Path(info["workdir"])
        assert info["workers"] == ["dask-0", "dask-1"]
        below = _descendants(owner.pid)
        assert len(below) >= 3  # a scheduler and two workers, at least
        assert _listening(info["address"])
        ca_keys = _ca_private_keys_on_disk(workdir)
        if how == "thread-then-SIGKILL":
            # the thread that started the cluster is gone; the cluster is not
            assert _line(owner, 30)["workers"] == ["dask-0", "dask-1"]
            assert all(_alive(pid, started) for pid, started in below.items())
        triggered = time.monotonic()
        if how in ("SIGKILL", "thread-then-SIGKILL"):
            owner.send_signal(signal.SIGKILL)
        else:
            assert owner.stdin is not None
            owner.stdin.write("go\n")
            owner.stdin.flush()
        owner.wait(60)
        died = time.monotonic()
        while time.monotonic() - died < GONE_WITHIN_S:
            if not any(_alive(p, s) for p, s in below.items()) and not workdir.exists():
                break
            time.sleep(0.02)
        print(
            f"\n{how}: owner gone {died - triggered:.2f} s after the trigger, its children gone "
            f"and working directory removed {time.monotonic() - died:.2f} s later"
        )
        left = {pid for pid, started in below.items() if _alive(pid, started)}
        assert not left, f"still running {GONE_WITHIN_S} s after the owner died: {left}"
        assert not workdir.exists(), f"{workdir} outlived the cluster"
        assert not _listening(info["address"])
        assert ca_keys == []  # and while it ran, the CA's private key was never on disk
    finally:
        with contextlib.suppress(ProcessLookupError):
            owner.kill()
        owner.wait(30)
        for pid, started in below.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
