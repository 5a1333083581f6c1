"""Certificate roles on a real Dask cluster over mutual TLS: a worker certificate cannot act as
a client, call the scheduler's or a peer worker's code-running operations, or slip a pickle to
either; the cluster's own client and workers go on as before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import distributed
import pytest

import wgtlab as wgt
from wgtlab.cli import main as cli
from wgtlab.cluster.certs import CertBundle

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]


def _attacks():
    """What a holder of a worker certificate tries. Defined in a function, so Dask ships them by
    value (the scheduler and workers cannot import this test module)."""

    def touch(path):
        from pathlib import Path

        Path(f"{path}.{os.getpid()}").write_text("ran here")
        return "ran"

    class Payload:
        """Whoever unpickles this runs ``touch``."""

        def __init__(self, path):
            self.path = path

        def __reduce__(self):
            return (touch, (self.path,))

    return touch, Payload


def _marks(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WGTLAB_CACHE_DIR", str(tmp_path_factory.mktemp("wgt-cache")))
        with wgt.DaskCluster.local(n_workers=2, tls=True) as c:
            yield c


def _stolen_worker_security(cluster) -> distributed.Security:
    """The worker-0 bundle, configured as a client would configure its own."""
    bundle = cluster.processes.workdir / "certs" / "worker-0"
    return distributed.Security(
        tls_ca_file=str(bundle / "ca.pem"),
        tls_client_cert=str(bundle / "cert.pem"),
        tls_client_key=str(bundle / "key.pem"),
        require_encryption=True,
    )


def test_a_worker_certificate_cannot_act_as_a_client(cluster, tmp_path):
    touch, _ = _attacks()
    security = _stolen_worker_security(cluster)
    client = None
    refused = []
    try:
        client = distributed.Client(
            cluster.address, security=security, timeout=10, set_as_default=False
        )
    except Exception as exc:
        refused.append(exc)
    if client is not None:
        try:
            for name, attempt in [
                ("run", lambda: client.run(touch, str(tmp_path / "run"))),
                ("scheduler", lambda: client.run_on_scheduler(touch, str(tmp_path / "sched"))),
                ("submit", lambda: client.submit(touch, str(tmp_path / "task")).result(10)),
            ]:
                try:
                    attempt()
                except Exception as exc:
                    refused.append((name, exc))
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
    time.sleep(1)  # anything already on its way has landed
    assert _marks(tmp_path) == []  # before: run.<each worker>, sched.<scheduler>, task.<a worker>
    assert refused
    # the cluster's own client still works, and both workers are still in
    assert cluster.worker_names() == ["dask-0", "dask-1"]
    with wgt.Job("after-attack") as job:
        wgt.input(b"one two three " * 1000, chunk_bytes=4096)
        wgt.kernel(wgt.kernels.word_count())
    result = wgt.delegate_job(job, cluster)
    assert result.ok and result.value == 3000


async def _send(address: str, security: distributed.Security, *messages) -> list:
    """Send ``messages`` on one connection made with ``security``'s client certificate;
    return the replies, or the exception that ended the exchange."""
    from distributed.comm import connect

    replies: list = []
    try:
        comm = await connect(address, timeout=10, **security.get_connection_args("client"))
    except Exception as exc:
        return [exc]
    try:
        for message in messages:
            await comm.write(message)
            replies.append(await asyncio.wait_for(comm.read(), 10))
    except Exception as exc:
        replies.append(exc)
    finally:
        with contextlib.suppress(Exception):
            await comm.close()
    return replies


def _is_answer(reply) -> bool:
    """A reply that is an answer, not a refusal (an exception, or an error message)."""
    return not isinstance(reply, BaseException) and not (
        isinstance(reply, dict) and reply.get("status") in ("error", "uncaught-error")
    )


def test_a_worker_certificate_cannot_run_code_on_the_scheduler_or_on_peers(cluster, tmp_path):
    from distributed.protocol import pickle
    from distributed.protocol.serialize import ToPickle

    touch, Payload = _attacks()
    security = _stolen_worker_security(cluster)
    peer = cluster.worker_addresses()["dask-1"]

    def run(where: str, *messages) -> list:
        return asyncio.run(_send(where, security, *messages))

    def run_op(op: str, path: Path) -> dict:
        return {"op": op, "function": pickle.dumps(touch), "args": pickle.dumps((str(path),))}

    answers = {
        # the scheduler's run_function op, which runs a pickled function there
        "run_function": run(cluster.address, run_op("run_function", tmp_path / "scheduler-run")),
        # a pickle inside an op that workers do send: unpickled as the message is read
        "pickle": run(
            cluster.address,
            {"op": "heartbeat_worker", "junk": ToPickle(Payload(str(tmp_path / "scheduler-pkl")))},
        ),
        # broadcast: the scheduler sends anything to every worker, as itself
        "broadcast": run(
            cluster.address,
            {"op": "broadcast", "msg": run_op("run", tmp_path / "peer-broadcast")},
        ),
        # a peer worker's own run op, called directly
        "peer_run": run(peer, run_op("run", tmp_path / "peer-run")),
        # a peer worker unpickling what another worker sends
        "peer_pickle": run(
            peer, {"op": "get_data", "keys": [], "junk": ToPickle(Payload(str(tmp_path / "peer")))}
        ),
    }
    time.sleep(1)
    assert _marks(tmp_path) == []  # before: one file per attack (two for broadcast)
    answered = {name: replies for name, replies in answers.items() if any(map(_is_answer, replies))}
    assert answered == {}
    # what workers need from the scheduler still works for them
    assert cluster.worker_names() == ["dask-0", "dask-1"]
    # and what the cluster's client may do, it still may (clients are trusted)
    client_security = cluster.security
    ok = asyncio.run(_send(cluster.address, client_security, {"op": "ncores"}))
    assert len(ok) == 1 and _is_answer(ok[0])


def test_certs_init_issues_distinct_roles_and_bundles_are_checked(tmp_path, capsys):
    certs = tmp_path / "certs"
    assert cli(["certs", "init", str(certs), "--workers", "1"]) == 0
    capsys.readouterr()
    from wgtlab.cluster.certs import certificate_role

    roles = {
        name: certificate_role((certs / name / "cert.pem").read_bytes())
        for name in ("scheduler", "client", "worker-0")
    }
    assert roles == {"scheduler": "scheduler", "client": "client", "worker-0": "worker"}
    assert CertBundle.load(certs / "client", "client").role == "client"
    with pytest.raises(wgt.ConfigError, match="worker certificate"):
        CertBundle.load(certs / "worker-0", "client")
    with pytest.raises(wgt.ConfigError, match="worker certificate"):
        wgt.DaskCluster("tls://127.0.0.1:1", security=certs / "worker-0")
    with pytest.raises(wgt.ConfigError, match="client certificate"):
        CertBundle.load(certs / "client", "worker")


FORGER = textwrap.dedent(
    """
    import asyncio, sys
    from distributed import Security, Worker

    address, bundle, victim = sys.argv[1:4]
    security = Security(
        tls_ca_file=f"{bundle}/ca.pem",
        tls_worker_cert=f"{bundle}/cert.pem",
        tls_worker_key=f"{bundle}/key.pem",
        require_encryption=True,
    )

    async def main():
        async with Worker(address, security=security, name="forger", nthreads=1) as worker:
            print("joined", flush=True)
            worker.log_event(victim, {"action": "remove-worker", "expected": False})
            await asyncio.sleep(3)

    asyncio.run(main())
    """
)


def test_a_worker_cannot_announce_that_another_worker_left(cluster, tmp_path):
    """The scheduler's "remove-worker" event on a worker's topic is how the client learns that
    the worker left (and fails its tasks at once); a worker may not forge one."""
    victim = "dask-0"
    assert not cluster.has_left(victim)
    bundle = cluster.processes.workdir / "certs" / "worker-1"
    forger = subprocess.run(
        [sys.executable, "-c", FORGER, cluster.address, str(bundle),
         cluster.worker_addresses()[victim]],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "joined" in forger.stdout, forger.stderr[-2000:]  # a worker certificate joins
    time.sleep(0.5)
    assert not cluster.has_left(victim)
