"""The manager: cuts a job's plan into tasks, places them on trusted workers, checks every reply.

``delegate_job`` owns all of a run's state on the calling thread; workers answer through
futures whose completions are queued back to it, so there is one writer and no shared mutable
state to race on. ``execute_chunk`` (in ``worker.py``) is what a worker runs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import queue
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wgtlab.cluster.identity import fingerprint, public_bytes, result_message, verify_signature
from wgtlab.cluster.task import Task, WorkerReply, error_digest
from wgtlab.cluster.worker import execute_chunk
from wgtlab.errors import (
    ChunkFailed,
    ClusterError,
    JobError,
    NoEligibleWorkers,
    SignatureError,
)
from wgtlab.jobs import events as ev
from wgtlab.jobs.cache import CachedOutcome, ResultCache
from wgtlab.jobs.chunking import describe_cut
from wgtlab.jobs.events import Event, EventStream, Subscriber
from wgtlab.jobs.plan import JobDefinition, JobPlan
from wgtlab.jobs.result import (
    Attestation,
    ChunkOutcome,
    ChunkStatus,
    JobResult,
    TaskOutcome,
    TaskRecord,
)
from wgtlab.trust.ledger import ScoreRows, WorkerState
from wgtlab.verify import chunk_record, quorum

if TYPE_CHECKING:
    # the cluster base class calls delegate_job; this module only needs its type
    from wgtlab.cluster.base import Cluster

__all__ = ["delegate_job", "execute_chunk"]

_NO_DIGEST = bytes(32)  # the Merkle leaf's output digest for a chunk without a verified outcome


# The trust reason of a reply that lost the vote.
DISSENT = "disagreed with the quorum"
# Kernel errors that depend on the machine running the task rather than on the chunk.
_WALL_CLOCK_ERRORS = frozenset({"TimeLimitExceeded"})
# How chunks cancelled by an earlier chunk's failure begin their reason.
_CANCELLED = "cancelled"
# The trust reason of a timeout claim that another worker refuted by finishing the chunk.
TIMEOUT_REFUTED = "claimed a timeout on a chunk other workers finished within the same limits"


def delegate_job(
    job: JobPlan | JobDefinition, cluster: Cluster, *, subscribers: Iterable[Subscriber] = ()
) -> JobResult:
    """Run ``job`` (a plan, or a ``wgt.Job`` to plan) on ``cluster``: chunks -> tasks ->
    trusted workers -> verified JobResult."""
    plan = job if isinstance(job, JobPlan) else job.plan()
    if cluster.closed:
        raise ClusterError(f"this {type(cluster).__name__} is closed; create a new one")
    plan.check_workers(len(cluster.worker_names()))
    return _JobRun(plan, cluster, list(plan.subscribers) + list(subscribers)).run()


@dataclass
class _Chunk:
    index: int
    payload: bytes
    input_digest: bytes
    requested: int = 0  # replicas asked for (fewer than the job's when spot checking)
    planned: bool = False
    votes: list[tuple[str, str]] = field(default_factory=list)
    replies: dict[str, WorkerReply] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # workers ever given this chunk
    in_flight: int = 0
    queued: int = 0  # replicas waiting in the manager's pending queue
    failures: list[str] = field(default_factory=list)
    shadows: list[str] = field(default_factory=list)  # probation replies awaiting the decision
    timeouts: list[str] = field(default_factory=list)  # workers that claimed a timeout
    cache_key: str | None = None
    cached: CachedOutcome | None = None  # decided from the verified-result cache
    decoded: dict[str, Any] = field(default_factory=dict)  # outcome digest -> decoded value
    status: ChunkStatus = "running"
    digest: str | None = None  # canonical outcome digest (hex)
    agreed: tuple[str, ...] = ()
    dissented: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def decided(self) -> bool:
        return self.status != "running"


@dataclass
class _Assignment:
    task: Task
    worker: str
    deadline: float
    probation: bool = False
    future: Future[WorkerReply] | None = None


class _JobRun:
    def __init__(self, plan: JobPlan, cluster: Cluster, subscribers: list[Subscriber]) -> None:
        self.plan = plan
        self.cluster = cluster
        self.kernel = plan.kernel
        self.code_digest = bytes.fromhex(plan.kernel.digest)
        self.limits = plan.limits
        self.mode = plan.verification.mode
        self.replicas = plan.verification.replicas
        # ``None``: escalation may reach every worker (the eligible pool bounds it in practice).
        self.max_replicas = plan.verification.max_replicas or len(cluster.worker_names())
        self.job_id = f"{plan.name}-{uuid.uuid4().hex[:12]}"
        self.events = EventStream(subscribers)
        self.policy = cluster.policy
        self.names = list(cluster.worker_names())
        keys = cluster.identities()
        self.keys = {name: keys[name] for name in self.names}
        self.ids = {name: fingerprint(self.keys[name]) for name in self.names}
        limit = cluster.rate_limit
        self.max_in_flight = limit.max_in_flight
        self.buckets = {n: limit.bucket() for n in self.names}
        self.in_flight = dict.fromkeys(self.names, 0)
        self.deadline_s = cluster.task_deadline_seconds(self.limits)
        # Chunks in progress at once: enough to fill every worker's queue twice over (remote
        # workers queue several tasks to hide the round trip).
        self.window = max(4, 4 * len(self.names), 2 * len(self.names) * self.max_in_flight)
        self.completions: queue.SimpleQueue[tuple[int, Future[WorkerReply]]] = queue.SimpleQueue()
        self.assignments: dict[int, _Assignment] = {}
        self.next_task_id = 0
        self.chunks: dict[int, _Chunk] = {}
        self.active: dict[int, _Chunk] = {}
        self.pending: deque[_Chunk] = deque()  # one entry per replica still to place
        self.records: list[TaskRecord] = []
        self.quarantined = {n for n in self.names if self.policy.is_quarantined(self.ids[n])}
        self.departed: set[str] = set()  # workers that left the cluster during this run
        self.crashed: set[str] = set()  # workers that lost trust for a crash in this run
        self.stopped_by: _Chunk | None = None  # the first failed chunk, under on_error="fail"
        self.cache = ResultCache.default() if plan.cache else None
        self.cache_prefix = ResultCache.key_prefix(
            plan.kernel.digest, plan.kernel.params, plan.limits
        )

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> JobResult:
        started = time.time()
        trust_before = self.cluster.ledger.score_rows()
        self._emit(ev.JOB_STARTED, data={"workers": len(self.names), "mode": self.mode})
        try:
            self._loop(enumerate(self.plan.source))
            finished = time.time()
            result = self._result(started, finished, trust_before)
        except BaseException as exc:
            # Interrupted (or broken): tasks not yet started are withdrawn, so the workers are
            # free for the next job at once, and every subscriber learns that the job ended.
            for assignment in self.assignments.values():
                if assignment.future is not None:
                    assignment.future.cancel()
            self._emit(
                ev.JOB_DONE,
                data={
                    "ok": False,
                    "seconds": time.time() - started,
                    "error": f"{type(exc).__name__}: {exc}",
                    "interrupted": isinstance(exc, KeyboardInterrupt),
                },
            )
            raise
        self._emit(ev.JOB_DONE, data={"ok": result.ok, "seconds": finished - started})
        if not result.ok and self.plan.on_error == "fail":
            raise self._failure(result)
        return result

    def _failure(self, result: JobResult) -> ChunkFailed:
        """The job stopped at its first failed chunk: say which, why, and what became of the
        others; the partial result rides along."""
        bad = sorted(
            (c for c in result.outcomes if c.status != "verified"),
            key=lambda c: (self.stopped_by is None or c.index != self.stopped_by.index, c.index),
        )
        first = bad[0]
        verified = sum(1 for c in result.outcomes if c.status == "verified")
        cancelled = sum(1 for c in bad if (c.reason or "").startswith(_CANCELLED))
        rest = f", {cancelled} cancelled and any others not started" if cancelled else ""
        return ChunkFailed(
            f"job {self.plan.name!r}: chunk {first.index} failed: {first.reason}; {verified} "
            f"chunks verified{rest} (on_error='fail' stops at the first failed chunk; "
            "job.on_error('continue') runs them all and combines those that verify). The "
            "JobResult is on this exception as .result",
            chunk=first.index,
            reasons=tuple(f"chunk {c.index} failed: {c.reason}" for c in bad),
            result=result,
        )

    def _loop(self, source: Iterator[Any]) -> None:
        exhausted = False
        while True:
            while not exhausted and self.stopped_by is None and len(self.active) < self.window:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                self._admit(*item)
            if self.stopped_by is not None:
                self._cancel_the_rest()
                return
            self._dispatch()
            if exhausted and not self.active:
                return
            self._wait()

    def _cancel_the_rest(self) -> None:
        """After the first failed chunk (``on_error="fail"``): nothing more is scheduled, tasks
        not yet started are withdrawn, and the chunks in progress end as cancelled."""
        assert self.stopped_by is not None
        for assignment in self.assignments.values():
            if assignment.future is not None:
                assignment.future.cancel()
        self.assignments.clear()
        self.pending.clear()
        why = f"{_CANCELLED}: the job stopped when chunk {self.stopped_by.index} failed"
        for state in list(self.active.values()):
            state.status, state.reason = "failed", why
            self.active.pop(state.index)
            self._emit(ev.CHUNK_FAILED, state.index, None, {"error": why})

    def _admit(self, index: int, chunk: Any) -> None:
        payload, digest = self.kernel.payload(chunk)
        state = _Chunk(index, payload, digest)
        self.chunks[index] = state
        if self.cache is not None:
            state.cache_key = ResultCache.key(self.cache_prefix, state.input_digest)
            if self._from_cache(state):
                return
        self.active[index] = state
        self._enqueue(state)

    def _from_cache(self, state: _Chunk) -> bool:
        """Decide ``state`` from a verified outcome kept earlier, if one is there, authentic
        and at least as strong as this job asks; its output still has to decode."""
        assert self.cache is not None and state.cache_key is not None
        found = self.cache.get(state.cache_key, self.mode, self.replicas)
        if found is None:
            return False
        if found.status == "verified":
            try:
                state.decoded[found.digest] = self.kernel.decode(found.output)
            except Exception:  # a cache written by another version: compute it again
                return False
        state.cached = found
        state.status, state.digest, state.reason = found.status, found.digest, found.reason
        kind = ev.CHUNK_VERIFIED if found.status == "verified" else ev.CHUNK_FAILED
        self._emit(
            kind,
            state.index,
            None,
            {"digest": found.digest, "agreed": found.workers, "cached": True, "error": None},
        )
        self._finish(state)
        return True

    def _keep(self, state: _Chunk) -> None:
        """Put a decided outcome in the verified-result cache (at once, so an interrupted job
        resumes from it)."""
        if self.cache is None or state.cache_key is None or state.digest is None:
            return
        reply = state.replies[state.agreed[0]]
        self.cache.put(
            state.cache_key,
            CachedOutcome(
                status="error" if reply.failed else "verified",
                digest=state.digest,
                output=reply.output,
                reason=state.reason,
                mode=self.mode,
                workers=state.agreed,
                attestations=self._attestations(state),
                fuel=reply.fuel_used,
                wall_ms=reply.wall_ms,
                stdout=reply.stdout,
            ),
        )

    def _attestations(self, state: _Chunk) -> tuple[Attestation, ...]:
        if state.cached is not None:
            return state.cached.attestations
        return tuple(
            Attestation(
                worker=w,
                worker_id=self.ids[w],
                public_key=public_bytes(self.keys[w]),
                task=state.replies[w].task_id,
                signature=state.replies[w].signature,
                job_id=self.job_id,  # what the signature names, kept with it in the cache
                chunk=state.index,
            )
            for w in state.agreed
        )

    def _enqueue(self, state: _Chunk, replicas: int = 1) -> None:
        """``replicas`` more tasks of ``state`` to place."""
        state.queued += replicas
        self.pending.extend([state] * replicas)

    def _dispatch(self) -> None:
        if not any(self.in_flight[n] < self.max_in_flight for n in self.names):
            return  # every worker is busy: nothing can be placed this round
        states: dict[str, WorkerState] | None = None  # read once a round, when a choice is due
        for _ in range(len(self.pending)):
            state = self.pending.popleft()
            state.queued -= 1
            if state.decided:
                continue
            candidates = [
                n for n in self.names if n not in state.used and n not in self.quarantined
            ]
            if not candidates:
                if state.in_flight == 0:
                    self._out_of_workers(state)
                continue  # replicas in flight may still decide it
            ready = [
                n
                for n in candidates
                if self.in_flight[n] < self.max_in_flight and self.buckets[n].available()
            ]
            if not ready:
                self._enqueue(state)
                continue
            if states is None:
                states = self.policy.ledger.states(self.ids.values())
            worker = self._choose(ready, states)
            if worker is None:
                self._enqueue(state)  # dispatched again among the remaining workers
                continue
            if not state.planned:
                state.planned = True
                state.requested = self._replicas_for(worker)
                self._enqueue(state, state.requested - 1)
                self._maybe_probation(state)
            self._submit(state, worker)

    def _choose(self, ready: list[str], states: dict[str, WorkerState]) -> str | None:
        """A trust-weighted pick among ``ready``; None if the policy refuses them all (the
        ledger says they are quarantined: they get no deciding replica, only probation)."""
        by_id = {self.ids[n]: n for n in ready}
        try:
            return by_id[self.policy.choose(list(by_id), 1, states=states)[0]]
        except NoEligibleWorkers:
            self.quarantined.update(ready)
            return None

    def _replicas_for(self, worker: str) -> int:
        if self.mode != "redundancy":
            return 1
        rate = self.plan.verification.spot_check
        if rate is None:
            return self.replicas
        chosen = self.policy.replicas_for(self.ids[worker], self.replicas, check_rate=rate)
        return max(1, min(self.replicas, chosen))

    def _maybe_probation(self, state: _Chunk) -> None:
        """Give a quarantined worker a shadow copy: compared afterwards, never a vote. In every
        mode, so a worker quarantined for crashing in hash jobs can also earn its way back."""
        if not self.quarantined:
            return
        pick = self.policy.choose_probation([self.ids[n] for n in sorted(self.quarantined)])
        if pick is None:
            return
        worker = next(n for n in self.names if self.ids[n] == pick)
        if self.in_flight[worker] < self.max_in_flight and worker not in state.used:
            self._submit(state, worker, probation=True)

    def _submit(self, state: _Chunk, worker: str, *, probation: bool = False) -> None:
        self.buckets[worker].try_take()
        task = Task(
            job_id=self.job_id,
            task_id=self.next_task_id,
            chunk=state.index,
            replica=len(state.used),
            kernel=self.kernel,
            payload=state.payload,
            limits=self.limits,
            input_digest=state.input_digest,
        )
        self.next_task_id += 1
        state.used.add(worker)
        if not probation:
            state.in_flight += 1
        self.in_flight[worker] += 1
        self.assignments[task.task_id] = _Assignment(
            task, worker, time.monotonic() + self.deadline_s, probation
        )
        self._emit(
            ev.CHUNK_SCHEDULED, state.index, worker, {"task": task.task_id, "probation": probation}
        )
        try:
            future = self.cluster.submit(worker, task)
        except Exception as exc:  # the worker is gone before it took the task
            self._abort_if_closed(exc)
            future = Future()
            future.set_exception(exc)
        self.assignments[task.task_id].future = future
        future.add_done_callback(functools.partial(self._completed, task.task_id))

    def _completed(self, task_id: int, future: Future[WorkerReply]) -> None:
        """On whatever thread finished the future: hand it to the manager's loop."""
        self.completions.put((task_id, future))

    def _wait(self) -> None:
        now = time.monotonic()
        timeout = 0.25
        if self.assignments:
            timeout = min(
                timeout, max(0.0, min(a.deadline for a in self.assignments.values()) - now)
            )
        if self.pending:
            timeout = min(timeout, min(b.seconds_until_token() for b in self.buckets.values()))
        try:
            item = self.completions.get(timeout=max(timeout, 0.0005))
        except queue.Empty:
            item = None
        while item is not None:
            self._complete(*item)
            try:
                item = self.completions.get_nowait()
            except queue.Empty:
                item = None
        self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        for task_id in [t for t, a in self.assignments.items() if a.deadline <= now]:
            assignment = self.assignments.pop(task_id)
            self._release(assignment)
            self._worker_failed(
                assignment,
                f"stalled: no reply within {self.deadline_s:.1f} s",
                outcome="stalled",
            )

    # --- replies ---------------------------------------------------------------------------------

    def _release(self, assignment: _Assignment) -> None:
        self.in_flight[assignment.worker] -= 1
        if not assignment.probation:
            self.chunks[assignment.task.chunk].in_flight -= 1

    def _complete(self, task_id: int, future: Future[WorkerReply]) -> None:
        assignment = self.assignments.pop(task_id, None)
        if assignment is None:
            return  # a late reply from a worker already counted as stalled
        self._release(assignment)
        self._abort_if_closed(None)
        exc = CancelledError("the task was cancelled") if future.cancelled() else future.exception()
        if exc is not None:
            self._worker_failed(
                assignment,
                f"crashed: {type(exc).__name__}: {exc}",
                outcome="crashed",
                blame=self._first_loss(assignment.worker),
            )
            return
        reply = future.result()
        problem = self._check(assignment, reply)
        if problem is not None:
            self._reject(assignment, problem)
            return
        state = self.chunks[assignment.task.chunk]
        if reply.failed and reply.error_type in _WALL_CLOCK_ERRORS:
            # How long a task takes depends on the machine and its load, not on the chunk: a
            # timeout is no vote, and the chunk runs again elsewhere. The claim costs trust only
            # once another worker finishes the chunk within the same limits (refuted).
            self._worker_failed(
                assignment,
                f"timed out: {reply.error_type}: {reply.error_message}",
                outcome="timed out",
                blame=False,
            )
            state.timeouts.append(assignment.worker)
            self._refute_timeouts(state)
            return
        problem = self._decode(state, reply)
        if problem is not None:
            self._reject(assignment, problem)
            return
        digest = reply.outcome_digest.hex()
        self._emit(
            ev.CHUNK_DONE,
            state.index,
            assignment.worker,
            {"digest": digest, "fuel": reply.fuel_used, "wall_ms": reply.wall_ms},
        )
        state.replies[assignment.worker] = reply
        if assignment.probation and not state.decided:
            state.shadows.append(assignment.worker)  # compared once the chunk is decided
            return
        if assignment.probation or state.decided:
            self._settle(state, assignment.worker, assignment.probation)
            return
        state.votes.append((assignment.worker, digest))
        self._decide(state)

    def _reject(self, assignment: _Assignment, problem: str) -> None:
        """A reply that cannot be accepted: its sender loses trust, the chunk runs elsewhere."""
        self._emit(ev.CHUNK_REJECTED, assignment.task.chunk, assignment.worker, {"why": problem})
        self._worker_failed(assignment, f"rejected: {problem}", outcome="rejected")

    def _first_loss(self, worker: str) -> bool:
        """Whether this failure costs ``worker`` trust: a worker that left the cluster loses
        trust once for leaving, not once for every task it held (they all run elsewhere)."""
        if not self.cluster.has_left(worker):
            self.crashed.add(worker)
            return True
        if worker in self.departed:
            return False
        self.departed.add(worker)
        # Failures seen before its departure was known already cost it trust in this run.
        return worker not in self.crashed

    def _abort_if_closed(self, cause: BaseException | None) -> None:
        """The cluster was closed under the job: that is no worker's fault (no trust changes)."""
        if self.cluster.closed:
            raise ClusterError(
                f"the {type(self.cluster).__name__} was closed while job {self.plan.name!r} "
                "was running; run it again on an open cluster"
            ) from cause

    def _check(self, assignment: _Assignment, reply: object) -> str | None:
        """Why ``reply`` cannot be accepted from ``assignment.worker``, or None."""
        task = assignment.task
        if not isinstance(reply, WorkerReply):
            return f"reply is a {type(reply).__name__}, not a WorkerReply"
        if (reply.job_id, reply.task_id, reply.chunk) != (task.job_id, task.task_id, task.chunk):
            return (
                f"result for a chunk never assigned (claimed job {reply.job_id!r} task "
                f"{reply.task_id} chunk {reply.chunk}; assigned task {task.task_id} chunk "
                f"{task.chunk})"
            )
        message = result_message(
            reply.job_id,
            reply.task_id,
            reply.chunk,
            self.chunks[task.chunk].input_digest,
            self.code_digest,
            reply.outcome_digest,
        )
        try:
            verify_signature(self.keys[assignment.worker], reply.signature, message)
        except SignatureError as exc:
            return str(exc)
        if reply.failed:
            if reply.outcome_digest != error_digest(reply.error_type or ""):
                return "error outcome digest does not match the error type"
            return None
        if len(reply.output) > task.limits.max_output_bytes:
            return f"output of {len(reply.output)} bytes is over the output cap"
        actual = hashlib.sha256(reply.output).digest()
        if actual != reply.outcome_digest or actual.hex() != reply.output_sha256:
            return "output does not match its digest"
        return None

    def _decode(self, state: _Chunk, reply: WorkerReply) -> str | None:
        """Decode ``reply``'s output once per distinct outcome, on receipt; why it cannot be
        decoded (a typed rejection of that reply), or None. Output is untrusted: a lie shaped
        to break the decoder (deep nesting, a value bomb) costs its sender, never the job."""
        if reply.failed:
            return None
        digest = reply.outcome_digest.hex()
        if digest in state.decoded:
            return None
        try:
            state.decoded[digest] = self.kernel.decode(reply.output)
        except Exception as exc:  # anything a decoder raises on hostile bytes
            return f"output could not be decoded: {type(exc).__name__}: {str(exc)[:200]}"
        return None

    def _refute_timeouts(self, state: _Chunk) -> None:
        """Workers that claimed a timeout on a chunk now verified lose trust (once each)."""
        if state.status != "verified":
            return
        for worker in state.timeouts:
            self._trust(worker, False, state.index, TIMEOUT_REFUTED)
        state.timeouts.clear()

    def _decide(self, state: _Chunk) -> None:
        decision = quorum(state.votes, replicas=state.requested, max_replicas=self.max_replicas)
        if decision.status == "canonical":
            state.digest = decision.digest
            state.agreed, state.dissented = decision.agreed, decision.dissented
            reply = state.replies[decision.agreed[0]]
            state.status = "error" if reply.failed else "verified"
            if reply.failed:
                state.reason = f"{reply.error_type}: {reply.error_message}"
            self._finish(state)
            self._keep(state)
            self._refute_timeouts(state)
            for worker in decision.agreed:
                self._record_reply(state.index, worker, state.replies[worker], "agreed")
                if self.mode == "redundancy":  # only agreement with peers earns trust
                    self._trust(worker, True, state.index, None)
            for worker in decision.dissented:
                self._record_reply(state.index, worker, state.replies[worker], "dissented")
                self._trust(worker, False, state.index, DISSENT)
            kind = ev.CHUNK_VERIFIED if state.status == "verified" else ev.CHUNK_FAILED
            self._emit(
                kind,
                state.index,
                None,
                {
                    "digest": state.digest,
                    "agreed": decision.agreed,
                    "dissented": decision.dissented,
                    "error": state.reason,
                },
            )
        elif decision.status == "need_more":
            if len(decision.groups) > 1:
                self._emit(
                    ev.CHUNK_DISAGREED,
                    state.index,
                    None,
                    {"groups": [(d, list(w)) for d, w in decision.groups]},
                )
            self._enqueue(state, max(0, decision.extra_needed - state.in_flight - state.queued))
        elif state.in_flight:
            return  # undecidable, but replies in flight are evidence: fail once they are in
        else:
            bound = "max_replicas" if self.plan.verification.max_replicas else "every worker"
            self._fail_undecided(
                state,
                f"; even {self.max_replicas} replicas ({bound}) could not decide it: add "
                "workers or lower replicas",
            )

    def _worker_failed(
        self, assignment: _Assignment, reason: str, *, outcome: TaskOutcome, blame: bool = True
    ) -> None:
        state = self.chunks[assignment.task.chunk]
        self._emit(ev.CHUNK_FAILED_ON_WORKER, state.index, assignment.worker, {"why": reason})
        self.records.append(
            TaskRecord(
                chunk=state.index,
                task=assignment.task.task_id,
                worker=assignment.worker,
                worker_id=self.ids[assignment.worker],
                role="probation" if assignment.probation else "replica",
                digest=None,
                outcome=outcome,
                reason=reason,
            )
        )
        if blame:
            self._trust(assignment.worker, False, state.index, reason)
        if assignment.probation or state.decided:
            return
        state.failures.append(f"{assignment.worker} {reason}")
        if len(state.failures) > self.plan.retries:
            self._fail(
                state,
                f"gave up after {len(state.failures)} failed tries: {'; '.join(state.failures)}",
            )
        else:
            self._enqueue(state)

    def _fail(self, state: _Chunk, reason: str) -> None:
        state.status, state.reason = "failed", reason
        self._finish(state)
        self._emit(ev.CHUNK_FAILED, state.index, None, {"error": reason})

    def _finish(self, state: _Chunk) -> None:
        self.active.pop(state.index, None)
        if state.status != "verified" and self.plan.on_error == "fail" and not self.stopped_by:
            self.stopped_by = state
        for worker in state.shadows:
            self._settle(state, worker, probation=True)
        state.shadows.clear()

    def _settle(self, state: _Chunk, worker: str, probation: bool) -> None:
        """A reply that does not vote (a probation shadow, or one arriving after the decision)
        is compared with the decided outcome. A probation reply always earns or loses trust;
        a late replica only under redundancy (elsewhere there is no quorum to agree with)."""
        reply = state.replies[worker]
        if state.digest is None:
            self._record_reply(state.index, worker, reply, "failed", probation)
            return
        agreed = reply.outcome_digest.hex() == state.digest
        self._record_reply(
            state.index, worker, reply, "agreed" if agreed else "dissented", probation
        )
        if probation or self.mode == "redundancy":
            reason = None if agreed else DISSENT
            self._trust(worker, agreed, state.index, reason)

    def _fail_undecided(self, state: _Chunk, why: str) -> None:
        """Replicas ran but no outcome decided: every vote is kept as a failed row, the digests
        and who returned them go into the reason, and nobody's trust changes (there is no
        majority to say who lied)."""
        for worker, _digest in state.votes:
            self._record_reply(state.index, worker, state.replies[worker], "failed")
        groups = quorum(
            state.votes, replicas=state.requested, max_replicas=self.max_replicas
        ).groups
        shown = "; ".join(f"{d[:12]} from {', '.join(w)}" for d, w in groups)
        self._fail(
            state,
            f"no outcome has {state.requested} agreeing replicas and a strict majority of the "
            f"{len(state.votes)} replies ({shown}){why}",
        )

    def _out_of_workers(self, state: _Chunk) -> None:
        """No worker is left that has not run ``state``, and nothing of it is in flight."""
        quarantined = len(self.quarantined)
        tried = f" [failed tries: {'; '.join(state.failures)}]" if state.failures else ""
        usable = f"all {len(self.names) - quarantined} usable workers ({quarantined} quarantined)"
        if state.votes:  # replicas disagreed and nobody is left to break the tie
            self._fail_undecided(state, f"{tried}; {usable} have run it: add workers")
        elif state.failures:
            self._fail(state, f"{usable} failed on this chunk{tried}")
        else:
            self._fail(state, f"{usable} are too few for this chunk: add workers or lower replicas")

    # --- trust and records -----------------------------------------------------------------------

    def _trust(self, worker: str, ok: bool, chunk: int, reason: str | None) -> None:
        state = self.policy.update(
            self.ids[worker], ok, job=self.job_id, chunk=chunk, reason=reason, label=worker
        )
        self._emit(
            ev.TRUST_UPDATED,
            chunk,
            worker,
            {"score": state.score, "ok": ok, "dissent": reason == DISSENT},
        )
        if state.quarantined and worker not in self.quarantined:
            self.quarantined.add(worker)
            self._emit(ev.WORKER_QUARANTINED, chunk, worker, {"score": state.score})
        elif not state.quarantined:
            self.quarantined.discard(worker)

    def _record_reply(
        self,
        chunk: int,
        worker: str,
        reply: WorkerReply,
        outcome: TaskOutcome,
        probation: bool = False,
    ) -> None:
        self.records.append(
            TaskRecord(
                chunk=chunk,
                task=reply.task_id,
                worker=worker,
                worker_id=self.ids[worker],
                role="probation" if probation else "replica",
                digest=reply.outcome_digest.hex(),
                outcome=outcome,
                reason=reply.error_type,
                fuel=reply.fuel_used,
                wall_ms=reply.wall_ms,
            )
        )

    def _emit(
        self,
        kind: str,
        chunk: int | None = None,
        worker: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.events.emit(Event(kind, self.job_id, chunk, worker, data or {}))

    # --- the result ------------------------------------------------------------------------------

    def _result(self, started: float, finished: float, trust_before: ScoreRows) -> JobResult:
        outcomes: list[ChunkOutcome] = []
        partials: list[Any] = []
        leaves: list[bytes] = []
        # Per chunk, who voted what, as the verification table shows it (late replies included).
        voters: dict[int, dict[str, list[str]]] = {}
        for record in self.records:
            if record.role == "replica" and record.outcome in ("agreed", "dissented", "failed"):
                votes = voters.setdefault(record.chunk, {"agreed": [], "dissented": [], "all": []})
                votes["all"].append(record.worker)
                if record.outcome != "failed":
                    votes[record.outcome].append(record.worker)
        for index in sorted(self.chunks):
            state = self.chunks[index]
            reply = state.replies.get(state.agreed[0]) if state.agreed else None
            if state.status == "verified" and state.digest is not None:
                partials.append(state.decoded[state.digest])  # decoded when it arrived
            outcome_digest = bytes.fromhex(state.digest) if state.digest else _NO_DIGEST
            leaves.append(chunk_record(index, state.input_digest, outcome_digest))
            votes = voters.get(index, {"agreed": [], "dissented": [], "all": []})
            if state.cached is not None:
                outcomes.append(state.cached.as_chunk(index, state.input_digest))
                continue
            outcomes.append(
                ChunkOutcome(
                    index=index,
                    status=state.status,
                    workers=tuple(votes["agreed"]),
                    dissenters=tuple(votes["dissented"]),
                    digest=state.digest,
                    input_digest=state.input_digest.hex(),
                    replicas=len(votes["all"]),
                    requested=state.requested,
                    fuel=reply.fuel_used if reply else 0,
                    wall_ms=reply.wall_ms if reply else 0.0,
                    reason=state.reason,
                    stdout=reply.stdout if reply else b"",
                    attestations=self._attestations(state),
                    cached=state.cached is not None,
                )
            )
        result = JobResult(
            name=self.plan.name,
            job_id=self.job_id,
            value=None,
            outcomes=tuple(outcomes),
            tasks=tuple(self.records),
            leaves=tuple(leaves),
            mode=self.mode,
            replicas=self.replicas,
            trust_rows_before=trust_before,
            trust_rows=self.cluster.ledger.score_rows(),
            started=started,
            finished=finished,
            workers=tuple(self.names),
            chunking=self.plan.chunking,
            kernel_name=self.kernel.name,
            kernel_digest=self.kernel.digest,
            kernel_params=dict(self.kernel.params),
            limits=self.limits,
            execution=self.kernel.execution_spec(),
            input_cut=describe_cut(
                self.plan.source.input, self.plan.source.input_kind, self.plan.source.splitter
            ),
        )
        try:
            value = self.kernel.combine(partials) if partials else self.kernel.empty()
        except Exception as exc:  # a user's combine (trusted side) failed: keep the evidence
            raise JobError(
                f"job {self.plan.name!r}: combining the {len(partials)} chunk results failed: "
                f"{type(exc).__name__}: {exc}; the verified chunks are on this exception as "
                ".result (its value is None): fix the combine function and combine them again",
                result=result,
            ) from exc
        return dataclasses.replace(result, value=value, note=self.kernel.note(value))
