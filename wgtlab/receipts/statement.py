"""A JobResult as an in-toto Statement v1 with wgtlab's predicate, and the predicate read back
strictly (``Evidence``), every field checked for type and shape before a verifier uses it.

The subject is the result, named by its job id, with the SHA-256 of the result's canonical bytes,
the *result head* (``result_head``): a domain tag, the job id, the tree size and the root of the
RFC 6962 tree over the chunk records. The records commit to every chunk's input and outcome
digests, so the head names exactly which outputs each chunk of which input produced; the value
is the kernel's combination of those outputs, done on the trusted side.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from wgtlab.cluster.identity import fingerprint
from wgtlab.errors import ReceiptError
from wgtlab.sandbox.kernels.base import ExecutionSpec
from wgtlab.verify import merkle_root
from wgtlab.verify.records import RECORD_VERSION

if TYPE_CHECKING:
    from wgtlab.jobs.result import JobResult
    from wgtlab.receipts.identity import Identity

__all__ = [
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "AttestationEntry",
    "ChunkEntry",
    "Evidence",
    "WorkerEntry",
    "build_statement",
    "canonical_json",
    "result_digest",
    "result_head",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: wgtlab's predicate, version 1 (README, "Receipts"); a new version gets a new URI
PREDICATE_TYPE = "https://wgtlab.dev/attestations/job-result/v1"
_HEAD_DOMAIN = b"wgtlab-result-v1\x00"
_REASON_CHARS = 500  # a failed chunk's reason, as the receipt keeps it
_VALUE_CHARS = 300  # the value's repr, for people (the records are the evidence)


def result_head(job_id: str, tree_size: int, output_root: bytes) -> bytes:
    """The result's canonical bytes: ``b"wgtlab-result-v1\\0"``, the job id's UTF-8 length
    (4 bytes, big-endian) and bytes, the tree size (8 bytes, big-endian), the 32-byte root."""
    job = job_id.encode("utf-8")
    size = struct.pack(">Q", tree_size)
    return _HEAD_DOMAIN + struct.pack(">I", len(job)) + job + size + output_root


def result_digest(result: JobResult) -> str:
    """The receipt subject's sha256 for ``result`` (hex)."""
    head = result_head(result.job_id, result.tree_size, bytes.fromhex(result.merkle_root))
    return hashlib.sha256(head).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, ASCII, no NaN: the payload's one serialisation."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


# --- building ------------------------------------------------------------------------------------


def build_statement(result: JobResult, signer: Identity) -> dict[str, Any]:
    """The in-toto Statement of ``result`` (see README, "Receipts", for every field)."""
    ids = _worker_ids(result)
    spec = result.execution
    predicate = {
        "wgtlab": {"version": _version("wgtlab"), "wasmtime": _version("wasmtime")},
        "job": {
            "name": result.name,
            "id": result.job_id,
            "started": _time(result.started),
            "finished": _time(result.finished),
        },
        "kernel": {
            "name": result.kernel_name,
            "digest": result.kernel_digest,
            "params": _plain(dict(result.kernel_params)),
            "code": None
            if spec is None
            else {
                "kind": spec.kind,
                "name": spec.name,
                "digest": spec.digest,
                "base64": base64.b64encode(spec.code).decode("ascii"),
            },
        },
        "limits": None if result.limits is None else asdict(result.limits),
        "verification": {"mode": result.mode, "replicas": result.replicas},
        "input": {
            "chunks": len(result.outcomes),
            "root": merkle_root(bytes.fromhex(c.input_digest) for c in result.outcomes).hex(),
            "dataset_id": result.input_cut.get("dataset_id"),
            "cut": _plain(dict(result.input_cut)),
        },
        "output": {
            "root": result.merkle_root,
            "tree_size": result.tree_size,
            "record_version": RECORD_VERSION,
        },
        "workers": {
            worker_id: {"name": name, "public_key": key.hex()}
            for worker_id, (name, key) in sorted(ids.items())
        },
        "chunks": [_chunk(result, c) for c in result.outcomes],
        "trust": _trust(result, set(ids) | {t.worker_id for t in result.tasks}),
        "result": {
            "ok": result.ok,
            "assurance": result.assurance,
            "value": repr(result.value)[:_VALUE_CHARS],
        },
        "signer": {"keyid": signer.fingerprint, "public_key": signer.public_bytes.hex()},
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": result.job_id, "digest": {"sha256": result_digest(result)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def _worker_ids(result: JobResult) -> dict[str, tuple[str, bytes]]:
    """fingerprint -> (name, raw public key) of every worker whose signature the receipt holds."""
    return {a.worker_id: (a.worker, a.public_key) for c in result.outcomes for a in c.attestations}


def _chunk(result: JobResult, c: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": c.index,
        "status": c.status,
        "input_digest": c.input_digest,
        "digest": c.digest,
        "requested": c.requested,
        "attestations": [
            {
                "worker": a.worker_id,
                "task": a.task,
                "sig": base64.b64encode(a.signature).decode("ascii"),
                # what the signature names, where it is not this job and chunk (an outcome
                # kept from an earlier run)
                **({"job_id": a.job_id} if a.job_id not in (None, result.job_id) else {}),
                **({"chunk": a.chunk} if a.chunk not in (None, c.index) else {}),
            }
            for a in c.attestations
        ],
    }
    if c.status != "verified":
        entry["reason"] = (c.reason or "")[:_REASON_CHARS]
    return entry


def _trust(result: JobResult, worker_ids: set[str]) -> list[dict[str, Any]]:
    def scores(frame: Any) -> dict[str, tuple[str, float, bool]]:
        return {
            str(r.worker): (str(r.label or ""), float(r.score), bool(r.quarantined))
            for r in frame.itertuples(index=False)
            if r.worker in worker_ids
        }

    before, after = scores(result.trust_before), scores(result.trust)
    return [
        {
            "worker": worker_id,
            "name": after[worker_id][0],
            "before": before[worker_id][1] if worker_id in before else None,
            "after": after[worker_id][1],
            "quarantined": after[worker_id][2],
        }
        for worker_id in sorted(after)
    ]


def _time(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, timezone.utc)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _plain(value: Any) -> Any:
    """``value`` in JSON's terms: numpy scalars as Python numbers, tuples as lists, keys as
    strings, non-finite floats as strings ("nan", "inf"), anything else as its repr."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


# --- reading back --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerEntry:
    worker_id: str
    name: str
    public_key: bytes


@dataclass(frozen=True)
class AttestationEntry:
    worker_id: str
    task: int
    signature: bytes
    job_id: str  # the job the signature names
    chunk: int  # the chunk the signature names


@dataclass(frozen=True)
class ChunkEntry:
    index: int
    status: str
    input_digest: bytes
    digest: bytes | None
    requested: int
    attestations: tuple[AttestationEntry, ...]
    reason: str


@dataclass(frozen=True)
class Evidence:
    """A receipt's statement, read and checked for shape (not yet for truth: that is
    ``checks.verify``'s)."""

    subject_name: str
    subject_digest: str
    job_name: str
    job_id: str
    started: str
    finished: str
    versions: Mapping[str, str]
    kernel_name: str
    kernel_digest: str
    kernel_params: Mapping[str, Any]
    code: ExecutionSpec | None
    code_digest: str  # as recorded (the spec's own is recomputed from the bytes)
    limits: Mapping[str, int] | None
    mode: str
    replicas: int
    input_chunks: int
    input_root: bytes
    dataset_id: str | None
    cut: Mapping[str, Any]
    output_root: bytes
    tree_size: int
    workers: Mapping[str, WorkerEntry]
    chunks: tuple[ChunkEntry, ...]
    trust: tuple[Mapping[str, Any], ...]
    result: Mapping[str, Any]
    signer_keyid: str
    signer_key: bytes

    @classmethod
    def read(cls, statement: object) -> Evidence:
        """Read an in-toto Statement with wgtlab's predicate; a ReceiptError names the first
        field that is missing or malformed."""
        top = _Fields(statement, "statement")
        if top.string("_type") != STATEMENT_TYPE:
            raise ReceiptError(f"statement._type is not {STATEMENT_TYPE}")
        if top.string("predicateType") != PREDICATE_TYPE:
            raise ReceiptError(
                f"statement.predicateType is {top.string('predicateType')[:80]!r}, not "
                f"{PREDICATE_TYPE} (a predicate this wgtlab reads)"
            )
        subjects = top.array("subject")
        if len(subjects) != 1:
            raise ReceiptError(f"statement.subject holds {len(subjects)} subjects, not 1")
        subject = _Fields(subjects[0], "statement.subject[0]")
        digest = _Fields(subject.get("digest"), "statement.subject[0].digest").hexed("sha256", 32)
        p = _Fields(top.get("predicate"), "predicate")
        job, kernel = p.sub("job"), p.sub("kernel")
        verification, given, output = p.sub("verification"), p.sub("input"), p.sub("output")
        code_fields = kernel.get("code")
        code, code_digest = None, ""
        if code_fields is not None:
            c = _Fields(code_fields, "predicate.kernel.code")
            raw = c.b64("base64")
            code_digest = c.hexed("digest", 32).hex()
            code = ExecutionSpec.of(c.string("kind"), raw, c.string("name"))
        limits = p.get("limits")
        if limits is not None:
            lf = _Fields(limits, "predicate.limits")
            limits = {k: lf.whole(k) for k in lf.names()}
        workers = {}
        wf = p.sub("workers")
        for worker_id in wf.names():
            w = wf.sub(worker_id)
            workers[worker_id] = WorkerEntry(worker_id, w.string("name"), w.hexed("public_key", 32))
        signer = p.sub("signer")
        chunks = tuple(
            _chunk_entry(_Fields(entry, f"predicate.chunks[{i}]"), job.string("id"))
            for i, entry in enumerate(p.array("chunks"))
        )
        dataset_id = given.get("dataset_id")
        if dataset_id is not None and not isinstance(dataset_id, str):
            raise ReceiptError("predicate.input.dataset_id is not a string")
        return cls(
            subject_name=subject.string("name"),
            subject_digest=digest.hex(),
            job_name=job.string("name"),
            job_id=job.string("id"),
            started=job.string("started"),
            finished=job.string("finished"),
            versions={k: str(v) for k, v in p.sub("wgtlab").items()},
            kernel_name=kernel.string("name"),
            kernel_digest=kernel.string("digest"),
            kernel_params=kernel.sub("params").mapping,
            code=code,
            code_digest=code_digest,
            limits=limits,
            mode=verification.string("mode"),
            replicas=verification.whole("replicas"),
            input_chunks=given.whole("chunks"),
            input_root=given.hexed("root", 32),
            dataset_id=dataset_id,
            cut=given.sub("cut").mapping,
            output_root=output.hexed("root", 32),
            tree_size=output.whole("tree_size"),
            workers=workers,
            chunks=chunks,
            trust=tuple(
                _Fields(t, f"predicate.trust[{i}]").mapping for i, t in enumerate(p.array("trust"))
            ),
            result=p.sub("result").mapping,
            signer_keyid=signer.string("keyid"),
            signer_key=signer.hexed("public_key", 32),
        )

    @property
    def signer_fingerprint(self) -> str:
        return fingerprint(self.signer_key)


def _chunk_entry(c: _Fields, job_id: str) -> ChunkEntry:
    index = c.whole("index")
    digest = c.get("digest")
    attestations = []
    for i, entry in enumerate(c.array("attestations")):
        a = _Fields(entry, f"{c.path}.attestations[{i}]")
        signed_job = a.get("job_id", job_id)
        if not isinstance(signed_job, str):
            raise ReceiptError(f"{a.path}.job_id is not a string")
        attestations.append(
            AttestationEntry(
                worker_id=a.string("worker"),
                task=a.whole("task"),
                signature=a.b64("sig"),
                job_id=signed_job,
                chunk=a.whole("chunk") if "chunk" in a.mapping else index,
            )
        )
    reason = c.get("reason", "")
    return ChunkEntry(
        index=index,
        status=c.string("status"),
        input_digest=c.hexed("input_digest", 32),
        digest=None if digest is None else c.hexed("digest", 32),
        requested=c.whole("requested"),
        attestations=tuple(attestations),
        reason=reason if isinstance(reason, str) else repr(reason),
    )


class _Fields:
    """A JSON object being read: each accessor checks the field's type and names its path."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, Mapping):
            raise ReceiptError(f"{path} is not a JSON object")
        self.mapping: Mapping[str, Any] = value
        self.path = path

    def names(self) -> list[str]:
        return list(self.mapping)

    def items(self) -> list[tuple[str, Any]]:
        return list(self.mapping.items())

    def get(self, key: str, default: Any = None) -> Any:
        return self.mapping.get(key, default)

    def _need(self, key: str) -> Any:
        if key not in self.mapping:
            raise ReceiptError(f"{self.path}.{key} is missing")
        return self.mapping[key]

    def sub(self, key: str) -> _Fields:
        return _Fields(self._need(key), f"{self.path}.{key}")

    def string(self, key: str) -> str:
        value = self._need(key)
        if not isinstance(value, str):
            raise ReceiptError(f"{self.path}.{key} is not a string")
        return value

    def whole(self, key: str) -> int:
        value = self._need(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ReceiptError(f"{self.path}.{key} is not a whole number")
        return value

    def array(self, key: str) -> Sequence[Any]:
        value = self._need(key)
        if not isinstance(value, list):
            raise ReceiptError(f"{self.path}.{key} is not a list")
        return value

    def hexed(self, key: str, size: int) -> bytes:
        value = self.string(key)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ReceiptError(f"{self.path}.{key} is not hex") from None
        if len(raw) != size or value != raw.hex():
            raise ReceiptError(
                f"{self.path}.{key} is not {2 * size} lowercase hex characters ({size} bytes)"
            )
        return raw

    def b64(self, key: str) -> bytes:
        value = self.string(key)
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raise ReceiptError(f"{self.path}.{key} is not base64") from None
        if base64.b64encode(raw).decode("ascii") != value:
            raise ReceiptError(f"{self.path}.{key} is not base64 in its canonical form")
        return raw
