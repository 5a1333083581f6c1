"""The CES key audit log: one chained JSON line per use of a key, and its verification.

Off unless ``$WGTLAB_AUDIT_LOG`` or a pipeline's ``audit_log=`` names a file. When on, every
encrypt, decrypt, rotation, tenant derivation and keyed inspection appends an entry *before*
any plaintext or ciphertext is produced, and a log that cannot be written refuses the key
operation (``AuditLogError``), as Vault's audit devices do.

An entry (one line of canonical JSON, fields in this order)::

    v           format version, 1
    seq         1, 2, 3, ... with no gaps
    time epoch  when (UTC, ISO 8601 with microseconds; and Unix seconds)
    op          encrypt | decrypt | rotate | derive | inspect
    key_id      the key's public id (HKDF of the key, as written in shard headers), never the key
    new_key_id  rotate only: the id of the key the data is re-sealed under
    tenant      derive only: SHA-256 (hex) of the tenant id; key_id is then the derived key's id
    dataset_id  the shard set's id (null for derive, and for inspect when nothing is readable)
    shards      shards in the set, data + parity (null where dataset_id is)
    pid user host   who used the key (user: the name of the effective uid)
    prev_mac    the previous entry's mac (64 zeros for the first)
    mac         HMAC-SHA256 over b"wgt-ces-audit-v1\\n" + this line without "mac"

An entry records that the key is about to be used: an operation that fails later (damaged
shards) keeps its entry; one that fails before the key touches any data (a wrong key, no
readable shard) has none.

The chain key is 32 random bytes in ``<log>.key`` (mode 0600, owned by the writing user, made
with the log's first entry, never rewritten; move or rotate the log and its key together).
What the chain protects against, and what it cannot:

- Someone who can write the log but not read the key file (a group-writable log, a log
  shipper, a restored backup) cannot edit, remove, reorder, insert or forge an entry without
  ``verify`` naming the first one broken. Writers check the last entry before appending, so a
  tampered tail also stops every key use until someone looks.
- Removing entries from the *end* leaves a valid, shorter chain: ``verify`` reports the last
  entry and its mac (the tip); keep tips elsewhere and pass one as ``anchor`` to detect this.
- Whoever can read the key file (its owner, root) can rewrite the whole chain; only entries
  shipped off the machine (syslog, an append-only or WORM store) or an anchor kept elsewhere
  survive that. Ship the lines if the log must hold against the machine's own administrators.

Writers (threads and processes) serialise on an exclusive ``flock`` of the log around reading
the last entry, appending and ``fsync``; a failed append is cut back so the chain stays whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import getpass
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import IO

from wgtlab.errors import AuditLogError, ConfigError
from wgtlab.keyfiles import read_secret

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the audit log cannot be turned on
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "AUDIT_LOG_ENV",
    "OPS",
    "AuditEntry",
    "AuditLog",
    "AuditPath",
    "ChainReport",
    "audit_log_from",
    "read_entries",
    "verify",
]

AuditPath = str | os.PathLike[str]
Entries = Generator[tuple[int, "AuditEntry | None", str], None, None]

AUDIT_LOG_ENV = "WGTLAB_AUDIT_LOG"
FORMAT_VERSION = 1
OPS = ("encrypt", "decrypt", "rotate", "derive", "inspect")
KEY_FILE_SUFFIX = ".key"
CHAIN_KEY_BYTES = 32
GENESIS_MAC = "0" * 64
LOCK_TIMEOUT_S = 30.0  # a writer holds the lock for one append; 30 s means something is stuck
MAX_NAME_CHARS = 256  # user and host names are cut to this, so every line stays small
MAX_LINE_BYTES = 16 << 10  # far above any entry; a longer last line is not one
_MAC_DOMAIN = b"wgt-ces-audit-v1\n"
_FIELDS = (
    "v",
    "seq",
    "time",
    "epoch",
    "op",
    "key_id",
    "new_key_id",
    "tenant",
    "dataset_id",
    "shards",
    "pid",
    "user",
    "host",
    "prev_mac",
    "mac",
)
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@dataclass(frozen=True)
class AuditEntry:
    """One use of a CES key, as one line of the audit log (see the module docstring)."""

    seq: int
    time: str
    epoch: float
    op: str
    key_id: str
    new_key_id: str | None
    tenant: str | None
    dataset_id: str | None
    shards: int | None
    pid: int
    user: str
    host: str
    prev_mac: str
    mac: str

    def fields(self) -> dict[str, object]:
        """The entry as the JSON object written, fields in their fixed order."""
        return {"v": FORMAT_VERSION, **asdict(self)}

    def line(self) -> bytes:
        """The entry's line in the log: canonical JSON and a newline."""
        return _canonical(self.fields()) + b"\n"

    def expected_mac(self, chain_key: bytes) -> str:
        """The mac this entry must carry under ``chain_key`` (binds every other field)."""
        unsigned = {k: v for k, v in self.fields().items() if k != "mac"}
        return hmac.new(chain_key, _MAC_DOMAIN + _canonical(unsigned), hashlib.sha256).hexdigest()

    @classmethod
    def parse(cls, line: bytes) -> AuditEntry:
        """The entry on ``line`` (without its newline), every field checked; anything else is
        a ``ValueError`` saying what is wrong (a field name, never a value)."""
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            raise ValueError("not JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if list(doc) != list(_FIELDS):
            missing = [f for f in _FIELDS if f not in doc]
            extra = [f for f in doc if f not in _FIELDS]
            if missing or extra:
                raise ValueError(f"fields missing {missing} or unknown {extra}")
            raise ValueError("fields out of order")
        if not _is_int(doc["v"]) or doc["v"] != FORMAT_VERSION:
            raise ValueError(f"format version is not {FORMAT_VERSION}")
        op = doc["op"]
        if op not in OPS:
            raise ValueError(f"'op' is not one of {', '.join(OPS)}")
        problems = [
            name
            for name, ok in (
                ("seq", _is_int(doc["seq"]) and doc["seq"] >= 1),
                ("time", isinstance(doc["time"], str) and _TIME.fullmatch(doc["time"])),
                ("epoch", _is_number(doc["epoch"])),
                ("key_id", _hex(doc["key_id"], _HEX32)),
                ("new_key_id", _optional(doc["new_key_id"], op == "rotate", _HEX32)),
                ("tenant", _optional(doc["tenant"], op == "derive", _HEX64)),
                ("dataset_id", doc["dataset_id"] is None or _hex(doc["dataset_id"], _HEX32)),
                ("shards", doc["shards"] is None or (_is_int(doc["shards"]) and doc["shards"] > 0)),
                ("pid", _is_int(doc["pid"]) and doc["pid"] >= 0),
                ("user", _is_name(doc["user"])),
                ("host", _is_name(doc["host"])),
                ("prev_mac", _hex(doc["prev_mac"], _HEX64)),
                ("mac", _hex(doc["mac"], _HEX64)),
            )
            if not ok
        ]
        if op == "derive" and doc["dataset_id"] is not None:
            problems.append("dataset_id")
        if (doc["dataset_id"] is None) != (doc["shards"] is None):
            problems.append("shards")
        if problems:
            raise ValueError(f"field {problems[0]!r} is not valid for op {op!r}")
        del doc["v"]
        entry = cls(**doc)
        if entry.line() != bytes(line) + b"\n":
            raise ValueError("not in canonical form (re-serialised or hand-edited)")
        return entry


@dataclass(frozen=True)
class ChainReport:
    """What ``verify`` found: ``ok`` only if every entry is intact and in its place.

    ``line`` and ``seq`` name the first broken entry (its line number in the file, and the seq
    it claims when readable); ``tip`` is the last good entry's ``(seq, mac)``.
    """

    path: str
    ok: bool
    entries: int
    problem: str = ""
    line: int | None = None
    seq: int | None = None
    tip: tuple[int, str] | None = None

    def summary(self) -> str:
        if not self.ok:
            return f"{self.path}: chain BROKEN: {self.problem}"
        if self.tip is None:
            return f"{self.path}: chain holds: no entries"
        seq, mac = self.tip
        return (
            f"{self.path}: chain holds: {self.entries} entries, last seq {seq}, tip {seq}:{mac}\n"
            "Entries removed from the end cannot be detected by the chain alone: keep the tip "
            f"elsewhere and check later with `wgtlab audit verify {self.path} --anchor "
            f"{seq}:{mac}`."
        )


# --- turning the log on ------------------------------------------------------------------------


def audit_log_from(audit_log: AuditPath | None) -> AuditLog | None:
    """The audit log a CES operation writes to: ``audit_log`` if given, else the file named by
    ``$WGTLAB_AUDIT_LOG``, else None (off). An empty value or a directory is an
    ``AuditLogError`` naming where it came from."""
    if audit_log is not None:
        if isinstance(audit_log, bool) or not isinstance(audit_log, str | os.PathLike):
            raise AuditLogError(
                f"audit_log must be the path of the audit log file or None, not "
                f"{type(audit_log).__name__}; the log is off unless a path is given here or in "
                f"${AUDIT_LOG_ENV}"
            )
        return AuditLog(os.fspath(audit_log), source="the audit_log argument")
    value = os.environ.get(AUDIT_LOG_ENV)
    if value is None:
        return None
    return AuditLog(value, source=f"the environment variable {AUDIT_LOG_ENV}")


class AuditLog:
    """An audit log file and its chain key file (``<path>.key``); ``record`` appends.

    Cheap to make: nothing is opened until ``record``. Safe to share between threads and to
    use from several processes at once (each append holds an exclusive ``flock``).
    """

    def __init__(self, path: str, *, source: str = "the audit log path") -> None:
        if not path or not path.strip():
            raise AuditLogError(
                f"{source} is empty; set it to the path of the CES key audit log file (e.g. "
                "~/.wgtlab/ces-audit.jsonl), or leave it unset to turn the log off"
            )
        full = os.path.abspath(os.path.expanduser(path))
        if os.path.isdir(full) or path.endswith(("/", os.sep)):
            raise AuditLogError(
                f"{source} names a directory ({full}); it must name a file, e.g. "
                f"{os.path.join(full, 'ces-audit.jsonl')}"
            )
        if fcntl is None:  # pragma: no cover
            raise AuditLogError(
                f"{source} turns the CES key audit log on, but this platform has no POSIX file "
                "locks (fcntl), which concurrent writers need; unset it"
            )
        self.path = full
        self.key_path = full + KEY_FILE_SUFFIX
        self.source = source

    def __repr__(self) -> str:
        return f"AuditLog({self.path!r})"

    def record(
        self,
        op: str,
        key_id: bytes,
        *,
        dataset_id: bytes | None = None,
        shards: int | None = None,
        new_key_id: bytes | None = None,
        tenant: str | bytes | None = None,
    ) -> AuditEntry:
        """Append the entry for one use of the key with id ``key_id``; return it.

        Raises ``AuditLogError`` (saying what failed and how to fix it) if it cannot: the
        caller must then not go on with the key operation.
        """
        if op not in OPS:
            raise ValueError(f"unknown audit op {op!r}")
        tenant_hash = None
        if tenant is not None:
            raw = tenant.encode() if isinstance(tenant, str) else bytes(tenant)
            tenant_hash = hashlib.sha256(raw).hexdigest()
        fd = self._open()
        try:
            self._lock(fd)
            size = os.fstat(fd).st_size
            created_key = False
            if size == 0:
                chain_key, created_key = self._new_chain_key(), True
                last_seq, last_mac = 0, GENESIS_MAC
            else:
                chain_key = self._read_chain_key()
                last = self._last_entry(fd, size, chain_key)
                last_seq, last_mac = last.seq, last.mac
            now = time.time()
            unsigned = AuditEntry(
                seq=last_seq + 1,
                time=datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                ),
                epoch=round(now, 6),
                op=op,
                key_id=key_id.hex(),
                new_key_id=None if new_key_id is None else new_key_id.hex(),
                tenant=tenant_hash,
                dataset_id=None if dataset_id is None else dataset_id.hex(),
                shards=shards,
                pid=os.getpid(),
                user=_user()[:MAX_NAME_CHARS],
                host=socket.gethostname()[:MAX_NAME_CHARS],
                prev_mac=last_mac,
                mac="",
            )
            entry = dataclasses.replace(unsigned, mac=unsigned.expected_mac(chain_key))
            self._append(fd, size, entry.line(), created_key)
            return entry
        finally:
            os.close(fd)  # releases the lock

    # --- the steps of one append ----------------------------------------------------------

    def _fail(self, what: str, exc: OSError | None = None, fix: str | None = None) -> AuditLogError:
        reason = f": {exc.strerror or exc}" if exc is not None else ""
        fix = _fix_for(exc, self.path) if fix is None else fix
        return AuditLogError(
            f"the CES key audit log ({self.source}): {what}{reason}; the key operation was "
            f"refused, as the log is on and must record every key use. {fix}".rstrip()
        )

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise self._fail(f"cannot open {self.path}", exc) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._fail(
                f"{self.path} is not a regular file", fix="Point it at a regular file."
            )
        return fd

    def _lock(self, fd: int) -> None:
        try:
            if _flock(fd, fcntl.LOCK_EX):
                return
        except OSError as exc:
            raise self._fail(f"cannot lock {self.path}", exc) from None
        raise self._fail(
            f"{self.path} stayed locked by another writer for {LOCK_TIMEOUT_S:g} s",
            fix="Find the stuck process holding it (e.g. `fuser` or `lsof` on the file) and "
            "stop it.",
        )

    def _new_chain_key(self) -> bytes:
        """A fresh chain key for an empty log; an existing key file with an empty log means
        entries were lost (or the log was moved without its key): refused."""
        if os.path.lexists(self.key_path):
            raise self._fail(
                f"{self.path} is empty, but its key file {self.key_path} exists",
                fix="Entries may have been deleted: keep both files for investigation. To "
                "start a new log, move the log and its key file aside together.",
            )
        secret = secrets.token_bytes(CHAIN_KEY_BYTES)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        created = False
        try:
            fd = os.open(self.key_path, flags, 0o600)
            created = True
            try:
                if os.write(fd, secret) != len(secret):
                    raise OSError(errno.EIO, "short write")
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_directory(self.key_path)
        except OSError as exc:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(self.key_path)
            raise self._fail(f"cannot create its key file {self.key_path}", exc) from None
        return secret

    def _read_chain_key(self) -> bytes:
        try:
            return read_chain_key(self.key_path)
        except AuditLogError as exc:
            raise self._fail(str(exc), fix="") from None

    def _last_entry(self, fd: int, size: int, chain_key: bytes) -> AuditEntry:
        start = max(0, size - MAX_LINE_BYTES)
        try:
            tail = os.pread(fd, size - start, start)
        except OSError as exc:
            raise self._fail(f"cannot read {self.path}", exc) from None
        if not tail.endswith(b"\n"):
            raise self._fail(
                f"{self.path} ends in an incomplete line (an interrupted write, or an edit)",
                fix=f"Run `wgtlab audit verify {self.path}`; to start a new log, move the log "
                "and its key file aside together.",
            )
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut < 0 and start > 0:
            raise self._fail(f"the last line of {self.path} is too long to be an entry")
        try:
            last = AuditEntry.parse(tail[cut + 1 : -1])
        except ValueError as exc:
            raise self._fail(
                f"the last line of {self.path} is not an audit entry ({exc})",
                fix=f"Run `wgtlab audit verify {self.path}`; to start a new log, move the log "
                "and its key file aside together.",
            ) from None
        if not hmac.compare_digest(last.mac, last.expected_mac(chain_key)):
            raise self._fail(
                f"the last entry of {self.path} (seq {last.seq}) does not verify under its key "
                "file: the log was edited, or the key file replaced",
                fix=f"Run `wgtlab audit verify {self.path}` and investigate.",
            )
        return last

    def _append(self, fd: int, size: int, line: bytes, created_key: bool) -> None:
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as exc:
            # Cut back what was written, so the next writer finds an intact chain.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.fsync(fd)
            if created_key:
                with contextlib.suppress(OSError):
                    os.unlink(self.key_path)
            raise self._fail(f"cannot append to {self.path}", exc) from None


def read_chain_key(path: str, *, check_owner: bool = True) -> bytes:
    """The chain key in ``path`` (see ``keyfiles.read_secret``: 32 bytes, mode 600 and, for
    writers, owned by this user). Anything else is an AuditLogError. Verifying needs no
    ownership: an auditor may check another user's log."""
    try:
        return read_secret(path, check_owner=check_owner)
    except FileNotFoundError:
        raise AuditLogError(
            f"its key file {path} is missing, so the chain can be neither extended nor "
            "checked (restore the key file, or move the log aside to start a new one)"
        ) from None
    except NotADirectoryError:
        raise AuditLogError(
            f"its key file {path} is missing (a parent is not a directory)"
        ) from None
    except OSError as exc:
        raise AuditLogError(
            f"cannot read its key file {path}: {exc.strerror or exc} (it must be readable by "
            "the user writing the log; check its owner and mode 600)"
        ) from None
    except ConfigError as exc:
        raise AuditLogError(
            f"{exc}; whoever could read or replace it could have forged entries: check them "
            "with `wgtlab audit verify`"
        ) from None


def read_entries(path: AuditPath) -> Entries:
    """``(line number, entry, problem)`` for each line of the log; entry None where the line
    is not a valid entry (``problem`` says why). Needs no key: nothing is verified.

    Reads the log as it was when called (writers may go on appending): its size is taken
    under a shared lock, so an append in progress is never seen half-written.
    """
    log = os.fspath(path)
    try:
        f = open(log, "rb")  # noqa: SIM115 - closed by _entries, when iteration ends
    except OSError as exc:
        raise AuditLogError(f"cannot read the audit log {log}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise AuditLogError(f"the audit log {log} is not a regular file")
        if fcntl is not None:
            if not _flock(f.fileno(), fcntl.LOCK_SH):
                raise AuditLogError(
                    f"the audit log {log} stayed locked by a writer for {LOCK_TIMEOUT_S:g} s"
                )
            size = os.fstat(f.fileno()).st_size
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        else:  # pragma: no cover
            size = os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise
    return _entries(f, size)


def _entries(f: IO[bytes], size: int) -> Entries:
    with f:
        number, remaining = 0, size
        while remaining > 0:
            raw = f.readline(min(remaining, MAX_LINE_BYTES + 1))
            if not raw:  # the file shrank while being read
                return
            number, remaining = number + 1, remaining - len(raw)
            if raw.endswith(b"\n"):
                try:
                    yield number, AuditEntry.parse(raw[:-1]), ""
                except ValueError as exc:
                    yield number, None, str(exc)
            elif len(raw) <= MAX_LINE_BYTES:
                yield number, None, "incomplete last line (no newline)"
            else:
                while remaining > 0 and raw and not raw.endswith(b"\n"):  # skip the rest
                    raw = f.readline(min(remaining, MAX_LINE_BYTES + 1))
                    remaining -= len(raw)
                yield number, None, f"longer than {MAX_LINE_BYTES} bytes"


def verify(
    path: AuditPath,
    *,
    key_file: AuditPath | None = None,
    anchor: tuple[int, str] | None = None,
) -> ChainReport:
    """Check the whole chain of the log at ``path`` under its key file (``<path>.key`` unless
    ``key_file``); the report names the first broken entry.

    Found: an edited, forged, removed, duplicated or reordered entry anywhere, and an
    incomplete last line. Not found by the chain alone: entries removed from the end; pass an
    ``anchor`` ``(seq, mac)`` (a tip from an earlier ``verify``, kept elsewhere) to find that
    too. A missing or unusable key file is an ``AuditLogError``: nothing can be checked.
    """
    log = os.fspath(path)
    chain_key = read_chain_key(
        os.fspath(key_file) if key_file else log + KEY_FILE_SUFFIX, check_owner=False
    )
    rows = read_entries(log)
    try:
        return _check_chain(log, rows, chain_key, anchor)
    finally:
        rows.close()


def _check_chain(
    log: str,
    rows: Entries,
    chain_key: bytes,
    anchor: tuple[int, str] | None,
) -> ChainReport:
    prev_mac, expected = GENESIS_MAC, 1  # expected: the seq the next line must hold
    anchor_seen = False

    def broken(line: int, seq: int | None, problem: str) -> ChainReport:
        tip = (expected - 1, prev_mac) if expected > 1 else None
        return ChainReport(log, False, expected - 1, f"line {line}: {problem}", line, seq, tip)

    for number, entry, problem in rows:
        if entry is None:
            return broken(number, None, f"not a valid audit entry: {problem}")
        name = f"entry {entry.seq}"
        if not hmac.compare_digest(entry.mac, entry.expected_mac(chain_key)):
            return broken(
                number,
                entry.seq,
                f"{name}: its mac does not match its contents: the entry was edited, or "
                "written without this log's key (forged)",
            )
        if entry.seq > expected:
            gone = f"entry {expected}"
            if entry.seq > expected + 1:
                gone = f"entries {expected} to {entry.seq - 1}"
            return broken(
                number,
                entry.seq,
                f"{name} where entry {expected} belongs: {gone} removed, or lines reordered",
            )
        if entry.seq < expected:
            return broken(
                number,
                entry.seq,
                f"{name} again after entry {expected - 1}: lines reordered or duplicated",
            )
        if not hmac.compare_digest(entry.prev_mac, prev_mac):
            return broken(
                number,
                entry.seq,
                f"{name} does not follow the entry before it (its prev_mac differs): lines "
                "replaced, or spliced in from another log",
            )
        if anchor is not None and entry.seq == anchor[0]:
            if not hmac.compare_digest(entry.mac, anchor[1].lower()):
                return broken(
                    number,
                    entry.seq,
                    f"{name} is not the entry the anchor {anchor[0]}:{anchor[1]} names: the "
                    "log was rewritten up to here",
                )
            anchor_seen = True
        prev_mac, expected = entry.mac, expected + 1
    count = expected - 1
    if count == 0:
        return ChainReport(
            log,
            False,
            0,
            "the log is empty but its key file exists: entries were removed (the whole log is "
            "gone), or its first write was interrupted",
        )
    tip = (count, prev_mac)
    if anchor is not None and not anchor_seen:
        return ChainReport(
            log,
            False,
            count,
            f"the log ends at entry {count}, before the anchor's entry {anchor[0]}: entries "
            "were removed from the end",
            tip=tip,
        )
    return ChainReport(log, True, count, tip=tip)


# --- small helpers -----------------------------------------------------------------------------


def _flock(fd: int, mode: int) -> bool:
    """Take ``flock`` ``mode`` on ``fd``, waiting up to LOCK_TIMEOUT_S; False on timeout.

    flock, not fcntl/lockf: flock locks belong to the open file, so two threads of one
    process (each with its own open) exclude each other as two processes do."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _canonical(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_number(value: object) -> bool:
    return (type(value) is float and math.isfinite(value)) or type(value) is int


def _hex(value: object, pattern: re.Pattern[str]) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _optional(value: object, required: bool, pattern: re.Pattern[str]) -> bool:
    return _hex(value, pattern) if required else value is None


def _is_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_CHARS


def _user() -> str:
    """The account whose rights the process uses (its effective uid), not $USER or $LOGNAME,
    which the environment may set to anything."""
    if not hasattr(os, "geteuid"):  # pragma: no cover
        return getpass.getuser()
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):  # no passwd entry (some containers)
        return f"uid {os.geteuid()}"


def _fsync_directory(path: str) -> None:
    # So the new file's name survives a crash, not only its bytes.
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fix_for(exc: OSError | None, path: str) -> str:
    parent = os.path.dirname(path)
    code = exc.errno if exc is not None else None
    if code in (errno.ENOENT, errno.ENOTDIR):
        return f"Create the directory {parent}, or point the log at an existing one."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Make {parent} and the log writable by this user, or choose another path."
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "Free space (or raise the quota / file size limit), or move the log."
    if code == errno.EISDIR:
        return "Point it at a file, not a directory."
    return "Fix the log's location, or unset the setting to turn the log off."
