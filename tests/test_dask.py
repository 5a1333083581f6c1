"""DaskCluster on loopback with real worker processes and mutual TLS: same results as local,
liars caught, killed workers survived, strangers refused, tampered code refused, no pickles."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import distributed
import numpy as np
import pandas as pd
import pytest
import sandbox_hostile as hostile

import wgtlab as wgt
from wgtlab.cli import main as cli
from wgtlab.cluster.dask_worker import run_wire_task
from wgtlab.cluster.identity import WorkerIdentity
from wgtlab.cluster.task import Task
from wgtlab.cluster.wire import reply_from_wire, task_to_wire
from wgtlab.jobs import events as ev
from wgtlab.sandbox.cache import cache_dir
from wgtlab.sandbox.kernels import WasmKernel

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
VALUES = np.random.default_rng(7).normal(50.0, 30.0, 10_007)
TEXT = (REPO / "data" / "flights-2013-01.csv").read_bytes()[:300_000]

# A CPU-bound ABI v1 kernel: FNV-1a over the chunk, ROUNDS times; 8 bytes out.
SPIN_BODY = """
    (local $r i32) (local $q i32) (local $end i32) (local $h i64)
    (local.set $h (i64.const 1469598103934665603))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $r (i32.const ROUNDS))
    (block $done (loop $round
      (br_if $done (i32.eqz (local.get $r)))
      (local.set $q (local.get $p))
      (block $eod (loop $byte
        (br_if $eod (i32.ge_u (local.get $q) (local.get $end)))
        (local.set $h (i64.mul (i64.xor (local.get $h) (i64.load8_u (local.get $q)))
                               (i64.const 1099511628211)))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $byte)))
      (local.set $r (i32.sub (local.get $r) (i32.const 1)))
      (br $round)))
    (i64.store (i32.const 0) (local.get $h))
    (i64.const 8)
"""


def spin_module(rounds: int) -> wgt.WasmModule:
    body = SPIN_BODY.replace("ROUNDS", str(rounds))
    return wgt.WasmModule.from_wat(hostile.abi_module(body), name="spin")


@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory):
    """Worker processes inherit the environment: compiled modules go to a temporary cache; the
    @wgt.udf runner (built once, ~40 MiB) is shared with the real cache, as in the UDF tests."""
    real_udf = cache_dir() / "udf"
    real_udf.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("wgt-cache")
    (root / "udf").symlink_to(real_udf, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WGTLAB_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def cluster(isolated_cache):
    with wgt.DaskCluster.local(n_workers=2, tls=True) as c:
        yield c


def run(kernel, source, on, *, replicas=1, subscribers=(), **input_options):
    with wgt.Job("dask-test") as job:
        wgt.input(source, **input_options)
        wgt.kernel(kernel)
        if replicas > 1:
            wgt.verify("redundancy", replicas=replicas)
    return wgt.delegate_job(job, on, subscribers=subscribers)


# --- start, results, display -------------------------------------------------------------------


def test_tls_cluster_starts_with_sandboxed_workers_and_pinned_keys(cluster):
    assert cluster.address.startswith("tls://127.0.0.1:")
    assert cluster.worker_names() == ["dask-0", "dask-1"]
    keys = cluster.identities()
    fingerprints = {name: cluster.fingerprint(name) for name in keys}
    assert len(set(fingerprints.values())) == 2  # one key per worker process
    pids = cluster.worker_pids()
    assert os.getpid() not in pids.values() and len(set(pids.values())) == 2
    page = cluster._repr_html_()
    assert "DaskCluster" in page and "dask-0" in page and fingerprints["dask-1"][:24] in page
    assert "Dask dashboard" in page or "no dashboard" in page


def test_job_results_equal_the_local_cluster(cluster):
    series = pd.Series(VALUES)
    with wgt.LocalCluster(workers=2) as local:
        for kernel, source, options in [
            (wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0), series, {"chunk_rows": 1000}),
            (wgt.kernels.sum(), series, {"chunk_rows": 999}),
            (wgt.kernels.word_count(), TEXT, {"chunk_bytes": 50_000}),
            (spin_module(3), TEXT, {"chunk_bytes": 65_536}),
        ]:
            remote = run(kernel, source, cluster, **options)
            here = run(kernel, source, local, **options)
            assert remote.ok and here.ok
            assert remote.merkle_root == here.merkle_root  # same outputs, chunk by chunk
            np.testing.assert_array_equal(np.asarray(remote.value), np.asarray(here.value))
            assert {t.worker for t in remote.tasks} <= {"dask-0", "dask-1"}
    expected, _ = np.histogram(VALUES[(VALUES >= 0) & (VALUES <= 100)], bins=20, range=(0, 100))
    counts = run(
        wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0), series, cluster, chunk_rows=1000
    ).value
    np.testing.assert_array_equal(np.asarray(counts), expected)


@wgt.udf(combine="sum")
def late_flights(rows):
    return sum(1 for row in rows if (row["arr_delay"] or 0) > 15)


def test_udf_job_equals_the_local_cluster(cluster):
    from udf_support import ensure_runner

    ensure_runner()  # workers load the runner the UDF tests build (shared cache)
    flights = pd.read_csv(REPO / "data" / "flights-2013-01.csv").iloc[:3000]
    limits = wgt.ResourceLimits(max_cpu_cycles=20_000_000_000)
    with wgt.Job("udf-on-dask") as job:
        wgt.input(flights[["arr_delay"]], chunk_rows=1000)
        wgt.kernel(late_flights)
        wgt.limits(limits)
    remote = job.run(on=cluster)
    assert remote.ok and remote.value == int((flights["arr_delay"] > 15).sum())
    with wgt.LocalCluster(workers=2) as local:
        assert job.run(on=local).merkle_root == remote.merkle_root


# --- code shipped by digest ---------------------------------------------------------------------


def test_code_whose_bytes_do_not_match_their_digest_is_refused(cluster):
    kernel = WasmKernel(spin_module(5))
    spec = kernel.execution_spec()
    tampered = dataclasses.replace(spec, code=spec.code[:-1] + bytes([spec.code[-1] ^ 0x01]))
    assert tampered.digest == spec.digest  # announced as the original
    with pytest.raises(wgt.InvalidModule, match="does not match its digest"):
        cluster.install(tampered, workers=["dask-0"])
    # nothing was installed: a task for that digest is refused by the worker, in plain values
    task = Task("j", 0, 0, 0, kernel=kernel, payload=b"x", limits=wgt.ResourceLimits())
    address = cluster.worker_addresses()["dask-0"]
    wire = cluster.client.submit(
        run_wire_task,
        task_to_wire(task, spec.digest),
        b"x",
        workers=[address],
        allow_other_workers=False,
        pure=False,
    ).result(timeout=30)
    with pytest.raises(wgt.ClusterError, match=r"dask-0 refused: code .* is not installed"):
        reply_from_wire(wire, "dask-0", task)
    # the genuine bytes install, and a job with them runs
    cluster.install(spec, workers=["dask-0"])
    assert run(spin_module(5), b"abc" * 1000, cluster, chunk_bytes=1000).ok


# --- the client never unpickles what a worker sends ---------------------------------------------


def _attacks():
    """Tasks of a hostile worker. Defined in a function, so Dask ships them by value (the
    scheduler and workers cannot import this test module)."""

    def touch(path):
        from pathlib import Path

        Path(f"{path}.{os.getpid()}").write_text("unpickled here")
        return "unpickled"

    class Payload:
        """Whoever unpickles this runs ``touch`` (leaving a file named after its process)."""

        def __init__(self, path):
            self.path = path

        def __reduce__(self):
            return (touch, (self.path,))

    def pickled_result(path):
        from distributed.protocol.serialize import Serialized, serialize

        return Serialized(*serialize(Payload(path), serializers=["pickle"]))

    def forged_error(path):
        """Reports its own task as failed, with a pickle as the exception."""
        from distributed import get_worker
        from distributed.protocol.serialize import Serialize

        worker = get_worker()
        key = worker.get_current_task()
        worker.batched_send(
            {
                "op": "task-erred",
                "key": key,
                "run_id": worker.state.tasks[key].run_id,
                "stimulus_id": "forged",
                "exception": Serialize(Payload(path)),
                "traceback": None,
                "exception_text": "",
                "traceback_text": "",
                "thread": None,
                "startstops": [],
                "status": "error",
            }
        )
        time.sleep(2)
        return "late"

    return {"pickled_result": pickled_result, "forged_error": forged_error}


def test_the_client_never_unpickles_what_a_worker_sends(cluster, tmp_path):
    here = os.getpid()

    def unpickled_here(path):
        return Path(f"{path}.{here}").exists()

    attacks = _attacks()
    for name, attack in attacks.items():
        mark = tmp_path / f"ours-{name}"
        with pytest.raises(Exception) as caught:
            cluster.client.submit(attack, str(mark), pure=False).result(timeout=30)
        assert not unpickled_here(mark), name
        # refused by the client (not msgpack), or failed without reading the worker's pickle
        assert isinstance(caught.value, (TypeError, wgt.ClusterError)), caught.value
        assert "deserialization of the task graph" not in str(caught.value)
    # the same attacks on a stock Dask client with the same certificate do run in this process
    stock = distributed.Client(cluster.address, security=cluster.security, set_as_default=False)
    try:
        for name, attack in attacks.items():
            mark = tmp_path / f"stock-{name}"
            with contextlib.suppress(Exception):
                stock.submit(attack, str(mark), pure=False).result(timeout=30)
            assert unpickled_here(mark), name
    finally:
        stock.close()


def _finished(future, timeout=30.0):
    """Waits for a Dask future to finish on its worker, without fetching its result."""
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, f"{future.key} did not finish"
        time.sleep(0.01)
    assert future.status == "finished", future.status


def test_results_fetched_from_a_worker_are_read_as_msgpack_only(cluster, tmp_path):
    """The cluster fetches each finished task's result straight from its worker: a worker that
    answers with a pickle is refused there, and nothing in the pickle runs in this process."""
    here = os.getpid()
    name = cluster.worker_names()[0]
    member = cluster._members[name]
    mark = tmp_path / "fetched"
    future = cluster.client.submit(
        _attacks()["pickled_result"], str(mark), pure=False, workers=[member.address]
    )
    _finished(future)
    with pytest.raises(TypeError, match="pickle"):
        cluster.client.sync(cluster._get_data, member, [future.key])
    assert not Path(f"{mark}.{here}").exists()
    # an honest result on the same path comes back as it was sent
    plain = cluster.client.submit(dict, a=1, pure=False, workers=[member.address])
    _finished(plain)
    assert cluster.client.sync(cluster._get_data, member, [plain.key]) == {plain.key: {"a": 1}}
    future.release()
    plain.release()


# --- a liar, and a killed worker ---------------------------------------------------------------


def test_redundancy_catches_a_tampering_worker_exactly_as_locally(isolated_cache):
    liar = wgt.faults.Liar(rate=1.0, seed=7)
    kernel = wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0)
    series = pd.Series(VALUES)
    with wgt.LocalCluster(workers=3, faults={"local-2": liar}) as local:
        expected = run(kernel, series, local, replicas=2, chunk_rows=1000)
    with wgt.DaskCluster.local(n_workers=3, faults={2: liar}) as remote:
        result = run(kernel, series, remote, replicas=2, chunk_rows=1000)
        liar_id = remote.fingerprint("dask-2")
        honest = [remote.fingerprint(n) for n in ("dask-0", "dask-1")]
        scores = {w: remote.ledger.score(w) for w in [liar_id, *honest]}
    assert expected.ok and result.ok
    np.testing.assert_array_equal(np.asarray(result.value), np.asarray(expected.value))
    assert result.merkle_root == expected.merkle_root
    outcomes = collections.Counter(t.outcome for t in result.tasks if t.worker == "dask-2")
    assert outcomes["dissented"] >= 1 and outcomes["agreed"] == 0
    assert all(o.status == "verified" and "dask-2" not in o.workers for o in result.outcomes)
    assert scores[liar_id] < 0.5 < min(scores[h] for h in honest)


def test_a_worker_process_killed_mid_job_loses_no_chunk(cluster):
    victim = "dask-1"
    pid = cluster.worker_pids()[victim]
    done = []

    def kill_after_two_chunks(event):
        if event.kind == ev.CHUNK_DONE and event.worker == victim and len(done) < 2:
            done.append(event)  # replies already on the wire may still arrive after the kill
            if len(done) == 2:
                os.kill(pid, signal.SIGKILL)  # a real process, really killed

    module = spin_module(60)
    data = np.random.default_rng(3).bytes(48 * 65_536)
    started = time.monotonic()
    result = run(module, data, cluster, subscribers=[kill_after_two_chunks], chunk_bytes=65_536)
    assert time.monotonic() - started < 60  # the lost tasks failed at once, not at the deadline
    assert len(done) == 2
    process = cluster.processes.processes[victim]
    assert process.pid == pid and process.wait(10) == -signal.SIGKILL
    assert result.ok and len(result.outcomes) == 48
    lost = [t for t in result.tasks if t.worker == victim and t.outcome == "crashed"]
    assert lost and all("left the Dask cluster" in t.reason for t in lost)
    # Leaving costs the worker trust once, not once for every task it held.
    history = cluster.ledger.history()
    blamed = history[(history.job == result.job_id) & (history.label == victim) & ~history.ok]
    assert len(blamed) == 1, blamed.reason.tolist()
    with wgt.LocalCluster(workers=2) as local:
        assert run(module, data, local, chunk_bytes=65_536).merkle_root == result.merkle_root


# --- several processes, certificates from `wgtlab certs init` ------------------------------------


def _start(args, env, **options):
    return subprocess.Popen(
        [sys.executable, "-m", "wgtlab.cli", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )


def _stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_only_holders_of_the_cluster_certificates_connect(isolated_cache, tmp_path, capsys):
    certs, stranger = tmp_path / "certs", tmp_path / "stranger"
    assert cli(["certs", "init", str(certs), "--workers", "1"]) == 0
    assert cli(["certs", "init", str(stranger), "--workers", "1"]) == 0
    capsys.readouterr()
    for bundle in ("scheduler", "client", "worker-0"):
        assert (certs / bundle / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (certs / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scheduler_file = tmp_path / "scheduler.json"
    processes = [
        _start(
            [
                "scheduler",
                "--certs",
                str(certs / "scheduler"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            env,
        )
    ]
    try:
        deadline = time.monotonic() + 30
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        identities = tmp_path / "identities"
        processes.append(
            _start(
                [
                    "worker",
                    "--scheduler",
                    address,
                    "--certs",
                    str(certs / "worker-0"),
                    "--identity-dir",
                    str(identities),
                ],
                env,
            )
        )
        intruder = _start(
            [
                "worker",
                "--scheduler",
                address,
                "--certs",
                str(stranger / "worker-0"),
                "--name",
                "intruder",
                "--death-timeout",
                "6",
            ],
            env,
        )
        processes.append(intruder)

        with wgt.DaskCluster(address, security=certs / "client") as remote:
            remote.client.wait_for_workers(1, timeout=30)
            assert remote.worker_names() == ["worker-0"]
            # the key the client pinned is the one the worker keeps on its disk
            kept = WorkerIdentity.load_or_create("worker-0", identities)
            assert remote.fingerprint("worker-0") == kept.fingerprint
            assert (identities / "worker-0.ed25519").stat().st_mode & 0o777 == 0o600
            assert run(wgt.kernels.word_count(), TEXT, remote, chunk_bytes=100_000).value == len(
                TEXT.split()
            )
            # a worker with another CA's certificate never joins, and gives up
            assert intruder.wait(30) == 1
            assert "could not join the scheduler" in intruder.stderr.read()
            assert remote.worker_names() == ["worker-0"]

        # a client with another CA's certificate is refused
        with pytest.raises(wgt.ClusterError, match="could not connect"):
            wgt.DaskCluster(address, security=stranger / "client", timeout=5)
        # a client with no certificate at all: the scheduler ends the TLS session; with the
        # cluster's client certificate the same connection gets Dask's handshake
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        for with_certificate in (False, True):
            context = ssl.create_default_context(cafile=str(certs / "client" / "ca.pem"))
            context.check_hostname = False
            if with_certificate:
                context.load_cert_chain(certs / "client" / "cert.pem", certs / "client" / "key.pem")
            with (
                socket.create_connection((host, int(port)), timeout=3) as raw,
                context.wrap_socket(raw) as tls,
            ):
                if with_certificate:
                    assert len(tls.recv(1)) == 1
                else:
                    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
                        tls.recv(1)
    finally:
        for process in reversed(processes):
            _stop(process)
