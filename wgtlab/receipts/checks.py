"""Verifying a receipt: each check a row of a ``ReceiptReport``, every failure named.

Without data: the envelope, its signature (by a pinned key, or the one the receipt names), the
statement's shape, the subject, the code's digest, the chunk records, both Merkle roots, every
worker's signature and quorum, and whether every chunk verified. With the data the job read:
its input digests, recomputed; and an audit re-runs chunks in the local sandbox and compares
their outcome digests with the receipt's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab.cluster.identity import fingerprint, result_message, verify_signature
from wgtlab.errors import ConfigError, ReceiptError, SignatureError, WgtError
from wgtlab.receipts.dsse import PAYLOAD_TYPE, Envelope
from wgtlab.receipts.identity import load_public_key
from wgtlab.receipts.statement import Evidence, result_head
from wgtlab.verify import chunk_record, merkle_root

__all__ = ["Audit", "Check", "ReceiptReport", "load_data_file", "verify_envelope"]

#: how many chunks an audit re-runs: a number, or "all"
Audit = int | Literal["all"]

_NAMED = 5  # failures named one by one in a row's detail; the rest are counted
_NO_DIGEST = bytes(32)  # a chunk record's outcome digest when the chunk has none (the manager's)
_TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Check:
    """One row: what was checked, whether it held (None: not checked, an earlier check having
    failed), and the detail that names what failed."""

    name: str
    ok: bool | None
    detail: str

    @property
    def result(self) -> str:
        return {True: "ok", False: "FAIL", None: "-"}[self.ok]


@dataclass(frozen=True)
class ReceiptReport:
    """What verifying a receipt found: one ``Check`` per row. True (``ok``) only if every row
    held; ``raise_for_failure()`` turns a failure into a ReceiptError naming the failed rows."""

    checks: tuple[Check, ...]
    receipt: str = ""  # what was verified (its path, or its job id)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def check(self, name: str) -> Check:
        """The row called ``name`` (KeyError if there is none)."""
        for row in self.checks:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def verdict(self) -> str:
        if self.ok:
            return f"VERIFIED: all {len(self.checks)} checks hold"
        failed = ", ".join(c.name for c in self.failures) or "nothing could be checked"
        return f"NOT VERIFIED: {len(self.failures)} of {len(self.checks)} checks failed ({failed})"

    def table(self) -> str:
        """The rows as aligned text, then the verdict (what ``wgtlab verify`` prints)."""
        width = max([len("check"), *(len(c.name) for c in self.checks)])
        lines = [f"{'check':<{width}}  result  detail"]
        lines += [f"{c.name:<{width}}  {c.result:<6}  {c.detail}" for c in self.checks]
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        if not self.ok:
            named = "; ".join(f"{c.name}: {c.detail}" for c in self.failures)
            raise ReceiptError(f"receipt {self.receipt} does not verify: {named}")

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"ReceiptReport({self.receipt!r}, {self.verdict})"

    def _repr_html_(self) -> str:
        from wgtlab.views import badge, escape, render

        tones = {True: "ok", False: "bad", None: "off"}
        rows = "".join(
            render(
                "report_row.html",
                "wgtlab.receipts.templates",
                name=escape(c.name),
                result=badge(c.result, tones[c.ok]),
                detail=escape(c.detail, 400),
            )
            for c in self.checks
        )
        return render(
            "report.html",
            "wgtlab.receipts.templates",
            receipt=escape(self.receipt, 120),
            verdict=badge("verified" if self.ok else "not verified", "ok" if self.ok else "bad"),
            summary=escape(self.verdict),
            rows=rows,
        )


def verify_envelope(
    doc: object,
    *,
    public_key: object = None,
    data: Any = None,
    shards: Any = None,
    pipeline: Any = None,
    audit: Audit = 0,
    seed: int | None = None,
    label: str = "",
) -> ReceiptReport:
    """Check the receipt whose DSSE envelope is ``doc`` (see ``Receipt.verify``)."""
    pinned_key, pinned_id = _pin(public_key)
    audit = _audit_count(audit)
    if audit and data is None and shards is None:
        raise ConfigError(
            "an audit re-runs chunks on their input: give the data the job read (data=, or "
            "--data FILE; shards= or --shards DIR for a CES shard set)"
        )
    rows: list[Check] = []
    try:
        envelope = Envelope.parse(doc)
    except ReceiptError as exc:
        rows.append(Check("envelope", False, str(exc)))
        return ReceiptReport(tuple(rows + _skipped(_CORE[1:], "the envelope is unreadable")), label)
    rows.append(_envelope_row(envelope))

    statement, evidence, problem = _read_statement(envelope.payload)
    rows.append(_signature_row(envelope, evidence, pinned_key, pinned_id))
    if evidence is None:
        rows.append(Check("statement", False, problem))
        return ReceiptReport(
            tuple(rows + _skipped(_CORE[3:], "the statement is unreadable")), label
        )
    rows.append(
        Check(
            "statement",
            True,
            f"in-toto Statement v1 of job {evidence.job_id!r}, predicate "
            f"{statement['predicateType']}",
        )
    )
    rows += [
        _subject_row(evidence),
        _code_row(evidence),
        _records_row(evidence),
        _output_root_row(evidence),
        _input_root_row(evidence),
        _worker_signatures_row(evidence),
        _verified_row(evidence),
    ]
    if data is not None or shards is not None:
        rows += _data_rows(evidence, data, shards, pipeline, audit, seed)
    return ReceiptReport(tuple(rows), label or evidence.job_id)


_CORE = (
    "envelope",
    "signature",
    "statement",
    "subject",
    "kernel code",
    "chunk records",
    "output root",
    "input root",
    "worker signatures",
    "chunks verified",
)


def _skipped(names: Iterable[str], why: str) -> list[Check]:
    return [Check(name, None, f"not checked: {why}") for name in names]


def _pin(public_key: object) -> tuple[Ed25519PublicKey | None, str | None]:
    """The key a signature must be by: a key (any form ``load_public_key`` reads) or a
    fingerprint ``ed25519:<32 hex>``; (None, None) when none is pinned."""
    if public_key is None:
        return None, None
    if isinstance(public_key, str) and public_key.strip().startswith("ed25519:"):
        pin = public_key.strip()
        body = pin.removeprefix("ed25519:")
        if len(body) != 32 or any(c not in "0123456789abcdef" for c in body):
            raise ConfigError("a fingerprint is ed25519: and 32 lowercase hex characters")
        return None, pin
    return load_public_key(public_key), None


def _audit_count(audit: object) -> int | Literal["all"]:
    if audit == "all":
        return "all"
    if isinstance(audit, str) and audit.isdigit():
        audit = int(audit)
    if isinstance(audit, bool) or not isinstance(audit, int) or audit < 0:
        raise ConfigError(f"audit is a number of chunks (0 or more) or 'all', got {audit!r}")
    return audit


def _envelope_row(envelope: Envelope) -> Check:
    if envelope.payload_type != PAYLOAD_TYPE:
        return Check(
            "envelope",
            False,
            f"payloadType is {envelope.payload_type[:80]!r}, not {PAYLOAD_TYPE}",
        )
    n = len(envelope.signatures)
    return Check(
        "envelope",
        True,
        f"DSSE, payloadType {PAYLOAD_TYPE}, {len(envelope.payload):,}-byte payload, "
        f"{n} signature{'s' if n != 1 else ''}",
    )


def _read_statement(payload: bytes) -> tuple[dict[str, Any], Evidence | None, str]:
    try:
        statement = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, None, "the payload is not JSON (it was altered, or is not a statement)"
    try:
        return statement, Evidence.read(statement), ""
    except ReceiptError as exc:
        return statement, None, str(exc)


def _signature_row(
    envelope: Envelope,
    evidence: Evidence | None,
    pinned_key: Ed25519PublicKey | None,
    pinned_id: str | None,
) -> Check:
    named = evidence.signer_fingerprint if evidence is not None else None
    if pinned_key is not None:
        key, how = pinned_key, "the key given"
    elif evidence is not None:
        key = Ed25519PublicKey.from_public_bytes(evidence.signer_key)
        how = "the key the receipt names"
        if pinned_id is not None and pinned_id != named:
            return Check(
                "signature",
                False,
                f"the receipt names signer {named}, not the one required ({pinned_id})",
            )
        if pinned_id is not None:
            how = "the key the receipt names, whose fingerprint is the one required"
    else:
        return Check(
            "signature",
            False,
            "no key to check it with: the payload does not say who signed it (give the "
            "signer's public key)",
        )
    who = fingerprint(key)
    if not envelope.signed_by(key):
        return Check(
            "signature",
            False,
            f"no signature in the envelope verifies with {who} ({how}) over the DSSE PAE of "
            "the payload: the payload or the signature was altered, or another key signed it",
        )
    pinned = pinned_key is not None or pinned_id is not None
    note = "" if pinned else "; give the signer's key (--key, public_key=) to require who signed"
    return Check("signature", True, f"Ed25519 over the DSSE PAE by {who} ({how}){note}")


def _subject_row(evidence: Evidence) -> Check:
    head = result_head(evidence.job_id, evidence.tree_size, evidence.output_root)
    digest = hashlib.sha256(head).hexdigest()
    if evidence.subject_name != evidence.job_id:
        return Check(
            "subject",
            False,
            f"the subject is named {evidence.subject_name[:80]!r}, not job {evidence.job_id!r}",
        )
    if digest != evidence.subject_digest:
        return Check(
            "subject",
            False,
            f"the subject's sha256 {evidence.subject_digest[:16]}… is not that of the result "
            f"head (job id, tree size, output root): {digest[:16]}…",
        )
    return Check("subject", True, f"sha256 {digest[:16]}… of the result head matches")


def _code_row(evidence: Evidence) -> Check:
    code = evidence.code
    if code is None:
        return Check("kernel code", False, "the receipt holds no code: nothing can be re-run")
    if code.digest != evidence.code_digest:
        return Check(
            "kernel code",
            False,
            f"the code's sha256 is {code.digest[:16]}…, the receipt says "
            f"{evidence.code_digest[:16]}…: the code was altered",
        )
    names = evidence.kernel_digest
    if code.kind == "wasm" and code.digest != names:
        return Check(
            "kernel code",
            False,
            f"the module's sha256 {code.digest[:16]}… is not the kernel digest {names[:16]}…",
        )
    if code.kind == "udf":
        try:
            recorded = json.loads(code.code).get("digest")
        except (ValueError, AttributeError, RecursionError):
            recorded = None
        if recorded != names:
            return Check(
                "kernel code",
                False,
                f"the UDF program's digest is not the kernel digest {names[:16]}…",
            )
    return Check(
        "kernel code",
        True,
        f"{code.kind} {code.name!r}, {len(code.code):,} bytes, sha256 {code.digest[:16]}… "
        f"(kernel {evidence.kernel_name!r})",
    )


def _records_row(evidence: Evidence) -> Check:
    problems = [
        f"entry {i} is chunk {c.index}" for i, c in enumerate(evidence.chunks) if c.index != i
    ]
    n = len(evidence.chunks)
    if evidence.tree_size != n:
        problems.insert(0, f"the tree size is {evidence.tree_size}, the receipt has {n} chunks")
    if evidence.input_chunks != n:
        problems.insert(0, f"the input has {evidence.input_chunks} chunks, the receipt lists {n}")
    if problems:
        return Check(
            "chunk records",
            False,
            _listed(problems) + " (chunks out of order, missing or added)",
        )
    return Check("chunk records", True, f"{n:,} chunks, in order 0..{max(n - 1, 0)}")


def _output_root_row(evidence: Evidence) -> Check:
    leaves = [
        chunk_record(c.index, c.input_digest, c.digest or _NO_DIGEST) for c in evidence.chunks
    ]
    root = merkle_root(leaves)
    if root != evidence.output_root:
        return Check(
            "output root",
            False,
            f"the RFC 6962 root over the {len(leaves):,} chunk records is {root.hex()[:16]}…, "
            f"the receipt says {evidence.output_root.hex()[:16]}…: a chunk's index, input "
            "digest or outcome digest was altered",
        )
    return Check(
        "output root",
        True,
        f"{root.hex()[:16]}… over {len(leaves):,} chunk records (RFC 6962, tree size "
        f"{evidence.tree_size:,})",
    )


def _input_root_row(evidence: Evidence) -> Check:
    root = merkle_root(c.input_digest for c in evidence.chunks)
    if root != evidence.input_root:
        return Check(
            "input root",
            False,
            f"the RFC 6962 root over the chunks' input digests is {root.hex()[:16]}…, the "
            f"receipt says {evidence.input_root.hex()[:16]}…: an input digest was altered",
        )
    dataset = f", CES dataset {evidence.dataset_id}" if evidence.dataset_id else ""
    return Check("input root", True, f"{root.hex()[:16]}… over the input digests{dataset}")


def _worker_signatures_row(evidence: Evidence) -> Check:
    problems: list[str] = []
    for worker_id, listed in evidence.workers.items():
        if fingerprint(listed.public_key) != worker_id:
            problems.append(f"worker {listed.name!r} is listed as {worker_id} but its key is "
                            f"{fingerprint(listed.public_key)}")  # fmt: skip
    signatures, earlier = 0, 0
    signers: set[str] = set()
    try:
        code_digest = bytes.fromhex(evidence.kernel_digest)
    except ValueError:
        code_digest = b""  # not a digest: no signature can verify, each is named below
    for c in evidence.chunks:
        agreeing: set[str] = set()
        for a in c.attestations:
            worker = evidence.workers.get(a.worker_id)
            if worker is None:
                problems.append(f"chunk {c.index}: a signature by {a.worker_id}, no listed worker")
                continue
            if c.digest is None:
                problems.append(f"chunk {c.index}: a signature on a chunk without an outcome")
                continue
            if a.job_id == evidence.job_id and a.chunk != c.index:
                problems.append(f"chunk {c.index}: {worker.name}'s signature names chunk {a.chunk}")
                continue
            message = result_message(
                a.job_id, a.task, a.chunk, c.input_digest, code_digest, c.digest
            )
            try:
                verify_signature(worker.public_key, a.signature, message)
            except SignatureError:
                problems.append(
                    f"chunk {c.index}: {worker.name}'s signature ({a.worker_id}) does not verify "
                    f"over outcome {c.digest.hex()[:12]}… (task {a.task})"
                )
                continue
            signatures += 1
            earlier += a.job_id != evidence.job_id
            agreeing.add(a.worker_id)
            signers.add(a.worker_id)
        needed = _quorum(evidence, c)
        if c.digest is not None and len(agreeing) < needed:
            problems.append(
                f"chunk {c.index}: {len(agreeing)} valid signature(s) by distinct workers, "
                f"{needed} needed"
            )
        if c.digest is None and c.status != "failed":
            problems.append(f"chunk {c.index} is {c.status!r} without an outcome digest")
    if problems:
        return Check("worker signatures", False, _listed(problems))
    cached = f"; {earlier} made in earlier jobs (kept outcomes)" if earlier else ""
    return Check(
        "worker signatures",
        True,
        f"{signatures:,} Ed25519 signatures by {len(signers)} workers; every decided chunk "
        f"has its {evidence.replicas if evidence.mode == 'redundancy' else 1} "
        f"({evidence.mode}){cached}",
    )


def _quorum(evidence: Evidence, chunk: Any) -> int:
    """Distinct agreeing signatures a decided chunk needs: its requested replicas under
    redundancy (fewer only where spot checking trusted one worker), else one."""
    if evidence.mode != "redundancy":
        return 1
    return max(1, min(chunk.requested, evidence.replicas))


def _verified_row(evidence: Evidence) -> Check:
    total = len(evidence.chunks)
    bad = [c for c in evidence.chunks if c.status != "verified"]
    if bad:
        named = [f"chunk {c.index} {c.status}: {c.reason[:120]}" for c in bad]
        return Check(
            "chunks verified",
            False,
            f"{total - len(bad):,} of {total:,} verified; " + _listed(named),
        )
    return Check("chunks verified", True, f"{total:,} of {total:,} chunks verified")


# --- with the data -----------------------------------------------------------------------------


def _data_rows(
    evidence: Evidence,
    data: Any,
    shards: Any,
    pipeline: Any,
    audit: int | Literal["all"],
    seed: int | None,
) -> list[Check]:
    """The input data row and, if asked, the audit row."""
    from wgtlab.jobs.chunking import recut

    decided = [c.index for c in evidence.chunks if c.digest is not None]
    if audit == "all":
        chosen = set(decided)
    else:
        rng = random.Random(seed) if seed is not None else random.SystemRandom()
        chosen = set(rng.sample(decided, min(audit, len(decided))))
    rows: list[Check] = []
    payloads: dict[int, bytes] = {}
    try:
        trusted, executing = _kernels(evidence)
        source = _input_object(evidence, data, shards)
        mismatched: list[str] = []
        count = 0
        for index, chunk in enumerate(recut(evidence.cut, source, pipeline)):
            count += 1
            payload = trusted.encode(chunk)
            if index >= len(evidence.chunks):
                continue
            if hashlib.sha256(payload).digest() != evidence.chunks[index].input_digest:
                mismatched.append(f"chunk {index}")
            elif index in chosen:
                payloads[index] = payload
    except (WgtError, OSError, ValueError, TypeError, KeyError) as exc:
        rows.append(Check("input data", False, f"{type(exc).__name__}: {_one_line(exc)}"))
        if audit:
            rows.append(Check("audit", None, "not checked: the data could not be read"))
        return rows
    what = _data_label(data, shards)
    n = len(evidence.chunks)
    if count != n or mismatched:
        counted = f"the data cuts into {count:,} chunks, the receipt has {n:,}; " * (count != n)
        rows.append(
            Check(
                "input data",
                False,
                f"{counted}{what} gives other input digests for {_chunks(len(mismatched))} ("
                + _listed(mismatched)
                + "): this is not the data the job read (or it was read with other types)",
            )
        )
    else:
        rows.append(Check("input data", True, f"{n:,} chunks cut again from {what}: input "
                          "digests match"))  # fmt: skip
    if audit:
        rows.append(_audit_row(evidence, executing, payloads, chosen))
    return rows


def _audit_row(
    evidence: Evidence, executing: Any, payloads: Mapping[int, bytes], chosen: set[int]
) -> Check:
    from wgtlab.cluster.task import error_digest
    from wgtlab.errors import SandboxError
    from wgtlab.sandbox.limits import ResourceLimits
    from wgtlab.sandbox.runner import Sandbox

    if not chosen:
        return Check("audit", False, "no chunk has an outcome to re-run")
    try:
        sandbox = Sandbox(ResourceLimits(**dict(evidence.limits or {})))
    except (TypeError, ValueError) as exc:
        return Check("audit", False, f"the receipt's limits cannot be used here: {exc}")
    wrong: list[str] = []
    for index in sorted(payloads):
        c = evidence.chunks[index]
        try:
            outcome = hashlib.sha256(executing.execute(sandbox, payloads[index]).output).digest()
            what = "output"
        except SandboxError as exc:
            outcome, what = error_digest(type(exc).__name__), type(exc).__name__
        except WgtError as exc:  # the receipt's code cannot run here at all
            wrong.append(f"chunk {index} could not be re-run: {type(exc).__name__}: {exc}")
            continue
        if outcome != c.digest:
            agreed = ", ".join(
                evidence.workers[a.worker_id].name
                for a in c.attestations
                if a.worker_id in evidence.workers
            )
            wrong.append(
                f"chunk {index} re-run here gave {what} {outcome.hex()[:12]}…, the receipt says "
                f"{(c.digest or b'').hex()[:12]}… (agreed by {agreed or 'nobody'})"
            )
    skipped = len(chosen) - len(payloads)
    unrun = f"; {_chunks(skipped)} chosen but not re-run (input differs)" if skipped else ""
    shown = ", ".join(str(i) for i in sorted(payloads)[:12]) + ("…" if len(payloads) > 12 else "")
    if wrong or not payloads:
        return Check(
            "audit",
            False,
            (_listed(wrong) + ": the recorded outcome is not what the code computes on this data"
             if wrong else "no chosen chunk could be re-run") + unrun,
        )  # fmt: skip
    return Check(
        "audit",
        True,
        f"{_chunks(len(payloads))} re-run in the local sandbox: outcome digests match "
        f"(chunks {shown}){unrun}",
    )


def _kernels(evidence: Evidence) -> tuple[Any, Any]:
    """(the trusted side that encodes chunks, the executing part that runs them), rebuilt from
    the receipt: a built-in kernel from its name and parameters, anything else from its code."""
    from wgtlab.cluster.worker import kernel_from_spec
    from wgtlab.sandbox.kernels import BUILTINS

    if evidence.code is None:
        raise ReceiptError("the receipt holds no code to re-run")
    executing = kernel_from_spec(evidence.code)
    name = evidence.kernel_name
    if (
        evidence.code.kind == "wasm"
        and name in BUILTINS
        and evidence.code.name == f"wgt.kernels.{name}"
    ):
        try:
            factory: Any = BUILTINS[name]  # each built-in takes its own parameters
            return factory(**dict(evidence.kernel_params)), executing
        except TypeError as exc:
            raise ReceiptError(
                f"the built-in kernel {name} takes other parameters: {exc}"
            ) from None
    return executing, executing


def _input_object(evidence: Evidence, data: Any, shards: Any) -> Any:
    source = evidence.cut.get("source")
    if shards is not None:
        if source != "shards":
            raise ConfigError(
                f"this job read {source} input, not a CES shard set: give the data (--data FILE)"
            )
        from wgtlab.jobs.chunking import dataset_id

        found = dataset_id(shards)
        if evidence.dataset_id and found and found != evidence.dataset_id:
            raise ConfigError(
                f"the shard set is dataset {found}, the job read dataset {evidence.dataset_id}"
            )
        return shards
    if source == "shards":
        raise ConfigError("this job read a CES shard set: give it (--shards DIR, or shards=)")
    if isinstance(data, (str, os.PathLike)):
        return load_data_file(Path(data), evidence.cut)
    return _select(evidence.cut, data)


def load_data_file(path: Path, cut: Mapping[str, Any]) -> Any:
    """The data a job read, from the file a verifier gives: the file's bytes for bytes and text
    input (its path for a file), a table from Parquet or CSV for DataFrame and Series input (the
    columns the job read), an array from .npy (or a one-column table), a list from JSON."""
    source = cut.get("source")
    if not path.is_file():
        raise ConfigError(f"the data file {str(path)!r} does not exist (or is not a file)")
    if source in ("bytes", "text"):
        return path.read_bytes()
    if source == "file":
        return path
    if source == "table":
        return _select(cut, _read_table(path))
    if source == "array":
        if path.suffix.lower() == ".npy":
            import numpy as np

            return np.load(path, allow_pickle=False)
        frame = _read_table(path)
        if frame.shape[1] != 1:
            raise ConfigError(
                f"this job read an array: give it as .npy, or a table of one column "
                f"({path.name} has {frame.shape[1]})"
            )
        return frame.iloc[:, 0].to_numpy()
    if source == "list":
        if path.suffix.lower() != ".json":
            raise ConfigError(f"this job read a list: give it as JSON (.json), not {path.suffix}")
        value = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(value, list):
            raise ConfigError(f"{path.name} holds a {type(value).__name__}, not a list")
        return value
    raise ConfigError(
        f"this job's input was {str(source)[:40]!r}; a verifier reads bytes, text and files (any "
        "file), tables (Parquet, CSV), arrays (.npy) and lists (JSON)"
    )


def _read_table(path: Path) -> Any:
    import pandas as pd

    kind = _TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"a table's data is read from Parquet (.parquet, .pq) or CSV (.csv, .tsv); "
            f"{path.name} is neither"
        )
    return pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, sep=kind)


def _select(cut: Mapping[str, Any], data: Any) -> Any:
    """The columns a table job read, from a DataFrame that may hold more."""
    columns = cut.get("columns")
    if "series" in cut and hasattr(data, "columns"):
        name = cut["series"]
        if name is not None and name in data.columns:
            return data[name]
        if data.shape[1] == 1:
            return data.iloc[:, 0]
        raise ConfigError(
            f"this job read the column {name!r}, which the data does not have "
            f"(its columns: {', '.join(map(str, list(data.columns)[:12]))})"
        )
    if isinstance(columns, list) and hasattr(data, "columns"):
        missing = [c for c in columns if c not in data.columns]
        if missing:
            raise ConfigError(f"the data has no column {', '.join(map(repr, missing[:5]))}")
        return data[columns]
    return data


def _data_label(data: Any, shards: Any) -> str:
    value = shards if shards is not None else data
    if isinstance(value, (str, os.PathLike)):
        return Path(value).name or str(value)
    return f"the {type(value).__name__} given"


def _chunks(n: int) -> str:
    return f"{n:,} chunk{'s' if n != 1 else ''}"


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _NAMED} more" if len(items) > _NAMED else ""
    return "; ".join(items[:_NAMED]) + more


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
