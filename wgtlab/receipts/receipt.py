"""``Receipt``: a JobResult's signed, portable proof, a DSSE envelope of an in-toto Statement.

A receipt is made on the client (``result.receipt()``), saved as the envelope's JSON, and
verified anywhere by anyone (``wgt.Receipt.load(path).verify()``, ``wgtlab verify``) without
the notebook, the cluster or the client's word: the envelope's signature says who vouches for
it, each worker's signature says who computed each outcome, the Merkle roots bind the records.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgtlab.errors import ConfigError, ReceiptError
from wgtlab.receipts.checks import Audit, ReceiptReport, verify_envelope
from wgtlab.receipts.dsse import PAYLOAD_TYPE, Envelope, sign
from wgtlab.receipts.identity import Identity, user_identity
from wgtlab.receipts.statement import Evidence, build_statement, canonical_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wgtlab.jobs.result import JobResult

__all__ = ["MAX_RECEIPT_BYTES", "Receipt"]

MAX_RECEIPT_BYTES = 1 << 30  # about two million chunks; a larger file is refused unread
_TEMPLATES = "wgtlab.receipts.templates"
_CARD_WORKERS = 12  # workers listed on the card; the rest are counted


class Receipt:
    """A signed receipt of a ``JobResult``: an in-toto Statement v1 (predicate
    ``PREDICATE_TYPE``) in a DSSE envelope, signed by the user's identity key.

    ``Receipt.from_result(result)`` (or ``result.receipt()``) makes one; ``save``/``load``
    keep it as the envelope's JSON; ``verify()`` checks it and returns a ``ReceiptReport``.
    """

    def __init__(self, envelope: Mapping[str, Any], *, path: Path | None = None) -> None:
        if not isinstance(envelope, Mapping):
            raise ReceiptError(
                f"a receipt is a DSSE envelope (a JSON object), got {type(envelope).__name__}"
            )
        self._envelope = copy.deepcopy(dict(envelope))
        self.path = path

    # --- making, saving, loading -------------------------------------------------------------

    @classmethod
    def from_result(
        cls, result: JobResult, identity: Identity | Ed25519PrivateKey | None = None
    ) -> Receipt:
        """Sign ``result``'s statement with ``identity`` (default: the user's identity key,
        made on first use; see ``wgtlab identity``)."""
        from wgtlab.jobs.result import JobResult

        if not isinstance(result, JobResult):
            raise ConfigError(f"a receipt is made from a JobResult, got {type(result).__name__}")
        signer = user_identity() if identity is None else Identity.of(identity)
        payload = canonical_json(build_statement(result, signer))
        return cls(sign(payload, PAYLOAD_TYPE, signer))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Receipt:
        """The receipt saved at ``path``; a file that is not a JSON object is a ReceiptError
        (anything inside it is judged by ``verify``)."""
        where = Path(path)
        try:
            with where.open("rb") as f:
                raw = f.read(MAX_RECEIPT_BYTES + 1)
        except OSError as exc:
            raise ReceiptError(f"cannot read the receipt {str(where)!r}: {exc.strerror}") from None
        if len(raw) > MAX_RECEIPT_BYTES:
            raise ReceiptError(f"{where} is over {MAX_RECEIPT_BYTES:,} bytes: not a receipt")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise ReceiptError(f"{where} is not JSON: not a receipt (or it was damaged)") from None
        return cls(doc, path=where)

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        try:
            return cls(json.loads(text))
        except (ValueError, RecursionError):
            raise ReceiptError("not JSON: not a receipt (or it was damaged)") from None

    def to_json(self, indent: int | None = 2) -> str:
        """The DSSE envelope's JSON: what ``save`` writes, and what in-toto and Sigstore
        tooling read."""
        return json.dumps(self._envelope, indent=indent) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the receipt to ``path`` (atomically: a reader sees the old file or the new)."""
        where = Path(path)
        if where.is_dir():
            raise ConfigError(f"{str(where)!r} is a directory; give the receipt's file name")
        fresh = where.with_name(f".{where.name}.{secrets.token_hex(4)}.tmp")
        try:
            fresh.write_text(self.to_json(), encoding="utf-8")
            os.replace(fresh, where)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fresh.unlink()
            raise ConfigError(
                f"cannot write the receipt to {str(where)!r}: {exc.strerror}"
            ) from None
        self.path = where
        return where

    # --- what it says ---------------------------------------------------------------------------

    @property
    def envelope(self) -> dict[str, Any]:
        """The DSSE envelope (a copy: change the saved file, not this, to test tampering)."""
        return copy.deepcopy(self._envelope)

    @cached_property
    def statement(self) -> dict[str, Any]:
        """The in-toto Statement, decoded without checking any signature (``verify`` does)."""
        payload = Envelope.parse(self._envelope).payload
        try:
            statement = json.loads(payload)
        except (ValueError, RecursionError):
            raise ReceiptError("the receipt's payload is not JSON") from None
        if not isinstance(statement, dict):
            raise ReceiptError("the receipt's payload is not a JSON object")
        return statement

    @property
    def predicate(self) -> dict[str, Any]:
        predicate = self.statement.get("predicate")
        if not isinstance(predicate, dict):
            raise ReceiptError("the receipt's statement has no predicate")
        return predicate

    @cached_property
    def evidence(self) -> Evidence:
        """The statement read strictly (ReceiptError naming the first malformed field)."""
        return Evidence.read(self.statement)

    @property
    def job_id(self) -> str:
        return self.evidence.job_id

    @property
    def signer(self) -> str:
        """The fingerprint of the key the receipt says signed it (``verify`` checks it)."""
        return self.evidence.signer_fingerprint

    @property
    def size(self) -> int:
        """Bytes of the saved form."""
        return len(self.to_json().encode("utf-8"))

    # --- checking -------------------------------------------------------------------------------

    def verify(
        self,
        public_key: object = None,
        *,
        data: Any = None,
        shards: Any = None,
        pipeline: Any = None,
        audit: Audit = 0,
        seed: int | None = None,
    ) -> ReceiptReport:
        """Check the receipt; a ``ReceiptReport`` (true only if every check holds; call its
        ``raise_for_failure()`` to raise a ReceiptError instead).

        ``public_key``: the signer required (a key, 64 hex characters, PEM, a file of either,
        or a fingerprint ``ed25519:…``); None accepts the key the receipt names, and says so.
        ``data``: the input the job read (a path: a table from Parquet or CSV, an array from
        .npy, a list from JSON, or any file's bytes; or the object itself), so its input
        digests are recomputed; ``shards``: a CES shard set (URL or list, opened with
        ``pipeline`` or $CES_ENCRYPTION_KEY) instead. ``audit``: how many chunks, chosen at
        random (``seed`` to repeat a choice), to re-run in the local sandbox, or "all".
        """
        label = str(self.path) if self.path is not None else ""
        return verify_envelope(
            self._envelope,
            public_key=public_key,
            data=data,
            shards=shards,
            pipeline=pipeline,
            audit=audit,
            seed=seed,
            label=label,
        )

    @cached_property
    def _report(self) -> ReceiptReport:
        return self.verify()

    # --- views ----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        try:
            e = self.evidence
        except ReceiptError as exc:
            return f"Receipt(unreadable: {exc})"
        return (
            f"Receipt(job {e.job_id!r}, kernel {e.kernel_name!r}, {len(e.chunks)} chunks, "
            f"mode={e.mode!r}, root={e.output_root.hex()[:16]}..., signed by {e.signer_keyid})"
        )

    def _repr_html_(self) -> str:
        from wgtlab.views import badge, escape, render

        report = self._report
        status = badge("verified", "ok") if report.ok else badge("not verified", "bad")
        try:
            e = self.evidence
        except ReceiptError as exc:
            return render(
                "receipt_unreadable.html",
                _TEMPLATES,
                status=status,
                problem=escape(exc),
                report=report._repr_html_(),
            )
        agreed: dict[str, int] = {}
        for c in e.chunks:
            for a in c.attestations:
                agreed[a.worker_id] = agreed.get(a.worker_id, 0) + 1
        trust = {str(t.get("worker")): t for t in e.trust}
        shown = sorted(e.workers.values(), key=lambda w: w.name)[:_CARD_WORKERS]
        rows = "".join(
            render(
                "receipt_worker.html",
                _TEMPLATES,
                name=escape(w.name),
                worker_id=escape(w.worker_id),
                worker_short=escape(w.worker_id[:20] + "…"),
                chunks=agreed.get(w.worker_id, 0),
                trust=escape(_trust_change(trust.get(w.worker_id))),
            )
            for w in shown
        )
        hidden = len(e.workers) - len(shown)
        verified = sum(1 for c in e.chunks if c.status == "verified")
        params = ", ".join(f"{k}={v!r}" for k, v in e.kernel_params.items())
        code = e.code
        return render(
            "receipt.html",
            _TEMPLATES,
            job=escape(e.job_name),
            status=status,
            kernel=escape(e.kernel_name),
            params=escape(params, 160),
            code=escape(f"{code.kind}, {len(code.code):,} bytes" if code else "no code"),
            digest=escape(e.kernel_digest),
            digest_short=escape(e.kernel_digest[:16] + "…"),
            limits=escape(_limits(e.limits)),
            chunks=len(e.chunks),
            cut=escape(_cut(e.cut)),
            input_root=escape(e.input_root.hex()),
            input_short=escape(e.input_root.hex()[:16] + "…"),
            dataset=escape(f" · CES dataset {e.dataset_id}" if e.dataset_id else ""),
            verified=verified,
            mode=escape(e.mode),
            replicas=e.replicas,
            output_root=escape(e.output_root.hex()),
            output_short=escape(e.output_root.hex()[:16] + "…"),
            tree_size=e.tree_size,
            worker_rows=rows,
            more_workers=f"<div>… and {hidden} more workers</div>" if hidden else "",
            signer=escape(e.signer_keyid),
            versions=escape(", ".join(f"{k} {v}" for k, v in e.versions.items())),
            started=escape(e.started),
            finished=escape(e.finished),
            verdict=escape(report.verdict),
            report=report._repr_html_(),
        )


def _trust_change(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "-"
    before, after = row.get("before"), row.get("after")
    start = f"{before:.2f}" if isinstance(before, (int, float)) else "new"
    end = f"{after:.2f}" if isinstance(after, (int, float)) else "?"
    return f"{start} → {end}" + (" (quarantined)" if row.get("quarantined") else "")


def _limits(limits: Mapping[str, int] | None) -> str:
    if not limits:
        return "-"
    shown = {
        "max_memory_bytes": lambda v: f"{v / (1 << 20):g} MiB memory",
        "max_cpu_cycles": lambda v: f"{v:.3g} fuel",
        "max_execution_time_ms": lambda v: f"{v / 1000:g} s",
    }
    return ", ".join(fmt(limits[k]) for k, fmt in shown.items() if k in limits)


def _cut(cut: Mapping[str, Any]) -> str:
    unit, size, source = cut.get("unit"), cut.get("size"), cut.get("source")
    if unit == "split":
        return f"{source} input cut by {cut.get('split')}"
    each = f"{size:,} {unit}" if isinstance(size, int) else f"default-sized, in {unit}"
    return f"{source} input, chunks of {each}"
