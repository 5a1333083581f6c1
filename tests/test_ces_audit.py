"""The CES key audit log: one chained entry per key use, tampering found, and fail closed.

Real pipelines, real files in temporary directories, real locks and processes. Where a test
needs file permissions to bite and runs as root (CI containers), the key operation runs with
the effective user switched to nobody.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from ces_support import KEY, SEGMENT, pipeline, sample

import wgtlab as wgt
from wgtlab.ces import audit
from wgtlab.ces.format import HEADER_BYTES, ShardHeader
from wgtlab.ces.keys import KeySchedule
from wgtlab.cli import main

NEW_KEY = bytes(range(200, 232))
MASTER = bytes(range(100, 132))
TENANT = "acme-corp"
NOBODY = 65534


@pytest.fixture(autouse=True)
def audit_variable_unset(monkeypatch):
    monkeypatch.delenv(audit.AUDIT_LOG_ENV, raising=False)


@pytest.fixture
def log(tmp_path) -> Path:
    return tmp_path / "audit.jsonl"


def key_file(log: Path) -> Path:
    return log.with_name(log.name + ".key")


def entries(log: Path) -> list[audit.AuditEntry]:
    rows = list(audit.read_entries(log))
    assert [problem for _, _, problem in rows if problem] == []
    return [entry for _, entry, _ in rows if entry is not None]


def dataset_of(shards: list[bytes]) -> str:
    return ShardHeader.parse(shards[0][:HEADER_BYTES]).dataset_id.hex()


# --- what is recorded --------------------------------------------------------------------------


def test_every_key_use_appends_exactly_its_entry(tmp_path, log):
    pipe = pipeline(3, 2, audit_log=log)
    new = wgt.CESPipeline(NEW_KEY, audit_log=log)
    data = sample(3 * SEGMENT + 5)
    before = time.time()

    shards = pipe.process(data)
    assert pipe.reconstruct(shards) == data
    (tmp_path / "data.bin").write_bytes(data)
    manifest = pipe.process_file(tmp_path / "data.bin", tmp_path / "set")
    assert pipe.reconstruct_file(tmp_path / "set", tmp_path / "back.bin") == len(data)
    wgt.ces.rotate(shards, pipe, new)
    wgt.ces.rotate_store(tmp_path / "set", tmp_path / "set-v2", pipe, new)
    tenant = wgt.CESPipeline.for_tenant(TENANT, MASTER, audit_log=log)
    tenant_key = wgt.ces.derive_tenant_key(TENANT, MASTER, audit_log=log)
    wgt.ces.inspect(shards, key=pipe)
    wgt.ces.inspect(shards)  # no key, no key use: no entry
    after = time.time()

    ds, stored = dataset_of(shards), manifest.dataset_id
    tenant_hash = hashlib.sha256(TENANT.encode()).hexdigest()
    assert KeySchedule.from_key(tenant_key).key_id.hex() == tenant.key_id
    got = entries(log)
    assert [(e.op, e.key_id, e.new_key_id, e.tenant, e.dataset_id, e.shards) for e in got] == [
        ("encrypt", pipe.key_id, None, None, ds, 5),
        ("decrypt", pipe.key_id, None, None, ds, 5),
        ("encrypt", pipe.key_id, None, None, stored, 5),
        ("decrypt", pipe.key_id, None, None, stored, 5),
        ("rotate", pipe.key_id, new.key_id, None, ds, 5),
        ("rotate", pipe.key_id, new.key_id, None, stored, 5),
        ("derive", tenant.key_id, None, tenant_hash, None, None),
        ("derive", tenant.key_id, None, tenant_hash, None, None),
        ("inspect", pipe.key_id, None, None, ds, 5),
    ]
    assert [e.seq for e in got] == list(range(1, 10))
    assert [e.prev_mac for e in got] == [audit.GENESIS_MAC] + [e.mac for e in got[:-1]]
    who = (os.getpid(), pwd.getpwuid(os.geteuid()).pw_name, socket.gethostname())
    assert {(e.pid, e.user, e.host) for e in got} == {who}
    for e in got:
        assert before - 1e-6 <= e.epoch <= after + 1e-6
        stamp = datetime.datetime.strptime(e.time, "%Y-%m-%dT%H:%M:%S.%fZ")
        assert stamp.replace(tzinfo=datetime.timezone.utc).timestamp() == pytest.approx(e.epoch)
    assert audit.verify(log).ok
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file(log).stat().st_mode) == 0o600
    assert len(key_file(log).read_bytes()) == audit.CHAIN_KEY_BYTES


def test_no_key_material_reaches_the_log(tmp_path, log):
    pipe = pipeline(2, 1, audit_log=log)
    shards = pipe.process(sample(2 * SEGMENT))
    pipe.reconstruct(shards)
    wgt.ces.rotate(shards, pipe, NEW_KEY)
    tenant_key = wgt.ces.derive_tenant_key(TENANT, MASTER, audit_log=log)
    wgt.CESPipeline.for_tenant(TENANT, MASTER, audit_log=log)

    raw = log.read_bytes()
    chain_key = key_file(log).read_bytes()
    secrets = [KEY, NEW_KEY, MASTER, tenant_key, chain_key]
    for key in (KEY, NEW_KEY, tenant_key):
        schedule = KeySchedule.from_key(key)
        secrets += [schedule.seal_key, schedule.mac_key]
    for secret in secrets:
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode()):
            assert form not in raw
            assert form[:16] not in raw  # not even a prefix
    assert TENANT.encode() not in raw  # tenants appear only as a hash


def test_a_use_that_fails_before_touching_data_has_no_entry(log):
    shards = pipeline(2, 1).process(b"data")
    with pytest.raises(wgt.KeyMismatchError):
        wgt.CESPipeline(NEW_KEY, audit_log=log).reconstruct(shards)
    assert not log.exists()


# --- on, off, and where ------------------------------------------------------------------------


def test_off_by_default_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = pipeline(2, 1)
    shards = pipe.process(b"data")
    pipe.reconstruct(shards)
    wgt.ces.rotate(shards, pipe, NEW_KEY)
    wgt.CESPipeline.for_tenant(TENANT, MASTER)
    assert pipe.audit_log is None
    assert list(tmp_path.iterdir()) == []


def test_the_variable_turns_it_on_and_an_argument_wins(tmp_path, monkeypatch):
    from_env, from_arg = tmp_path / "env.jsonl", tmp_path / "arg.jsonl"
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(from_env))
    pipeline(2, 1).process(b"one")
    pipeline(2, 1, audit_log=from_arg).process(b"two")
    wgt.ces.derive_tenant_key(TENANT, MASTER)
    assert [e.op for e in entries(from_env)] == ["encrypt", "derive"]
    assert [e.op for e in entries(from_arg)] == ["encrypt"]


def test_a_relative_path_is_fixed_when_the_pipeline_is_made(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    pipe = pipeline(2, 1, audit_log="audit.jsonl")
    monkeypatch.chdir(tmp_path / "b")
    pipe.process(b"data")
    assert pipe.audit_log == str(tmp_path / "a" / "audit.jsonl")
    assert len(entries(tmp_path / "a" / "audit.jsonl")) == 1


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_is_refused_naming_it(monkeypatch, value):
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, value)
    expected = "the environment variable WGTLAB_AUDIT_LOG is empty"
    with pytest.raises(wgt.AuditLogError, match=expected):
        pipeline(2, 1)
    with pytest.raises(wgt.AuditLogError, match=expected):
        wgt.ces.derive_tenant_key(TENANT, MASTER)


def test_a_directory_is_refused_naming_where_it_came_from(tmp_path, monkeypatch):
    with pytest.raises(wgt.AuditLogError, match="the audit_log argument names a directory"):
        pipeline(2, 1, audit_log=tmp_path)
    monkeypatch.setenv(audit.AUDIT_LOG_ENV, str(tmp_path))
    with pytest.raises(wgt.AuditLogError) as caught:
        pipeline(2, 1)
    assert f"WGTLAB_AUDIT_LOG names a directory ({tmp_path})" in str(caught.value)
    assert isinstance(caught.value, wgt.CESError)


@pytest.mark.parametrize("value", [False, True, 3])
def test_audit_log_is_a_path_or_none(value):
    with pytest.raises(wgt.AuditLogError, match="path of the audit log file or None"):
        pipeline(2, 1, audit_log=value)


# --- tampering ---------------------------------------------------------------------------------


@pytest.fixture
def chained(log) -> Path:
    """A log of six entries: encrypt, decrypt, encrypt, decrypt, encrypt, decrypt."""
    pipe = pipeline(2, 1, audit_log=log)
    for i in range(3):
        pipe.reconstruct(pipe.process(b"row %d" % i))
    assert audit.verify(log).entries == 6
    return log


def lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines(keepends=True)


def edited(line: bytes, **fields: object) -> bytes:
    doc = json.loads(line)
    doc.update(fields)
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def forged(line: bytes) -> bytes:
    """The next entry after ``line``, well formed but signed with a key that is not the log's."""
    last = audit.AuditEntry.parse(line.rstrip(b"\n"))
    entry = dataclasses.replace(last, seq=last.seq + 1, op="decrypt", prev_mac=last.mac)
    return dataclasses.replace(entry, mac=entry.expected_mac(os.urandom(32))).line()


TAMPERING = {
    "a line deleted": (
        lambda ls: ls[:2] + ls[3:],
        3,
        "entry 4 where entry 3 belongs: entry 3 removed",
    ),
    "the first line deleted": (lambda ls: ls[1:], 1, "entry 2 where entry 1 belongs"),
    "two lines deleted": (
        lambda ls: ls[:1] + ls[3:],
        2,
        "entry 4 where entry 2 belongs: entries 2 to 3 removed",
    ),
    "a field edited": (
        lambda ls: [*ls[:3], edited(ls[3], op="encrypt"), *ls[4:]],
        4,
        "entry 4: its mac does not match its contents",
    ),
    "the user edited": (
        lambda ls: [ls[0], edited(ls[1], user="mallory"), *ls[2:]],
        2,
        "entry 2: its mac does not match",
    ),
    "two lines swapped": (
        lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]],
        3,
        "entry 4 where entry 3 belongs",
    ),
    "a mac changed": (
        lambda ls: [*ls[:2], edited(ls[2], mac="ab" * 32), *ls[3:]],
        3,
        "entry 3: its mac does not match",
    ),
    "a forged line appended": (
        lambda ls: [*ls, forged(ls[-1])],
        7,
        "entry 7: its mac does not match its contents: the entry was edited, or written "
        "without this log's key (forged)",
    ),
    "an old line replayed at the end": (
        lambda ls: [*ls, ls[1]],
        7,
        "entry 2 again after entry 6: lines reordered or duplicated",
    ),
    "a line reformatted": (
        lambda ls: [ls[0], json.dumps(json.loads(ls[1])).encode() + b"\n", *ls[2:]],
        2,
        "not in canonical form",
    ),
    "a line of garbage inserted": (
        lambda ls: [*ls[:2], b"all is well\n", *ls[2:]],
        3,
        "not a valid audit entry: not JSON",
    ),
    "the last line cut short": (
        lambda ls: [*ls[:-1], ls[-1][:40]],
        6,
        "incomplete last line",
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_verify_names_the_first_tampered_entry(chained, capsys, case):
    tamper, line, problem = TAMPERING[case]
    chained.write_bytes(b"".join(tamper(lines(chained))))

    report = audit.verify(chained)
    assert not report.ok
    assert report.line == line
    assert report.problem.startswith(f"line {line}: ")
    assert problem in report.problem
    assert report.entries == line - 1  # the good ones before it

    assert main(["audit", "verify", str(chained)]) == 1
    out = capsys.readouterr().out
    assert "chain BROKEN" in out and f"line {line}: " in out and problem in out


@pytest.mark.parametrize(
    "case", ["a field edited", "a forged line appended", "the last line cut short"]
)
def test_a_tampered_tail_stops_every_key_use(chained, case):
    tamper, _, _ = TAMPERING[case]
    if case == "a field edited":  # the last entry, this time
        tamper = lambda ls: [*ls[:-1], edited(ls[-1], shards=99)]  # noqa: E731
    chained.write_bytes(b"".join(tamper(lines(chained))))
    tampered = chained.read_bytes()
    with pytest.raises(wgt.AuditLogError, match="key operation was refused") as caught:
        pipeline(2, 1, audit_log=chained).process(b"more")
    assert "wgtlab audit verify" in str(caught.value)
    assert chained.read_bytes() == tampered


def test_an_emptied_log_is_found_and_refused(chained):
    chained.write_bytes(b"")
    report = audit.verify(chained)
    assert not report.ok and "empty but its key file exists" in report.problem
    with pytest.raises(wgt.AuditLogError, match=r"is empty, but its key file .* exists"):
        pipeline(2, 1, audit_log=chained).process(b"more")


def test_a_truncated_tail_is_found_only_against_an_anchor(chained, capsys):
    tip = audit.verify(chained).tip
    assert tip is not None and tip[0] == 6
    chained.write_bytes(b"".join(lines(chained)[:4]))

    assert audit.verify(chained).ok  # the chain alone cannot tell: the documented limit
    report = audit.verify(chained, anchor=tip)
    assert not report.ok
    assert "ends at entry 4, before the anchor's entry 6" in report.problem

    assert main(["audit", "verify", str(chained), "--anchor", f"{tip[0]}:{tip[1]}"]) == 1
    assert "entries were removed from the end" in capsys.readouterr().out
    assert main(["audit", "verify", str(chained), "--anchor", "4"]) == 1
    assert "--anchor is SEQ:MAC" in capsys.readouterr().err


def test_whoever_holds_the_key_file_can_rewrite_the_chain_but_not_past_an_anchor(chained):
    tip = audit.verify(chained).tip
    assert tip is not None
    chain_key = key_file(chained).read_bytes()
    rewritten, prev = [], audit.GENESIS_MAC
    for entry in entries(chained):
        if entry.seq == 2:
            entry = dataclasses.replace(entry, user="mallory")
        entry = dataclasses.replace(entry, prev_mac=prev)
        entry = dataclasses.replace(entry, mac=entry.expected_mac(chain_key))
        rewritten.append(entry.line())
        prev = entry.mac
    chained.write_bytes(b"".join(rewritten))

    assert audit.verify(chained).ok  # documented: the key file's reader can rewrite it all
    report = audit.verify(chained, anchor=tip)
    assert not report.ok and report.line == 6
    assert "is not the entry the anchor" in report.problem


# --- the key file ------------------------------------------------------------------------------


def test_a_missing_key_file_refuses_writing_and_verifying(chained, capsys):
    key_file(chained).unlink()
    with pytest.raises(wgt.AuditLogError, match=r"key file .* is missing"):
        pipeline(2, 1, audit_log=chained).process(b"more")
    with pytest.raises(wgt.AuditLogError, match=r"key file .* is missing"):
        audit.verify(chained)
    assert main(["audit", "verify", str(chained)]) == 1
    assert "AuditLogError" in capsys.readouterr().err


def test_a_key_file_others_can_read_is_refused(chained):
    os.chmod(key_file(chained), 0o644)
    with pytest.raises(wgt.AuditLogError, match=r"may be read or written by others .*chmod 600"):
        pipeline(2, 1, audit_log=chained).process(b"more")
    with pytest.raises(wgt.AuditLogError, match="chmod 600"):
        audit.verify(chained)


def test_a_damaged_or_replaced_key_file_is_refused(chained):
    key = key_file(chained)
    original = key.read_bytes()
    key.write_bytes(original[:-1])
    with pytest.raises(wgt.AuditLogError, match="is damaged"):
        pipeline(2, 1, audit_log=chained).process(b"more")
    key.write_bytes(os.urandom(32))
    with pytest.raises(wgt.AuditLogError, match="does not verify under its key file"):
        pipeline(2, 1, audit_log=chained).process(b"more")
    report = audit.verify(chained)
    assert not report.ok and report.line == 1
    key.write_bytes(original)
    assert audit.verify(chained).ok


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_of_another_user_is_refused_for_writing_not_verifying(chained):
    os.chown(key_file(chained), NOBODY, NOBODY)
    with pytest.raises(wgt.AuditLogError, match="belongs to another user"):
        pipeline(2, 1, audit_log=chained).process(b"more")
    assert audit.verify(chained).ok  # an auditor may check another user's log


def test_verify_takes_another_key_file(chained, tmp_path, capsys):
    copy = tmp_path / "shipped" / "audit.jsonl"
    copy.parent.mkdir()
    shutil.copy(chained, copy)
    assert main(["audit", "verify", str(copy)]) == 1
    assert "is missing" in capsys.readouterr().err
    assert main(["audit", "verify", str(copy), "--key-file", str(key_file(chained))]) == 0
    assert "chain holds: 6 entries" in capsys.readouterr().out


# --- fail closed -------------------------------------------------------------------------------


@pytest.fixture
def world():
    """A directory every user can enter (pytest's own are root's only when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="wgt-audit-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@contextlib.contextmanager
def unprivileged():
    """Run the block as a user file permissions apply to: nobody when we are root."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def inputs(where: Path) -> tuple[bytes, Path, list[bytes], Path]:
    """Data, a file of it, its shards and a stored shard set, all readable by every user; and
    an empty directory every user may write to, where outputs would go."""
    data = sample(2 * SEGMENT + 7)
    (where / "data.bin").write_bytes(data)
    shards = pipeline(2, 1).process(data)
    wgt.ces.save(shards, where / "set")
    out = where / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    # Load lazily imported modules now, while every file can be read.
    pipeline(2, 1).process_file(where / "data.bin", where / "warm")
    pipeline(2, 1).reconstruct_file(where / "warm", where / "warm.bin")
    return data, where / "data.bin", shards, out


def assert_every_key_use_refused(
    pipe: wgt.CESPipeline, where: Path, data: bytes, shards: list[bytes], match: str
) -> None:
    """Each key operation raises AuditLogError, saying ``match``, and writes nothing."""
    out = where / "out"
    refusals = {
        "process": lambda: pipe.process(data),
        "reconstruct": lambda: pipe.reconstruct(shards),
        "process_file": lambda: pipe.process_file(where / "data.bin", out / "set"),
        "reconstruct_file": lambda: pipe.reconstruct_file(where / "set", out / "data.bin"),
        "rotate": lambda: wgt.ces.rotate(shards, pipe, NEW_KEY),
        "rotate_store": lambda: wgt.ces.rotate_store(where / "set", out / "v2", pipe, NEW_KEY),
        "inspect": lambda: wgt.ces.inspect(shards, key=pipe),
    }
    for name, use in refusals.items():
        with pytest.raises(wgt.AuditLogError, match=match) as caught:
            use()
        message = str(caught.value)
        assert "the key operation was refused" in message, name
        assert KEY.hex() not in message and NEW_KEY.hex() not in message
    with pytest.raises(wgt.AuditLogError):
        wgt.ces.derive_tenant_key(TENANT, MASTER, audit_log=pipe.audit_log)
    with pytest.raises(wgt.AuditLogError):
        wgt.CESPipeline.for_tenant(TENANT, MASTER, audit_log=pipe.audit_log)
    assert list(out.iterdir()) == []  # no shard, no rebuilt file, no partial file


def test_a_missing_directory_refuses_every_key_use(world):
    data, _, shards, _ = inputs(world)
    pipe = pipeline(2, 1, audit_log=world / "no" / "such" / "audit.jsonl")
    assert_every_key_use_refused(
        pipe, world, data, shards, r"cannot open .*: No such file or directory; .*Create the"
    )
    assert not (world / "no").exists()


def test_a_directory_in_place_of_the_log_refuses_every_key_use(world):
    data, _, shards, _ = inputs(world)
    pipe = pipeline(2, 1, audit_log=world / "audit.jsonl")
    (world / "audit.jsonl").mkdir()  # after the pipeline was made, so only the use can notice
    assert_every_key_use_refused(pipe, world, data, shards, "Is a directory")


def test_a_read_only_directory_refuses_every_key_use(world):
    data, _, shards, _ = inputs(world)
    logs = world / "logs"
    logs.mkdir()
    os.chmod(logs, 0o555)
    pipe = pipeline(2, 1, audit_log=logs / "audit.jsonl")
    with unprivileged():
        assert_every_key_use_refused(
            pipe, world, data, shards, r"Permission denied; .*writable by this user"
        )
    assert list(logs.iterdir()) == []


def test_an_unreadable_key_file_refuses_every_key_use(world):
    data, _, shards, _ = inputs(world)
    log = world / "audit.jsonl"
    pipeline(2, 1, audit_log=log).process(b"first")
    if os.geteuid() == 0:
        os.chown(log, NOBODY, NOBODY)  # nobody may append to the log, but not read its key
    else:
        os.chmod(key_file(log), 0)
    pipe = pipeline(2, 1, audit_log=log)
    with unprivileged():
        assert_every_key_use_refused(pipe, world, data, shards, "cannot read its key file")
    assert len(entries(log)) == 1


def test_a_failed_append_is_cut_back_and_refuses(log):
    """A write that fails halfway (here: the file size limit; on a full disk, ENOSPC) leaves
    the log as it was, so the chain stays whole and the next writer can go on."""
    pipeline(2, 1, audit_log=log).process(b"first")
    before = log.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, resource, signal
        import wgtlab as wgt
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = os.path.getsize({str(log)!r}) + 100  # room for part of an entry only
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        pipe = wgt.CESPipeline({KEY!r}, data_shards=2, parity_shards=1, audit_log={str(log)!r})
        try:
            pipe.process(b"second")
        except wgt.AuditLogError as exc:
            print("refused:", exc)
        else:
            print("sealed without an entry")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.stdout.startswith("refused:"), run.stdout + run.stderr
    assert "cannot append" in run.stdout and "File too large" in run.stdout
    assert log.read_bytes() == before
    assert audit.verify(log).ok
    pipeline(2, 1, audit_log=log).process(b"third")
    assert [e.seq for e in entries(log)] == [1, 2]


def test_a_lock_held_too_long_refuses(log, monkeypatch):
    pipe = pipeline(2, 1, audit_log=log)
    pipe.process(b"first")
    monkeypatch.setattr(audit, "LOCK_TIMEOUT_S", 0.2)
    with open(log, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(wgt.AuditLogError, match=r"stayed locked by another writer for 0\.2 s"):
            pipe.process(b"second")
    pipe.process(b"third")
    assert [e.seq for e in entries(log)] == [1, 2]


# --- many writers ------------------------------------------------------------------------------

PER_PROCESS = 40
THREADS, PER_THREAD = 4, 20


def test_processes_and_threads_appending_at_once_make_one_valid_chain(tmp_path, log):
    start = tmp_path / "start"
    child = textwrap.dedent(
        f"""
        import os, time
        import wgtlab as wgt
        pipe = wgt.CESPipeline({KEY!r}, data_shards=2, parity_shards=1, audit_log={str(log)!r})
        open({str(tmp_path)!r} + f"/ready-{{os.getpid()}}", "w").close()
        while not os.path.exists({str(start)!r}):
            time.sleep(0.002)
        for i in range({PER_PROCESS}):
            pipe.process(b"child %d" % i)
        print(os.getpid())
        """
    )
    children = [
        subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pipe = pipeline(2, 1, audit_log=log)  # one pipeline shared by the threads
    barrier = threading.Barrier(THREADS)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(PER_THREAD):
            pipe.process(b"thread %d row %d" % (n, i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    start.touch()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = [int(c.communicate(timeout=120)[0]) for c in children]
    assert [c.returncode for c in children] == [0, 0]

    total = 2 * PER_PROCESS + THREADS * PER_THREAD
    report = audit.verify(log)
    assert report.ok and report.entries == total, report.problem
    got = entries(log)
    assert [e.seq for e in got] == list(range(1, total + 1))
    by_pid = Counter(e.pid for e in got)
    assert by_pid == {pids[0]: PER_PROCESS, pids[1]: PER_PROCESS, os.getpid(): total - 80}


# --- the CLI -----------------------------------------------------------------------------------


def test_show_lists_the_entries_without_the_key(chained, capsys):
    key_file(chained).unlink()  # show checks nothing, so it needs no key
    assert main(["audit", "show", str(chained)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["SEQ", "TIME", "(UTC)", "OP"]
    assert [row.split()[3] for row in out[1:7]] == ["encrypt", "decrypt"] * 3
    assert out[-1].startswith("6 entries; nothing was verified")

    assert main(["audit", "show", str(chained), "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["seq"] for d in docs] == [1, 2, 3, 4, 5, 6]
    assert docs[0]["key_id"] == pipeline(2, 1).key_id


def test_show_lists_lines_that_are_not_entries_and_fails(chained, capsys):
    chained.write_bytes(b"".join([*lines(chained)[:2], b"{}\n", *lines(chained)[2:]]))
    assert main(["audit", "show", str(chained)]) == 1
    out = capsys.readouterr().out
    assert "line 3: not an audit entry: fields missing" in out
    assert "6 entries, 1 unreadable lines" in out
    assert main(["audit", "show", str(chained), "--json"]) == 1
    docs = json.loads(capsys.readouterr().out)
    assert docs[2]["line"] == 3 and "fields missing" in docs[2]["error"]


def test_verify_prints_the_tip_to_keep(chained, capsys):
    assert main(["audit", "verify", str(chained)]) == 0
    out = capsys.readouterr().out
    tip = audit.verify(chained).tip
    assert tip is not None
    assert "chain holds: 6 entries" in out and f"--anchor {tip[0]}:{tip[1]}" in out
    assert main(["audit", "verify", str(chained), "--anchor", f"{tip[0]}:{tip[1]}"]) == 0


def test_a_missing_log_is_an_error_not_a_broken_chain(tmp_path, capsys):
    assert main(["audit", "show", str(tmp_path / "none.jsonl")]) == 1
    assert "cannot read the audit log" in capsys.readouterr().err
