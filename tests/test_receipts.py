"""Receipts: real jobs on a real LocalCluster, signed with a real identity key, saved, verified
by wgtlab's verifier and independently (securesystemslib's DSSE, the PAE recomputed by hand),
then tampered with byte by byte in the saved JSON, each change caught and named; the data
recut and chunks re-run in the sandbox catch a result changed after the fact; the CLI runs in
a real subprocess."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from magics_support import run

import wgtlab as wgt
from wgtlab.cluster.identity import WorkerIdentity, result_message
from wgtlab.errors import ConfigError, IdentityKeyError, ReceiptError
from wgtlab.receipts import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Identity,
    Receipt,
    ReceiptReport,
    identity_path,
    pae,
    result_digest,
    result_head,
    user_identity,
)
from wgtlab.receipts.dsse import sign
from wgtlab.receipts.statement import canonical_json
from wgtlab.verify import chunk_record

ROWS, CHUNK_ROWS = 8_000, 1_000  # eight chunks


@pytest.fixture(autouse=True)
def private_identity(tmp_path, monkeypatch):
    """No test reads or makes the user's own identity key."""
    monkeypatch.setenv("WGTLAB_IDENTITY", str(tmp_path / "identity" / "identity.key"))
    monkeypatch.setenv("WGTLAB_RESULT_CACHE", "off")


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict[str, Any]:
    """One real job (a sum under redundancy, 2 of 3 workers per chunk, worker keys on disk),
    its receipt signed by a fresh identity and saved, and the data it read as Parquet."""
    root = tmp_path_factory.mktemp("receipts")
    frame = pd.DataFrame({"distance": np.arange(ROWS, dtype=float) * 1.5, "other": 1})
    with wgt.Job("total-distance") as job:
        job.input(frame["distance"], chunk_rows=CHUNK_ROWS)
        job.kernel(wgt.kernels.sum())
        job.verify("redundancy", replicas=2)
    with wgt.LocalCluster(workers=3, identity_dir=root / "workers") as cluster:
        result = job.run(on=cluster)
    identity = user_identity(root / "me" / "identity.key")
    receipt = result.receipt(identity)
    path = receipt.save(root / "receipt.json")
    frame.to_parquet(root / "flights.parquet")
    (root / "me.pub").write_text(identity.public_pem)
    return {
        "root": root,
        "result": result,
        "identity": identity,
        "path": path,
        "data": root / "flights.parquet",
        "frame": frame,
        "workers": root / "workers",
    }


def load_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def statement_of(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(doc["payload"]))


def tampered(
    signed: dict[str, Any],
    tmp_path: Path,
    *,
    statement: Callable[[dict[str, Any]], None] | None = None,
    envelope: Callable[[dict[str, Any]], None] | None = None,
    resign: Identity | None = None,
) -> Path:
    """The saved receipt with its statement and/or its envelope edited; re-signed by
    ``resign`` (an attacker's key, named as the signer) or left with the old signature."""
    doc = load_doc(signed["path"])
    if statement is not None:
        body = statement_of(doc)
        statement(body)
        if resign is not None:
            body["predicate"]["signer"] = {
                "keyid": resign.fingerprint,
                "public_key": resign.public_bytes.hex(),
            }
            doc = sign(canonical_json(body), PAYLOAD_TYPE, resign)
        else:
            doc["payload"] = base64.b64encode(canonical_json(body)).decode()
    if envelope is not None:
        envelope(doc)
    out = tmp_path / "tampered.json"
    out.write_text(json.dumps(doc))
    return out


def failed(report: ReceiptReport) -> set[str]:
    return {c.name for c in report.failures}


def flip_hex(text: str, at: int = 0) -> str:
    return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1 :]


def flip_b64(text: str, at: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- DSSE: the spec's vectors, the library, the bytes by hand -----------------------------------


def test_pae_is_the_dsse_specs_example():
    # protocol.md, "Test Vectors": SERIALIZED_BODY "hello world", PAYLOAD_TYPE below.
    encoded = pae("http://example.com/HelloWorld", b"hello world")
    assert encoded == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    # ... and it is what the spec's signer signed: its ECDSA P-256 signature verifies over it.
    x = 46950820868899156662930047687818585632848591499744589407958293238635476079160
    y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
    key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raw = base64.b64decode(
        "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="
    )
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    key.verify(utils.encode_dss_signature(r, s), encoded, ec.ECDSA(hashes.SHA256()))


def test_pae_counts_bytes_and_keeps_the_space_of_an_empty_body():
    # LEN is the byte length of UTF8(type): 28 characters, 29 bytes.
    assert pae("application/vnd.exämple+json", b"{}") == (
        b"DSSEv1 29 application/vnd.ex\xc3\xa4mple+json 2 {}"
    )
    assert pae(PAYLOAD_TYPE, b"") == b"DSSEv1 28 application/vnd.in-toto+json 0 "


def test_the_receipt_is_an_in_toto_statement_in_a_dsse_envelope(signed):
    doc = load_doc(signed["path"])
    assert sorted(doc) == ["payload", "payloadType", "signatures"]
    assert doc["payloadType"] == "application/vnd.in-toto+json"
    [signature] = doc["signatures"]
    assert signature["keyid"] == signed["identity"].fingerprint
    statement = statement_of(doc)
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    result = signed["result"]
    [subject] = statement["subject"]
    head = result_head(result.job_id, result.tree_size, bytes.fromhex(result.merkle_root))
    assert subject == {
        "name": result.job_id,
        "digest": {"sha256": hashlib.sha256(head).hexdigest()},
    }
    assert result_digest(result) == subject["digest"]["sha256"]


def test_its_signature_checks_with_securesystemslib_and_with_the_pae_by_hand(signed):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    doc = load_doc(signed["path"])
    identity = signed["identity"]
    key = SSlibKey.from_crypto(identity.public_key, keyid=identity.fingerprint)
    accepted = Envelope.from_dict(copy.deepcopy(doc)).verify([key], 1)
    assert list(accepted) == [identity.fingerprint]

    payload = base64.b64decode(doc["payload"])
    by_hand = b"DSSEv1 %d %s %d %s" % (
        len(PAYLOAD_TYPE),
        PAYLOAD_TYPE.encode(),
        len(payload),
        payload,
    )
    identity.public_key.verify(base64.b64decode(doc["signatures"][0]["sig"]), by_hand)


def test_the_predicate_carries_what_ran_on_what_and_who_agreed(signed):
    result = signed["result"]
    p = statement_of(load_doc(signed["path"]))["predicate"]
    assert p["job"]["name"] == "total-distance" and p["job"]["id"] == result.job_id
    assert p["job"]["started"].endswith("Z") and p["job"]["started"] <= p["job"]["finished"]
    assert p["wgtlab"] == {"version": wgt.__version__, "wasmtime": p["wgtlab"]["wasmtime"]}
    assert p["kernel"]["name"] == "sum" and p["kernel"]["digest"] == result.kernel_digest
    code = base64.b64decode(p["kernel"]["code"]["base64"])
    assert hashlib.sha256(code).hexdigest() == p["kernel"]["code"]["digest"] == result.kernel_digest
    assert p["limits"] == dataclasses.asdict(result.limits)
    assert p["verification"] == {"mode": "redundancy", "replicas": 2}
    assert p["input"]["chunks"] == ROWS // CHUNK_ROWS
    assert p["input"]["cut"] == {
        "source": "table",
        "kernel_input": "float64",
        "unit": "rows",
        "size": CHUNK_ROWS,
        "series": "distance",
    }
    assert p["output"] == {"root": result.merkle_root, "tree_size": 8, "record_version": 1}
    for entry, outcome in zip(p["chunks"], result.outcomes, strict=True):
        assert entry["digest"] == outcome.digest and entry["input_digest"] == outcome.input_digest
        assert len(entry["attestations"]) == 2
        for a in entry["attestations"]:
            key = bytes.fromhex(p["workers"][a["worker"]]["public_key"])
            message = result_message(
                result.job_id,
                a["task"],
                entry["index"],
                bytes.fromhex(entry["input_digest"]),
                bytes.fromhex(result.kernel_digest),
                bytes.fromhex(entry["digest"]),
            )
            Ed25519PublicKey.from_public_bytes(key).verify(base64.b64decode(a["sig"]), message)
    assert {t["name"] for t in p["trust"]} == {"local-0", "local-1", "local-2"}
    assert all(t["before"] is None and t["after"] > 0.5 for t in p["trust"])  # a fresh ledger
    assert p["signer"]["keyid"] == signed["identity"].fingerprint


# --- the project's verifier ---------------------------------------------------------------------


def test_a_receipt_verifies(signed):
    receipt = Receipt.load(signed["path"])
    for pin in (
        signed["identity"].public_key,
        signed["root"] / "me.pub",
        signed["identity"].fingerprint,
    ):
        report = receipt.verify(public_key=pin)
        assert report.ok and bool(report), report.table()
        assert [c.name for c in report.checks] == [
            "envelope", "signature", "statement", "subject", "kernel code", "chunk records",
            "output root", "input root", "worker signatures", "chunks verified",
        ]  # fmt: skip
    unpinned = receipt.verify()
    assert unpinned.ok and "--key" in unpinned.check("signature").detail
    report.raise_for_failure()  # nothing to raise


def test_a_receipt_signed_by_someone_else_fails_the_pin(signed):
    stranger = Ed25519PrivateKey.generate().public_key()
    report = Receipt.load(signed["path"]).verify(public_key=stranger)
    assert failed(report) == {"signature"}
    assert "the key given" in report.check("signature").detail
    report = Receipt.load(signed["path"]).verify(public_key="ed25519:" + "0" * 32)
    assert failed(report) == {"signature"}
    with pytest.raises(ReceiptError, match="signature"):
        report.raise_for_failure()


def _flip_payload_byte(doc: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(doc["payload"]))
    at = raw.index(b'"name":"total-distance"') + 8  # the job's name, which nothing else binds
    raw[at] ^= 0x20
    doc["payload"] = base64.b64encode(bytes(raw)).decode()


def _flip_payload_character(doc: dict[str, Any]) -> None:
    text = doc["payload"]
    at = len(text) // 2
    doc["payload"] = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _swap_chunks(s: dict[str, Any]) -> None:
    chunks = s["predicate"]["chunks"]
    chunks[1], chunks[4] = chunks[4], chunks[1]


def _swap_outcomes(s: dict[str, Any]) -> None:
    a, b = s["predicate"]["chunks"][1], s["predicate"]["chunks"][4]
    for key in ("digest", "attestations"):
        a[key], b[key] = b[key], a[key]


def _set(*path: Any, change: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def edit(s: dict[str, Any]) -> None:
        node = s
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = change(node[path[-1]])

    return edit


TAMPERING: dict[str, tuple[dict[str, Any], set[str], str]] = {
    # case: (what is changed, the checks that fail, a phrase a failed check's detail holds)
    "a byte of the payload": ({"envelope": _flip_payload_byte}, {"signature"}, "altered"),
    "a base64 character of the payload": (
        {"envelope": _flip_payload_character},
        {"signature"},
        "",
    ),
    "a byte of the signature": (
        {"envelope": lambda d: d["signatures"][0].update(sig=flip_b64(d["signatures"][0]["sig"]))},
        {"signature"},
        "no signature in the envelope verifies",
    ),
    "a chunk's outcome digest": (
        {"statement": _set("predicate", "chunks", 3, "digest", change=flip_hex)},
        {"signature", "output root", "worker signatures"},
        "chunk 3:",
    ),
    "a chunk's input digest": (
        {"statement": _set("predicate", "chunks", 5, "input_digest", change=flip_hex)},
        # workers sign the input digest they were given: their signatures break too
        {"signature", "output root", "input root", "worker signatures"},
        "an input digest was altered",
    ),
    "a worker's signature": (
        {"statement": _set("predicate", "chunks", 2, "attestations", 0, "sig", change=flip_b64)},
        {"signature", "worker signatures"},
        "chunk 2: local-",
    ),
    "two chunks swapped": (
        {"statement": _swap_chunks},
        {"signature", "chunk records", "output root", "input root"},
        "entry 1 is chunk 4",
    ),
    "two chunks' outcomes swapped": (
        {"statement": _swap_outcomes},
        {"signature", "output root", "worker signatures"},
        "chunk 1:",
    ),
    "the tree size": (
        {"statement": _set("predicate", "output", "tree_size", change=lambda n: n + 1)},
        {"signature", "subject", "chunk records"},
        "the tree size is 9",
    ),
    "a byte of the code": (
        {
            "statement": _set(
                "predicate", "kernel", "code", "base64", change=lambda t: flip_b64(t, 40)
            )
        },
        {"signature", "kernel code"},
        "the code was altered",
    ),
    "the payload type": (
        {"envelope": lambda d: d.update(payloadType="application/json")},
        {"envelope", "signature"},
        "not application/vnd.in-toto+json",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_every_tampering_is_caught_and_named(signed, tmp_path, case):
    edits, expected, phrase = TAMPERING[case]
    path = tampered(signed, tmp_path, **edits)
    report = Receipt.load(path).verify(public_key=signed["identity"].public_key)
    if case == "a base64 character of the payload":  # what else fails depends on where
        assert "signature" in failed(report), report.table()
    else:
        assert failed(report) == expected, report.table()
    assert not report.ok and "NOT VERIFIED" in report.table()
    assert any(phrase in c.detail for c in report.failures), report.table()


def test_a_forger_who_signs_again_is_caught_by_the_workers_signatures(signed, tmp_path):
    forger = Identity(Ed25519PrivateKey.generate())
    path = tampered(
        signed,
        tmp_path,
        statement=_set("predicate", "chunks", 3, "digest", change=flip_hex),
        resign=forger,
    )
    unpinned = Receipt.load(path).verify()
    assert failed(unpinned) == {"output root", "worker signatures"}
    assert "chunk 3: local-" in unpinned.check("worker signatures").detail
    pinned = Receipt.load(path).verify(public_key=signed["identity"].public_key)
    assert failed(pinned) == {"signature", "output root", "worker signatures"}
    assert (
        Receipt.load(path)
        .verify(public_key=signed["identity"].fingerprint)
        .check("signature")
        .detail.startswith(f"the receipt names signer {forger.fingerprint}")
    )


def test_base64_with_a_nonzero_pad_bit_is_not_the_same_receipt(signed, tmp_path):
    doc = load_doc(signed["path"])
    sig = doc["signatures"][0]["sig"]  # 64 bytes: 88 characters ending "=="
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".index(sig[-3])
    doc["signatures"][0]["sig"] = (
        sig[:-3]
        + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[last ^ 1]
        + "=="
    )
    assert base64.b64decode(doc["signatures"][0]["sig"]) == base64.b64decode(sig)  # same bytes
    path = tmp_path / "padded.json"
    path.write_text(json.dumps(doc))
    report = Receipt.load(path).verify()
    assert failed(report) == {"envelope"}
    assert "canonical" in report.check("envelope").detail


def test_what_is_not_a_receipt_is_a_receipt_error(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    with pytest.raises(ReceiptError, match="not JSON"):
        Receipt.load(garbage)
    garbage.write_text("[1, 2]")
    with pytest.raises(ReceiptError, match="JSON object"):
        Receipt.load(garbage)
    garbage.write_text(json.dumps({"payload": "e30=", "payloadType": PAYLOAD_TYPE}))
    report = Receipt.load(garbage).verify()
    assert failed(report) == {"envelope"} and "no signatures" in report.check("envelope").detail
    assert all(c.ok is None for c in report.checks[1:])


# --- with the data: recut, re-run ---------------------------------------------------------------


def test_the_data_and_an_audit_hold_for_an_honest_result(signed):
    report = Receipt.load(signed["path"]).verify(data=signed["data"], audit=3, seed=1)
    assert report.ok, report.table()
    assert report.check("input data").detail.startswith("8 chunks cut again from flights.parquet")
    assert report.check("audit").detail.startswith("3 chunks re-run in the local sandbox")
    # the in-memory frame does as well as its file, and a CSV of it as well as Parquet
    assert Receipt.load(signed["path"]).verify(data=signed["frame"], audit="all").ok
    csv = signed["root"] / "flights.csv"
    signed["frame"].to_csv(csv, index=False)
    assert Receipt.load(signed["path"]).verify(data=csv).ok


def test_data_changed_after_the_fact_is_named_by_chunk(signed, tmp_path):
    frame = signed["frame"].copy()
    frame.loc[5_500, "distance"] = -1.0  # a row of chunk 5
    frame.to_parquet(tmp_path / "changed.parquet")
    report = Receipt.load(signed["path"]).verify(data=tmp_path / "changed.parquet", audit="all")
    assert failed(report) == {"input data"}
    assert (
        "changed.parquet gives other input digests for 1 chunk (chunk 5)"
        in report.check("input data").detail
    )
    assert report.check("audit").detail.endswith("1 chunk chosen but not re-run (input differs)")


def forged_result(signed: dict[str, Any], chunk: int) -> Any:
    """The result with one chunk's outcome changed after the fact and everything made
    consistent again: the agreeing workers (their keys are on disk) sign the new outcome and
    the Merkle leaves are rebuilt. Only re-running the chunk can tell."""
    result = signed["result"]
    outcome = result.outcomes[chunk]
    lie = hashlib.sha256(b"a chunk changed after the fact").digest()
    attestations = tuple(
        dataclasses.replace(
            a,
            signature=WorkerIdentity.load_or_create(a.worker, signed["workers"]).sign(
                result_message(
                    result.job_id,
                    a.task,
                    chunk,
                    bytes.fromhex(outcome.input_digest),
                    bytes.fromhex(result.kernel_digest),
                    lie,
                )
            ),
        )
        for a in outcome.attestations
    )
    outcomes = list(result.outcomes)
    outcomes[chunk] = dataclasses.replace(outcome, digest=lie.hex(), attestations=attestations)
    leaves = [chunk_record(o.index, o.input_digest, o.digest) for o in outcomes]
    return dataclasses.replace(result, outcomes=tuple(outcomes), leaves=tuple(leaves))


def test_an_audit_catches_a_chunk_changed_after_the_fact(signed, tmp_path):
    receipt = forged_result(signed, chunk=6).receipt(signed["identity"])
    receipt.save(tmp_path / "forged.json")
    assert receipt.verify().ok  # every signature and root is consistent ...
    report = receipt.verify(data=signed["data"], audit="all")
    assert failed(report) == {"audit"}  # ... but the code computes something else
    detail = report.check("audit").detail
    assert detail.startswith("chunk 6 re-run here gave output ")
    assert "the recorded outcome is not what the code computes on this data" in detail


def test_an_audit_catches_a_worker_that_lied_in_a_hash_job(tmp_path):
    frame = pd.DataFrame({"x": np.arange(4_000, dtype=float)})
    with wgt.Job("liar") as job:
        job.input(frame["x"], chunk_rows=500)
        job.kernel(wgt.kernels.sum())
        job.verify("hash")
    liar = {"local-1": wgt.faults.Liar(rate=1.0, seed=3)}
    with wgt.LocalCluster(workers=2, faults=liar) as cluster:
        result = job.run(on=cluster)
    lied = [o.index for o in result.outcomes if o.workers == ("local-1",)]
    assert lied  # some chunks went to the liar, and hash verification took its word
    receipt = result.receipt()
    assert receipt.verify().ok
    report = receipt.verify(data=frame, audit="all")
    assert failed(report) == {"audit"}
    detail = report.check("audit").detail
    assert f"chunk {lied[0]} re-run here" in detail and "agreed by local-1" in detail


def test_an_audit_needs_the_data(signed):
    with pytest.raises(ConfigError, match="an audit re-runs chunks on their input"):
        Receipt.load(signed["path"]).verify(audit=2)


def test_unsupported_data_is_named(signed, tmp_path):
    sheet = tmp_path / "flights.xlsx"
    sheet.write_bytes(b"not a sheet")
    report = Receipt.load(signed["path"]).verify(data=sheet)
    assert failed(report) == {"input data"}
    assert "Parquet (.parquet, .pq) or CSV (.csv, .tsv)" in report.check("input data").detail


@wgt.Job.define
def shout():
    @wgt.Job.execute
    def execute(chunk: bytes) -> bytes:
        return chunk.upper()


def test_a_defined_job_over_a_files_bytes(tmp_path):
    # what `wgtlab run --data FILE` runs: a @wgt.Job.define job, cut by its default split
    data = tmp_path / "words.txt"
    data.write_bytes(b"the quick brown fox " * 10_000)
    with wgt.LocalCluster(workers=2) as cluster:
        result = shout.run(data.read_bytes(), on=cluster)
    assert len(result.outcomes) == 4
    assert result.input_cut["unit"] == "bytes" and result.input_cut["at_whitespace"] is False
    report = result.receipt().verify(data=data, audit="all")
    assert report.ok, report.table()


def test_a_text_file_cut_at_whitespace_and_a_custom_split(tmp_path):
    text = tmp_path / "text.txt"
    text.write_bytes(b"".join(b"word%d " % i for i in range(5_000)))
    with wgt.Job("words") as job:
        job.input(text, chunk_bytes=3_001)
        job.kernel(wgt.kernels.word_count())
    with wgt.LocalCluster(workers=2) as cluster:
        result = job.run(on=cluster)
        custom = shout.job(text.read_bytes())
        custom.splitter = lambda data: [data[:100], data[100:]]
        cut_by_hand = custom.run(on=cluster)
    assert result.input_cut["source"] == "file" and result.input_cut["at_whitespace"]
    assert result.receipt().verify(data=text, audit=2).ok
    report = cut_by_hand.receipt().verify(data=text)
    assert failed(report) == {"input data"}
    assert "split function" in report.check("input data").detail


def test_a_ces_shard_set(tmp_path, monkeypatch):
    key = bytes(range(32))
    pipe = wgt.CESPipeline(key=key, data_shards=4, parity_shards=2)
    shards = pipe.process(b"alpha beta gamma delta " * 4_000)
    wgt.ces.save(shards, tmp_path / "shards")
    with wgt.Job("shard-words") as job:
        job.input(shards, pipeline=pipe, chunk_bytes=20_000)
        job.kernel(wgt.kernels.word_count())
    with wgt.LocalCluster(workers=2) as cluster:
        result = job.run(on=cluster)
    dataset = result.input_cut["dataset_id"]
    assert len(dataset) == 32
    receipt = result.receipt()
    assert receipt.predicate["input"]["dataset_id"] == dataset
    assert receipt.verify(shards=tmp_path / "shards", pipeline=pipe, audit=2).ok
    monkeypatch.setenv("CES_ENCRYPTION_KEY", key.hex())
    assert receipt.verify(shards=str(tmp_path / "shards"), audit="all").ok
    report = receipt.verify(data=tmp_path / "shards")
    assert failed(report) == {"input data"} and "--shards DIR" in report.check("input data").detail


def test_a_udf_over_records_rebuilds_from_the_receipt(tmp_path):
    frame = pd.DataFrame({"fare": np.arange(120, dtype=float) / 4, "n": np.arange(120)})

    @wgt.udf
    def weighted(rows: list[dict]) -> float:
        return sum(r["fare"] * r["n"] for r in rows)

    with wgt.Job("weighted") as job:
        job.input(frame, chunk_rows=40)
        job.kernel(weighted)
        job.verify("redundancy", replicas=2)
    with wgt.LocalCluster(workers=2) as cluster:
        result = job.run(on=cluster)
    receipt = result.receipt()
    assert receipt.predicate["kernel"]["code"]["kind"] == "udf"
    frame.to_parquet(tmp_path / "fares.parquet")
    report = receipt.verify(data=tmp_path / "fares.parquet", audit="all")
    assert report.ok, report.table()


# --- the identity key ---------------------------------------------------------------------------


def test_the_identity_is_made_once_0600_and_kept(tmp_path):
    path = identity_path()
    assert str(path).startswith(str(tmp_path))  # never the user's config directory here
    first = user_identity()
    assert first.created and first.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = user_identity()
    assert not again.created and again.fingerprint == first.fingerprint
    assert "PRIVATE" not in repr(again)


def test_an_unsafe_identity_file_is_refused_saying_how_to_fix_it(tmp_path):
    made = user_identity()
    os.chmod(made.path, 0o640)
    with pytest.raises(
        IdentityKeyError, match=r"may be read or written by others \(mode 640\).*chmod 600"
    ):
        user_identity()
    os.chmod(made.path, 0o600)
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"not a key")
    os.chmod(junk, 0o600)
    with pytest.raises(IdentityKeyError, match="not an unencrypted PEM"):
        user_identity(junk)
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(rsa_key, 0o600)
    with pytest.raises(IdentityKeyError, match="not an Ed25519 key"):
        user_identity(rsa_key)
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(made.path, 4242, -1)
        with pytest.raises(IdentityKeyError, match="belongs to another user"):
            user_identity()


# --- views, the CLI and the notebook ------------------------------------------------------------


def test_the_card_says_what_ran_on_what_who_agreed_and_whether_it_verified(signed, tmp_path):
    card = Receipt.load(signed["path"])._repr_html_()
    for text in (
        "Receipt",
        "total-distance",
        "sum",
        "8 chunks",
        "local-0",
        "local-2",
        ">verified<",
    ):
        assert text in card
    forged = tampered(
        signed, tmp_path, statement=_set("predicate", "chunks", 3, "digest", change=flip_hex)
    )
    assert ">not verified<" in Receipt.load(forged)._repr_html_()
    assert "worker signatures" in Receipt.load(forged).verify()._repr_html_()


def wgtlab_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wgtlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_cli_verify_prints_the_table_and_exits_0_only_if_all_holds(signed, tmp_path):
    pub = str(signed["root"] / "me.pub")
    ok = wgtlab_cli(
        "verify", str(signed["path"]), "--key", pub, "--data", str(signed["data"]), "--audit", "2"
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[1].split() == ["check", "result", "detail"]
    assert any(line.startswith("audit ") and " ok " in line for line in lines)
    assert lines[-1] == "verdict: VERIFIED: all 12 checks hold"

    bad = tampered(
        signed, tmp_path, statement=_set("predicate", "chunks", 3, "digest", change=flip_hex)
    )
    caught = wgtlab_cli("verify", str(bad), "--key", pub)
    assert caught.returncode == 1
    assert "worker signatures  FAIL    chunk 3: local-" in caught.stdout
    assert caught.stdout.splitlines()[-1].startswith("verdict: NOT VERIFIED: 3 of 10 checks failed")

    receipt = forged_result(signed, chunk=2).receipt(signed["identity"])
    forged = receipt.save(tmp_path / "forged.json")
    assert wgtlab_cli("verify", str(forged), "--key", pub).returncode == 0
    audited = wgtlab_cli(
        "verify", str(forged), "--key", pub, "--data", str(signed["data"]), "--audit", "all"
    )
    assert audited.returncode == 1
    assert "audit              FAIL    chunk 2 re-run here gave output" in audited.stdout

    no_data = wgtlab_cli("verify", str(signed["path"]), "--audit", "2")
    assert no_data.returncode == 1 and "an audit re-runs chunks on their input" in no_data.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{")
    broken = wgtlab_cli("verify", str(garbage))
    assert broken.returncode == 1 and "ReceiptError" in broken.stderr


def test_cli_identity_shows_the_key_and_refuses_an_unsafe_file(tmp_path):
    env = {"WGTLAB_IDENTITY": str(tmp_path / "cli" / "identity.key")}
    shown = wgtlab_cli("identity", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "made a new identity key" in shown.stderr
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines()[:2])
    identity = user_identity(tmp_path / "cli" / "identity.key")
    assert fields["fingerprint"].strip() == identity.fingerprint
    pem = wgtlab_cli("identity", "--pem", env=env)
    assert pem.stdout == identity.public_pem and pem.stderr == ""
    os.chmod(tmp_path / "cli" / "identity.key", 0o604)
    refused = wgtlab_cli("identity", env=env)
    assert refused.returncode == 1
    assert "IdentityKeyError" in refused.stderr and "chmod 600" in refused.stderr


def test_the_magics_make_and_verify_a_receipt(ip, signed, tmp_path, capsys):
    ip.user_ns["res"] = signed["result"]
    saved = tmp_path / "from-the-notebook.json"
    assert run(ip, f"%wgt receipt res -o rec --save {saved}").success
    assert isinstance(ip.user_ns["rec"], Receipt) and saved.is_file()
    report = run(ip, f"%wgt verify-receipt {saved} --data {signed['data']} --audit 1").result
    assert isinstance(report, ReceiptReport) and report.ok
    bad = tampered(
        signed, tmp_path, statement=_set("predicate", "chunks", 3, "digest", change=flip_hex)
    )
    outcome = run(ip, f"%wgt verify-receipt {bad}")
    assert not outcome.success
    assert "NOT VERIFIED" in str(outcome.error_in_exec)
