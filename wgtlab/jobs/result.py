"""``JobResult``: a job's value with the evidence for it: per-chunk outcomes, every task's
verdict, the RFC 6962 Merkle root over canonical chunk records, proofs, and trust after the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from wgtlab.errors import ConfigError, ProofError
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.trust.ledger import ScoreRows, scores_frame
from wgtlab.verify import MerkleTree, parse_chunk_record, verify_proof

if TYPE_CHECKING:
    import pandas as pd

    from wgtlab.receipts import Receipt
    from wgtlab.sandbox.kernels.base import ExecutionSpec

#: how a chunk ended (``running`` only while the job runs)
ChunkStatus = Literal["running", "verified", "error", "failed"]
#: one task's verdict (see ``TaskRecord``)
TaskOutcome = Literal[
    "agreed", "dissented", "failed", "rejected", "crashed", "stalled", "timed out"
]
#: a task that votes, or a quarantined worker's shadow copy that never does
TaskRole = Literal["replica", "probation"]

_HTML_CHUNK_ROWS = 20  # chunks listed in the notebook view; the rest are counted
_TEMPLATES = "wgtlab.jobs.templates"


@dataclass(frozen=True)
class Attestation:
    """One worker's signed word on a chunk: its Ed25519 ``signature`` over
    ``result_message(job_id, task, chunk, input digest, code digest, outcome digest)``,
    checkable with ``public_key``
    (raw 32 bytes) by anyone, without trusting whoever ran the job."""

    worker: str
    worker_id: str  # the fingerprint of ``public_key``
    public_key: bytes
    task: int
    signature: bytes
    # What the signature names when it is not this result's job and chunk (an outcome kept
    # from an earlier run): receipts carry it so the signature stays checkable.
    job_id: str | None = None
    chunk: int | None = None


@dataclass(frozen=True)
class ChunkOutcome:
    """How one chunk ended: ``verified``, ``error`` (the kernel failed, agreed by the quorum)
    or ``failed`` (no verified outcome: disagreement, crashes, no workers)."""

    index: int
    status: ChunkStatus
    workers: tuple[str, ...]  # the workers whose outcome is canonical
    dissenters: tuple[str, ...]
    digest: str | None  # canonical outcome digest (hex)
    input_digest: str
    replicas: int  # replica replies that voted (the verification table's agreed, dissented
    #                and failed rows of this chunk)
    fuel: int
    wall_ms: float
    reason: str | None = None
    stdout: bytes = b""
    requested: int = 1  # replicas asked for: the job's, or 1 when spot checking trusted a worker
    attestations: tuple[Attestation, ...] = ()  # of the workers whose outcome is canonical
    cached: bool = False  # decided from the verified-result cache, not run again


@dataclass(frozen=True)
class TaskRecord:
    """One task's verdict: ``agreed``, ``dissented``, ``failed`` (no quorum), ``rejected``
    (bad digest, signature or assignment), ``crashed``, ``stalled`` (no reply in time), or
    ``timed out`` (the sandbox's wall-clock limit: never a vote, never a loss of trust)."""

    chunk: int
    task: int
    worker: str
    worker_id: str
    role: TaskRole
    digest: str | None
    outcome: TaskOutcome
    reason: str | None = None
    fuel: int = 0
    wall_ms: float = 0.0


@dataclass(frozen=True)
class ChunkProof:
    """A chunk's leaf and audit path; check it with ``wgt.verify.verify_proof(p.leaf, p.index,
    p.tree_size, p.path, p.root)`` or ``p.verify()``."""

    leaf: bytes
    index: int
    tree_size: int
    path: tuple[bytes, ...]
    root: bytes

    def verify(self) -> bool:
        return verify_proof(self.leaf, self.index, self.tree_size, list(self.path), self.root)

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf": self.leaf.hex(),
            "index": self.index,
            "tree_size": self.tree_size,
            "path": [p.hex() for p in self.path],
            "root": self.root.hex(),
        }


@dataclass(frozen=True)
class JobResult:
    """What a job produced and why it can be believed."""

    name: str
    job_id: str
    value: Any
    outcomes: tuple[ChunkOutcome, ...]
    tasks: tuple[TaskRecord, ...]
    leaves: tuple[bytes, ...]  # canonical chunk records, the Merkle tree's leaves
    mode: str
    replicas: int
    trust_rows_before: ScoreRows  # TrustLedger.score_rows() before the run (see trust_before)
    trust_rows: ScoreRows  # and after it (see trust)
    started: float
    finished: float
    workers: tuple[str, ...] = field(default=())
    note: str = ""  # what the kernel says about the value (e.g. values outside a range)
    kernel_name: str = ""
    kernel_digest: str = ""  # sha256 of the code that ran (module or UDF program)
    kernel_params: Mapping[str, Any] = field(default_factory=dict)
    limits: ResourceLimits | None = None
    chunking: str = ""  # how chunk sizes were chosen, when the kernel chose them
    # For receipts, so a verifier can cut the same data again and re-run chunks without the
    # notebook: the code that ran, as a worker rebuilds it, and how the input was cut
    # (``wgtlab.jobs.chunking.describe_cut``).
    execution: ExecutionSpec | None = None
    input_cut: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def trust_before(self) -> pd.DataFrame:
        """Trust scores before the run (``TrustLedger.scores()``)."""
        return scores_frame(self.trust_rows_before)

    @cached_property
    def trust(self) -> pd.DataFrame:
        """Trust scores after the run."""
        return scores_frame(self.trust_rows)

    # --- summary ---------------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return all(c.status == "verified" for c in self.outcomes)

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def disagreements(self) -> int:
        """Tasks whose outcome dissented from the quorum (lies caught)."""
        return sum(1 for t in self.tasks if t.outcome == "dissented")

    # --- tables ----------------------------------------------------------------------------------

    @property
    def chunks(self) -> Any:
        """One row per chunk: chunk, status, workers, digest, agreed, replicas, fuel, wall ms,
        error, and whether it came from the verified-result cache."""
        import pandas as pd

        rows = [
            {
                "chunk": c.index,
                "status": c.status,
                "workers": ", ".join(c.workers),
                "digest": c.digest,
                "agreed": c.status == "verified",
                "replicas": c.replicas,
                "dissenters": ", ".join(c.dissenters),
                "fuel": c.fuel,
                "wall_ms": c.wall_ms,
                "error": c.reason,
                "cached": c.cached,
            }
            for c in self.outcomes
        ]
        columns = ["chunk", "status", "workers", "digest", "agreed", "replicas", "dissenters"]
        return pd.DataFrame(rows, columns=[*columns, "fuel", "wall_ms", "error", "cached"])

    @property
    def verification(self) -> Any:
        """One row per task: chunk, task, worker, worker id, role, digest, outcome, reason, fuel,
        wall ms."""
        import pandas as pd

        columns = [
            "chunk",
            "task",
            "worker",
            "worker_id",
            "role",
            "digest",
            "outcome",
            "reason",
            "fuel",
            "wall_ms",
        ]
        frame = pd.DataFrame([asdict(t) for t in self.tasks], columns=columns)
        return frame.sort_values(["chunk", "task"], kind="stable").reset_index(drop=True)

    # --- proofs ----------------------------------------------------------------------------------

    @cached_property
    def tree(self) -> MerkleTree:
        return MerkleTree(self.leaves)

    @property
    def merkle_root(self) -> str:
        """Hex root of the RFC 6962 tree over canonical chunk records (publish it with
        ``tree_size``: a proof alone does not bind the size)."""
        return self.tree.root.hex()

    @property
    def tree_size(self) -> int:
        return len(self.leaves)

    def proof(self, index: int) -> ChunkProof:
        """The audit path of chunk ``index``."""
        if not isinstance(index, int) or not 0 <= index < len(self.leaves):
            raise ProofError(f"chunk {index!r} is not in this result (0..{len(self.leaves) - 1})")
        proof = self.tree.proof(index)
        return ChunkProof(
            self.leaves[index], index, len(self.leaves), tuple(proof.path), self.tree.root
        )

    def record(self, index: int) -> Any:
        """The decoded canonical chunk record of chunk ``index``."""
        return parse_chunk_record(self.leaves[index])

    # --- export ----------------------------------------------------------------------------------

    def receipt(self, identity: Any = None) -> Receipt:
        """This result's signed receipt, a ``wgt.Receipt`` (the same as
        ``wgt.Receipt.from_result(result)``): an in-toto Statement in a DSSE envelope, signed
        with the user's identity key, or with ``identity`` (an Ed25519 private key)."""
        from wgtlab.jobs import runtime

        if runtime.receipt_factory is None:  # installed by ``import wgtlab``
            raise ConfigError("receipts are made by wgtlab's receipts layer: import wgtlab")
        return runtime.receipt_factory(self, identity)

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if hasattr(value, "tolist"):
            value = value.tolist()
        elif isinstance(value, bytes):
            value = value.hex()
        return {
            "name": self.name,
            "job_id": self.job_id,
            "ok": self.ok,
            "value": value,
            "mode": self.mode,
            "replicas": self.replicas,
            "merkle_root": self.merkle_root,
            "tree_size": self.tree_size,
            "seconds": self.seconds,
            "note": self.note,
            "chunking": self.chunking,
            "assurance": self.assurance,
            "chunks": [
                {
                    **{k: v for k, v in asdict(c).items() if k not in ("stdout", "attestations")},
                    "attestations": [
                        {
                            **asdict(a),
                            "public_key": a.public_key.hex(),
                            "signature": a.signature.hex(),
                        }
                        for a in c.attestations
                    ],
                }
                for c in self.outcomes
            ],
            "tasks": [asdict(t) for t in self.tasks],
        }

    def to_json(self, **kwargs: Any) -> str:
        """Standard JSON (no NaN or Infinity tokens: those become null)."""
        return json.dumps(_finite(self.to_dict()), default=str, allow_nan=False, **kwargs)

    @property
    def spot_checked(self) -> int:
        """Verified chunks accepted on one trusted worker's word because the job asked for
        spot checking (``verify("redundancy", replicas=N, spot_check=p)``); 0 without it."""
        if self.mode != "redundancy":
            return 0
        return sum(
            1 for c in self.outcomes if c.status == "verified" and c.requested < self.replicas
        )

    @property
    def assurance(self) -> str:
        """One line: what was checked, and what it would take for a wrong answer to pass."""
        total = len(self.outcomes)
        verified = sum(1 for c in self.outcomes if c.status == "verified")
        failed = total - verified
        kept = sum(1 for c in self.outcomes if c.cached)
        unverified = f"; {failed} not verified" if failed else ""
        unverified += f"; {kept} from the verified-result cache" if kept else ""
        if self.mode != "redundancy":
            committed = (
                f", committed to Merkle root {self.merkle_root[:16]}... (size {self.tree_size})"
                if self.mode == "merkle"
                else ""
            )
            return (
                f"{verified}/{total} chunks verified by hash on one worker each{committed}"
                f"{unverified}; digests and signatures checked, but a worker that lies "
                "consistently is caught only by verify('redundancy')"
            )
        spot = self.spot_checked
        resolved = sum(1 for c in self.outcomes if c.status == "verified" and c.dissenters)
        if not spot:
            return (
                f"{verified}/{total} chunks agreed by {self.replicas} workers (0 spot-checked)"
                f"{unverified}; {resolved} disagreements resolved; 0 wrong answers possible "
                f"unless {self.replicas} workers collude"
            )
        return (
            f"{verified}/{total} chunks verified: {verified - spot} agreed by {self.replicas} "
            f"workers, {spot} spot-checked (each accepted on one trusted worker's word)"
            f"{unverified}; {resolved} disagreements resolved; a wrong answer needs "
            f"{self.replicas} colluding workers, or one lying worker on a spot-checked chunk"
        )

    def __repr__(self) -> str:
        verified = sum(1 for c in self.outcomes if c.status == "verified")
        spot = f", spot_checked={self.spot_checked}" if self.spot_checked else ""
        note = f", note={self.note!r}" if self.note else ""
        return (
            f"JobResult({self.name!r}, {verified}/{len(self.outcomes)} chunks verified, "
            f"mode={self.mode!r}, disagreements={self.disagreements}{spot}, "
            f"root={self.merkle_root[:16]}...{note})"
        )

    def _repr_html_(self) -> str:
        from wgtlab.views import badge, escape, render

        verified = sum(1 for c in self.outcomes if c.status == "verified")
        failed = len(self.outcomes) - verified
        shown = self.outcomes[:_HTML_CHUNK_ROWS]
        rows = "".join(
            render(
                "job_result_chunk.html",
                _TEMPLATES,
                index=c.index,
                status=escape(c.status),
                agreed=escape(", ".join(c.workers)),
                dissented=escape(", ".join(c.dissenters)),
                digest=escape(c.digest or "-", 17),
                reason=escape(c.reason or "", 80),
            )
            for c in shown
        )
        hidden = len(self.outcomes) - len(shown)
        return render(
            "job_result.html",
            _TEMPLATES,
            name=escape(self.name),
            status=badge("verified", "ok") if self.ok else badge(f"{failed} not verified", "bad"),
            verified=verified,
            total=len(self.outcomes),
            mode=escape(self.mode),
            replicas=self.replicas,
            disagreements=self.disagreements,
            workers=len(self.workers),
            seconds=f"{self.seconds:.2f}",
            root=self.merkle_root,
            root_short=self.merkle_root[:16] + "…",
            tree_size=self.tree_size,
            value=escape(repr(self.value), 300),
            note=f"<div>{escape(self.note)}</div>" if self.note else "",
            chunking=escape(self.chunking),
            assurance=escape(self.assurance),
            chunk_rows=rows,
            more_chunks=f"<div class='wgt-dim'>… and {hidden} more chunks</div>" if hidden else "",
        )


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, for standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
