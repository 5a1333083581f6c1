"""The seams between layers: the Cluster base class, the Kernel base class, JobPlan, and the
wire format a remote worker answers in (every field checked, refusals from an allow-list)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future

import msgpack
import numpy as np
import pytest
import sandbox_hostile as hostile
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import wgtlab as wgt
from wgtlab.cluster.base import Cluster
from wgtlab.cluster.identity import WorkerIdentity
from wgtlab.cluster.ratelimit import RateLimit
from wgtlab.cluster.task import Task, WorkerReply
from wgtlab.cluster.wire import (
    REFUSALS,
    RemoteTaskError,
    crash_to_wire,
    refusal_from_wire,
    refusal_to_wire,
    refused_to_wire,
    reply_from_wire,
    reply_to_wire,
    task_from_wire,
    task_to_wire,
)
from wgtlab.cluster.worker import kernel_from_spec, run_task
from wgtlab.jobs import events as ev
from wgtlab.jobs.kernels import CombinedKernel
from wgtlab.jobs.plan import JobPlan
from wgtlab.sandbox.kernels import Kernel, WasmKernel
from wgtlab.sandbox.kernels.base import ExecutionSpec
from wgtlab.trust.policy import TrustPolicy

# --- the wire format -----------------------------------------------------------------------------


def _task(kernel: Kernel, payload: bytes = b"hello wire") -> Task:
    return Task("job-1", 7, 3, 1, kernel=kernel, payload=payload, limits=wgt.ResourceLimits())


def _real_reply(kernel: Kernel | None = None, payload: bytes = b"hello wire") -> WorkerReply:
    task = _task(kernel or WasmKernel(wgt.WasmModule.from_wat(hostile.ECHO)), payload)
    return run_task(task, WorkerIdentity.generate("w-0"))


def test_a_real_reply_round_trips_through_the_wire_exactly():
    reply = _real_reply()
    assert reply.output == b"hello wire" and not reply.failed
    back = reply_from_wire(reply_to_wire(reply), "w-0", _task(WasmKernel(hostile_echo())))
    assert back == reply


def hostile_echo() -> wgt.WasmModule:
    return wgt.WasmModule.from_wat(hostile.ECHO)


def test_an_error_reply_round_trips_with_its_type_and_message():
    kernel = WasmKernel(wgt.WasmModule.from_wat(hostile.INFINITE_LOOP))
    task = dataclasses.replace(_task(kernel), limits=wgt.ResourceLimits(max_cpu_cycles=10_000))
    reply = run_task(task, WorkerIdentity.generate("w-0"))
    assert reply.error_type == "OutOfFuel"
    assert reply_from_wire(reply_to_wire(reply), "w-0", task) == reply


def test_every_reply_field_is_type_checked():
    reply = _real_reply()
    task = _task(WasmKernel(hostile_echo()))
    fields = [f.name for f in dataclasses.fields(WorkerReply) if f.name != "worker"]
    for name in fields:
        wire = msgpack.unpackb(reply_to_wire(reply), raw=False)
        wire[name] = [1, 2]  # no field is a list
        with pytest.raises(RemoteTaskError, match=f"malformed reply from worker w-0: {name} is"):
            reply_from_wire(msgpack.packb(wire, use_bin_type=True), "w-0", task)
        del wire[name]
        if name in ("error_type", "error_message"):  # optional: absent means None
            assert reply_from_wire(msgpack.packb(wire, use_bin_type=True), "w-0", task)
        else:
            with pytest.raises(RemoteTaskError, match=f"{name} is a NoneType"):
                reply_from_wire(msgpack.packb(wire, use_bin_type=True), "w-0", task)


def test_bools_are_not_ints_on_the_wire():
    wire = msgpack.unpackb(reply_to_wire(_real_reply()), raw=False)
    wire["fuel_used"] = True
    with pytest.raises(RemoteTaskError, match="fuel_used is a bool, expected an int"):
        reply_from_wire(msgpack.packb(wire), "w-0", _task(WasmKernel(hostile_echo())))


def test_crashed_and_refused_answers_are_remote_task_errors():
    task = _task(WasmKernel(hostile_echo()))
    with pytest.raises(RemoteTaskError, match="worker w-3 crashed: boom"):
        reply_from_wire(crash_to_wire("boom"), "w-3", task)
    with pytest.raises(RemoteTaskError, match="worker w-3 refused: not installed"):
        reply_from_wire(refused_to_wire("not installed"), "w-3", task)
    with pytest.raises(RemoteTaskError, match="answered with a str, not bytes"):
        reply_from_wire("text", "w-3", task)
    with pytest.raises(RemoteTaskError, match="malformed msgpack"):
        reply_from_wire(b"\xc1", "w-3", task)
    with pytest.raises(RemoteTaskError, match="answered with a tuple, not a reply"):
        reply_from_wire(msgpack.packb([1]), "w-3", task)


def test_a_task_header_round_trips():
    kernel = WasmKernel(hostile_echo())
    task = dataclasses.replace(_task(kernel), limits=wgt.ResourceLimits(max_cpu_cycles=12_345))
    header = msgpack.unpackb(msgpack.packb(task_to_wire(task, "ab" * 32)), raw=False)
    assert header["digest"] == "ab" * 32
    assert task_from_wire(header, task.payload, kernel) == task


def test_the_managers_input_digest_never_travels_and_a_remote_worker_signs_its_own():
    """A local worker signs the digest the manager computed (same process, no second pass over
    the bytes); over the wire the digest is not sent, so a remote worker signs what it hashed
    itself and a manager cannot make it vouch for an input it did not receive."""
    import hashlib

    from wgtlab.cluster.identity import result_message, verify_signature

    kernel = WasmKernel(hostile_echo())
    claimed = hashlib.sha256(b"another input").digest()
    task = dataclasses.replace(_task(kernel), input_digest=claimed)
    header = task_to_wire(task, "ab" * 32)
    assert "input_digest" not in header
    remote = task_from_wire(header, task.payload, kernel)
    assert remote.input_digest is None
    identity = WorkerIdentity.generate("w-9")
    reply = run_task(remote, identity)
    own = hashlib.sha256(task.payload).digest()
    message = result_message("job-1", 7, 3, own, bytes.fromhex(kernel.digest), reply.outcome_digest)
    verify_signature(identity.public_key, reply.signature, message)
    local = run_task(task, identity)  # in the manager's process: its digest, as given
    signed = result_message(
        "job-1", 7, 3, claimed, bytes.fromhex(kernel.digest), local.outcome_digest
    )
    verify_signature(identity.public_key, local.signature, signed)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_on_the_allow_list_keep_their_type(name):
    answer = refusal_to_wire(REFUSALS[name]("the module is bad"))
    error = refusal_from_wire(answer, "w-1")
    assert type(error) is REFUSALS[name]
    assert str(error) == "worker w-1 refused the code: the module is bad"


@pytest.mark.parametrize(
    "name",
    ["ProcessExit", "ChunkFailed", "KeyboardInterrupt", "SystemExit", "WgtError", "__class__"],
)
def test_a_refusal_naming_any_other_class_is_a_cluster_error(name):
    # ProcessExit needs a code argument (it used to raise TypeError here); the others are not
    # errors a worker may make the client raise.
    error = refusal_from_wire({"ok": False, "error": name, "message": "x"}, "w-1")
    assert type(error) is wgt.ClusterError
    assert str(error) == "worker w-1 refused the code: x"


def test_a_malformed_refusal_is_a_cluster_error():
    assert type(refusal_from_wire(["not", "a", "map"], "w-1")) is wgt.ClusterError
    assert type(refusal_from_wire({"error": 42}, "w-1")) is wgt.ClusterError


# --- kernels and how a worker rebuilds them ----------------------------------------------------


def test_every_kind_of_kernel_is_a_kernel_and_rebuilds_from_its_spec():
    @wgt.udf
    def double(rows):
        return [2 * r for r in rows]

    kernels = [wgt.kernels.histogram(bins=4, lo=0.0, hi=1.0), WasmKernel(hostile_echo()), double]
    for kernel in kernels:
        assert isinstance(kernel, Kernel)
        spec = kernel.execution_spec()
        rebuilt = kernel_from_spec(spec)
        assert rebuilt.digest == kernel.digest
        assert rebuilt.execution_spec() == spec
    combined = CombinedKernel(double, combine=len)
    assert isinstance(combined, Kernel)
    assert combined.execution_spec() == double.execution_spec()
    assert combined.combine([[1], [2]]) == 2 and combined.digest == double.digest


def test_a_rebuilt_udf_runs_like_the_original():
    @wgt.udf
    def total(rows):
        return sum(rows)

    rebuilt = kernel_from_spec(total.execution_spec())
    payload = total.encode([1, 2, 3])
    sandbox = wgt.Sandbox(wgt.ResourceLimits())
    assert rebuilt.execute(sandbox, payload).output == total.execute(sandbox, payload).output


@pytest.mark.parametrize(
    "code",
    [b"not json", b"{}", b'{"program": {"source": 1, "entry": "f", "name": "f"}, "params": {}}'],
)
def test_malformed_udf_code_is_a_config_error(code):
    with pytest.raises(wgt.ConfigError, match="malformed udf code"):
        kernel_from_spec(ExecutionSpec.of("udf", code, "f"))


def test_unknown_code_kind_is_a_config_error():
    with pytest.raises(wgt.ConfigError, match="unknown kind of code 'python'"):
        kernel_from_spec(ExecutionSpec.of("python", b"print(1)", "f"))


def test_a_kernel_missing_a_member_cannot_be_made():
    class Partial(Kernel):
        name = "partial"
        input_kind = "bytes"

        def encode(self, chunk):
            return bytes(chunk)

    with pytest.raises(TypeError, match="abstract"):
        Partial()


def test_a_job_refuses_what_is_not_a_kernel():
    with pytest.raises(wgt.JobDefinitionError, match="cannot use a int as a kernel"):
        wgt.Job("j").kernel(42)


# --- the Cluster base class ---------------------------------------------------------------------


class OneThreadCluster(Cluster):
    """The smallest cluster: what the base class asks for, and nothing else."""

    def __init__(self) -> None:
        super().__init__(ledger=None, policy=None, rate_limit=RateLimit(), seed=0)
        self.me = WorkerIdentity.generate("solo-0")
        self.shut = 0

    def worker_names(self) -> list[str]:
        return ["solo-0"]

    def identities(self) -> dict[str, Ed25519PublicKey]:
        return {"solo-0": self.me.public_key}

    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        future: Future[WorkerReply] = Future()
        future.set_result(run_task(task, self.me))
        return future

    def _shutdown(self) -> None:
        self.shut += 1


def test_a_minimal_subclass_runs_jobs_and_gets_the_rest_for_free():
    with OneThreadCluster() as cluster:
        with wgt.Job("sum") as job:
            job.input(np.arange(100.0), chunk_rows=30)
            job.kernel(wgt.kernels.sum())
        result = job.run(on=cluster)
        assert result.ok and result.value == 4950.0
        assert cluster.task_deadline_seconds(wgt.ResourceLimits(max_execution_time_ms=2000)) == 4.0
        assert not cluster.has_left("solo-0")
        assert "OneThreadCluster" in cluster._repr_html_() and "solo-0" in cluster._repr_html_()
        assert cluster.fingerprint("solo-0") == cluster.worker_ids()["solo-0"]
    assert cluster.closed and cluster.shut == 1
    cluster.close()
    assert cluster.shut == 1  # closing twice releases once
    with pytest.raises(wgt.ClusterError, match="this OneThreadCluster is closed"):
        job.run(on=cluster)


def test_a_cluster_missing_submit_cannot_be_made():
    class NoSubmit(Cluster):
        def worker_names(self) -> list[str]:
            return []

        def identities(self) -> dict[str, Ed25519PublicKey]:
            return {}

    with pytest.raises(TypeError, match="submit"):
        NoSubmit(ledger=None, policy=None, rate_limit=RateLimit(), seed=0)  # type: ignore[abstract]


def test_both_clusters_are_clusters_and_job_run_refuses_anything_else():
    assert issubclass(wgt.LocalCluster, Cluster) and issubclass(wgt.DaskCluster, Cluster)
    job = wgt.Job("j").input(b"abc").kernel(wgt.kernels.checksum())
    with pytest.raises(wgt.ConfigError, match="on= takes a cluster"):
        job.run(on="local")  # type: ignore[arg-type]


def test_faults_by_name_or_index_checked_once_for_every_cluster():
    liar = wgt.faults.Liar()
    assert Cluster.named_faults({1: liar, "w-0": liar}, ["w-0", "w-1"]) == {
        "w-1": liar,
        "w-0": liar,
    }
    with pytest.raises(wgt.ConfigError, match=r"faults name unknown workers \[5, 'w-9'\]"):
        Cluster.named_faults({5: liar, "w-9": liar}, ["w-0", "w-1"])
    with pytest.raises(wgt.ConfigError, match=r"faults\['w-0'\] must be a wgt.faults fault"):
        Cluster.named_faults({"w-0": "liar"}, ["w-0"])  # type: ignore[dict-item]
    with wgt.LocalCluster(3, faults={2: liar}) as cluster:
        assert cluster.faults == {"local-2": liar}


def test_task_deadline_allows_for_queued_tasks():
    cluster = OneThreadCluster()
    limits = wgt.ResourceLimits(max_execution_time_ms=2000)
    one = 2.0 * 1.5 + 1.0
    cluster.rate_limit = RateLimit(max_in_flight=3)
    cluster.slots_per_worker = lambda: 1  # type: ignore[method-assign]
    assert cluster.task_deadline_seconds(limits) == 3 * one
    cluster.deadline_slack_s = 5.0
    assert cluster.task_deadline_seconds(limits) == 3 * one + 5.0


# --- JobPlan --------------------------------------------------------------------------------------


def test_a_plan_is_frozen_and_later_changes_to_the_job_do_not_reach_it():
    job = wgt.Job("plan").input(np.arange(10.0), chunk_rows=4).kernel(wgt.kernels.sum())
    plan = job.plan()
    assert isinstance(plan, JobPlan)
    job.verify("redundancy", replicas=3).retries(0).on_error("continue")
    assert (plan.verification.mode, plan.retries, plan.on_error) == ("hash", 3, "fail")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.retries = 5  # type: ignore[misc]
    assert [len(c) for c in plan.source] == [4, 4, 2]
    assert [len(c) for c in plan.source] == [4, 4, 2]  # a source reads its input anew


def test_planning_an_incomplete_job_says_what_is_missing():
    with pytest.raises(wgt.JobDefinitionError, match="has no input"):
        wgt.Job("x").kernel(wgt.kernels.sum()).plan()
    with pytest.raises(wgt.JobDefinitionError, match="has no kernel"):
        wgt.Job("x").input(b"abc").plan()


def test_a_defined_job_plans_over_its_data():
    @wgt.Job.define
    def upper():
        @wgt.Job.execute
        def execute(chunk: bytes) -> bytes:
            return chunk.upper()

    upper.retries(1)
    plan = upper.plan(b"abc")
    assert (plan.name, plan.retries, list(plan.source)) == ("upper", 1, [b"abc"])


# --- the manager never hands deciding work to a worker the policy refuses ------------------------


def test_a_worker_quarantined_mid_job_by_another_ledger_user_gets_no_deciding_task(tmp_path):
    ledger_path = tmp_path / "trust.sqlite"
    # Probation cannot end within this job: the victim stays quarantined throughout.
    policy = TrustPolicy(wgt.TrustLedger(ledger_path), probation_successes=10_000, seed=0)
    with wgt.LocalCluster(2, policy=policy) as cluster:
        victim = cluster.fingerprint("local-1")
        other = wgt.TrustLedger(ledger_path)  # another process's view of the same ledger
        state = {"quarantined_after": None}

        def quarantine_once(event):
            if event.kind == ev.CHUNK_SCHEDULED and state["quarantined_after"] is None:
                for _ in range(8):
                    other.record(victim, False)
                state["quarantined_after"] = event.data["task"]

        with wgt.Job("q") as job:
            job.input(np.arange(400.0), chunk_rows=10)
            job.kernel(wgt.kernels.sum())
        job.subscribe(quarantine_once)
        result = job.run(on=cluster)
        assert result.ok and result.value == float(np.arange(400.0).sum())
        # Choices within one dispatch round share one read of the ledger: the round under way
        # when the other process quarantined it (at most workers x in-flight tasks) may still
        # place a replica there; none after.
        margin = 2 * cluster.rate_limit.max_in_flight
        late = [
            t
            for t in result.tasks
            if t.task > state["quarantined_after"] + margin and t.role == "replica"
        ]
        assert late and {t.worker for t in late} == {"local-0"}
        shadows = [t for t in result.tasks if t.role == "probation"]
        assert shadows and {t.worker for t in shadows} == {"local-1"}
