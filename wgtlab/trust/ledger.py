"""The trust ledger: every verified outcome per worker and its EMA trust score, kept in SQLite.

One file is shared safely by threads and processes: each update reads and writes inside a single
BEGIN IMMEDIATE transaction, so no update is lost and a writer killed mid-batch leaves no trace.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from wgtlab import defaults
from wgtlab.errors import ConfigError, TrustError
from wgtlab.trust.rules import QuarantineRule

if TYPE_CHECKING:
    import pandas as pd

MEMORY = ":memory:"
SCHEMA_VERSION = 2
_ROWS_PER_STATEMENT = 4096  # record_many streams its input in slices of this many outcomes

# Version 2, the current layout. (Version 1 kept only workers(worker, score, tasks, updated) and
# outcomes(seq, time, worker, ok, score); _migrate_1_to_2 rebuilds it into this.)
_SCHEMA = (
    """CREATE TABLE workers (
        worker      TEXT PRIMARY KEY,     -- the worker's id (its Ed25519 key fingerprint)
        label       TEXT,                 -- a human name such as "local-0"; not unique
        score       REAL NOT NULL,
        tasks       INTEGER NOT NULL,
        agreed      INTEGER NOT NULL,
        disagreed   INTEGER NOT NULL,
        run         INTEGER NOT NULL,     -- agreed outcomes in a row; a disagreement resets it
        quarantined INTEGER NOT NULL,
        last_seq    INTEGER NOT NULL,     -- seq of the worker's latest outcome
        updated     REAL                  -- unix time of that outcome
    )""",
    "CREATE INDEX workers_by_label ON workers (label, last_seq)",
    """CREATE TABLE outcomes (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        time   REAL NOT NULL,
        worker TEXT NOT NULL,
        label  TEXT,
        job    TEXT,
        chunk  INTEGER,
        ok     INTEGER NOT NULL CHECK (ok IN (0, 1)),
        reason TEXT,
        score  REAL NOT NULL              -- the worker's score after this outcome
    )""",
    "CREATE INDEX outcomes_by_worker ON outcomes (worker, seq)",
)
_STATE_COLUMNS = (
    "worker, label, score, tasks, agreed, disagreed, run, quarantined, last_seq, updated"
)
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (seq, time, worker, label, job, chunk, ok, reason, score) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_WORKER = (
    f"INSERT INTO workers ({_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (worker) DO UPDATE SET label = excluded.label, score = excluded.score, "
    "tasks = excluded.tasks, agreed = excluded.agreed, disagreed = excluded.disagreed, "
    "run = excluded.run, quarantined = excluded.quarantined, last_seq = excluded.last_seq, "
    "updated = excluded.updated"
)


def default_ledger_path() -> Path:
    """``$WGTLAB_DATA_DIR/trust.sqlite3`` if the variable is set, else in the user data dir."""
    root = os.environ.get(defaults.DATA_DIR_ENV) or platformdirs.user_data_dir("wgtlab")
    return Path(root) / defaults.TRUST_LEDGER_FILE


def _optional_str(value: object, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a str or None, got {type(value).__name__}")


@dataclass(frozen=True)
class Outcome:
    """One verified task: did ``worker`` agree with the canonical result?"""

    worker: str
    ok: bool
    job: str | None = None
    chunk: int | None = None
    reason: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.worker, str) or not self.worker:
            raise ConfigError(f"worker must be a non-empty str, got {self.worker!r}")
        if self.ok not in (True, False):
            raise ConfigError(f"ok must be True or False, got {self.ok!r}")
        if self.chunk is not None and (
            isinstance(self.chunk, bool) or not isinstance(self.chunk, int)
        ):
            raise ConfigError(f"chunk must be an int or None, got {self.chunk!r}")
        for name in ("job", "reason", "label"):
            _optional_str(getattr(self, name), name)


@dataclass(frozen=True)
class WorkerState:
    """What the ledger knows about one worker after its latest outcome."""

    worker: str
    label: str | None
    score: float
    tasks: int = 0
    agreed: int = 0
    disagreed: int = 0
    run: int = 0
    quarantined: bool = False
    last_seq: int = 0
    updated: float | None = None


def _as_outcome(item: object) -> Outcome:
    if isinstance(item, Outcome):
        return item
    try:
        if isinstance(item, Mapping):
            return Outcome(**item)
        if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
            return Outcome(*item)
    except TypeError as exc:  # missing, extra or unknown fields
        raise ConfigError(
            f"record_many: {item!r:.80} is not an outcome ({exc}); give (worker, ok, job, chunk, "
            "reason, label) with the trailing fields optional, or a dict of those names"
        ) from None
    raise ConfigError(
        "record_many takes Outcome objects, (worker, ok, ...) tuples or dicts, "
        f"got {type(item).__name__}"
    )


_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _lock_for(path: str) -> threading.RLock:
    # Ledgers on one file in one process take turns here instead of in SQLite's busy handler,
    # which sleeps in steps of milliseconds; other processes still wait there.
    if path == MEMORY:
        return threading.RLock()
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(os.path.realpath(path), threading.RLock())


class TrustLedger:
    """Trust scores and their full history in one SQLite file (WAL mode).

    ``score = decay * old + (1 - decay) * (1 if ok else 0)``, starting at ``initial``; both
    default to wgtlab.defaults (0.9 and 0.5). ``path=None`` uses :func:`default_ledger_path`;
    ``":memory:"`` keeps everything in this process. Workers are keyed by id; a worker may also
    carry a label, and ``score(label)`` finds the id that last recorded under that label.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        initial: float = defaults.TRUST_INITIAL_SCORE,
        decay: float = defaults.TRUST_DECAY,
        rule: QuarantineRule | None = None,
        timeout: float = defaults.LEDGER_BUSY_TIMEOUT_S,
    ) -> None:
        if not 0.0 <= initial <= 1.0:
            raise ConfigError(f"initial trust score must be in [0, 1], got {initial}")
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"trust decay must be in [0, 1), got {decay}")
        if path is None:
            path = default_ledger_path()
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path) if str(path) == MEMORY else os.fspath(path)
        self.initial = float(initial)
        self.decay = float(decay)
        self.rule = rule if rule is not None else QuarantineRule()
        self._lock = _lock_for(self.path)
        try:
            self._con = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise TrustError(
                f"cannot open the trust ledger at {self.path}: {exc}; "
                "check the directory exists and is writable, or pass another path"
            ) from exc
        try:
            with self._lock:
                self._open_schema()  # first, so a foreign file is refused before it is touched
                self._con.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a crashed process loses nothing committed and never corrupts the
                # file; only a power cut may drop the last few commits.
                self._con.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            self._con.close()
            raise self._error(exc) from exc
        except BaseException:
            self._con.close()
            raise

    # --- schema --------------------------------------------------------------------------------

    def _open_schema(self) -> None:
        if self._con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # the common case needs no write lock, so opening never waits on writers
        with self._transaction() as con:  # concurrent openers migrate one at a time
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise TrustError(
                    f"the trust ledger at {self.path} has schema version {version}, newer than "
                    f"this wgtlab reads ({SCHEMA_VERSION}); upgrade wgtlab to open it"
                )
            if version == 0:
                tables = [
                    name
                    for (name,) in con.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'"
                    )
                ]
                if tables:
                    raise TrustError(
                        f"{self.path} is a SQLite file with tables {tables} but no wgtlab "
                        "schema version: it is not a trust ledger; pass another path"
                    )
                for statement in _SCHEMA:
                    con.execute(statement)
            else:
                for step in range(version, SCHEMA_VERSION):
                    _MIGRATIONS[step](con)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The read-modify-write section: this process's lock, then SQLite's write lock."""
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield con
                con.execute("COMMIT")
            except BaseException as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._con.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> TrustError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return TrustError(
                f"the trust ledger at {self.path} stayed locked by another writer past the "
                "busy timeout; retry, or raise timeout= when opening it"
            )
        if "closed" in text:
            return TrustError("this TrustLedger is closed; open a new one")
        if "not a database" in text:
            return TrustError(f"{self.path} is not a SQLite database; pass another path")
        return TrustError(f"trust ledger at {self.path}: {text}")

    # --- recording -----------------------------------------------------------------------------

    def _state_of(self, con: sqlite3.Connection, worker: str) -> WorkerState | None:
        row = con.execute(
            f"SELECT {_STATE_COLUMNS} FROM workers WHERE worker = ?", (worker,)
        ).fetchone()
        return _state_from_row(row) if row else None

    @staticmethod
    def _next_seq(con: sqlite3.Connection) -> int:
        # Under the write lock the AUTOINCREMENT counter cannot move, so seqs are assigned here
        # (and a batch knows each outcome's seq without a round trip per row).
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outcomes'").fetchone()
        return (row[0] if row else 0) + 1

    def _advance(
        self,
        state: WorkerState | None,
        outcome: Outcome,
        seq: int,
        now: float,
        rule: QuarantineRule,
    ) -> WorkerState:
        ok = bool(outcome.ok)
        old = state.score if state is not None else self.initial
        score = self.decay * old + (1.0 - self.decay) * (1.0 if ok else 0.0)
        run = (state.run + 1 if state else 1) if ok else 0
        label = outcome.label if outcome.label is not None else (state.label if state else None)
        return WorkerState(
            worker=outcome.worker,
            label=label,
            score=score,
            tasks=(state.tasks if state else 0) + 1,
            agreed=(state.agreed if state else 0) + ok,
            disagreed=(state.disagreed if state else 0) + (not ok),
            run=run,
            quarantined=rule.next_state(state.quarantined if state else False, score, run),
            last_seq=seq,
            updated=now,
        )

    @staticmethod
    def _outcome_row(state: WorkerState, outcome: Outcome) -> tuple[Any, ...]:
        return (
            state.last_seq,
            state.updated,
            outcome.worker,
            outcome.label,
            outcome.job,
            outcome.chunk,
            int(bool(outcome.ok)),
            outcome.reason,
            state.score,
        )

    @staticmethod
    def _state_row(s: WorkerState) -> tuple[Any, ...]:
        return (
            s.worker,
            s.label,
            s.score,
            s.tasks,
            s.agreed,
            s.disagreed,
            s.run,
            int(s.quarantined),
            s.last_seq,
            s.updated,
        )

    def update(
        self,
        worker: str,
        ok: bool,
        *,
        job: str | None = None,
        chunk: int | None = None,
        reason: str | None = None,
        label: str | None = None,
        rule: QuarantineRule | None = None,
    ) -> WorkerState:
        """Record one outcome atomically and return the worker's new state (score, run,
        quarantine), so a caller can announce a worker entering or leaving quarantine."""
        outcome = Outcome(worker, ok, job, chunk, reason, label)
        with self._transaction() as con:
            seq = self._next_seq(con)
            state = self._advance(
                self._state_of(con, worker), outcome, seq, time.time(), rule or self.rule
            )
            con.execute(_INSERT_OUTCOME, self._outcome_row(state, outcome))
            con.execute(_UPSERT_WORKER, self._state_row(state))
        return state

    def record(
        self,
        worker: str,
        ok: bool,
        *,
        job: str | None = None,
        chunk: int | None = None,
        reason: str | None = None,
        label: str | None = None,
        rule: QuarantineRule | None = None,
    ) -> float:
        """Record whether ``worker`` agreed with the verified result; returns its new score."""
        return self.update(
            worker, ok, job=job, chunk=chunk, reason=reason, label=label, rule=rule
        ).score

    def record_many(
        self,
        outcomes: Iterable[Outcome | tuple[Any, ...] | Mapping[str, Any]],
        *,
        rule: QuarantineRule | None = None,
    ) -> dict[str, float]:
        """Record many outcomes, in order, in one transaction: all of them or, on any error or
        crash, none. Items are Outcome objects, (worker, ok, job, chunk, reason, label) tuples
        (trailing fields optional) or dicts. Returns each touched worker's final score."""
        rule = rule or self.rule
        states: dict[str, WorkerState] = {}
        with self._transaction() as con:
            seq = self._next_seq(con)
            items = iter(outcomes)
            while block := list(islice(items, _ROWS_PER_STATEMENT)):
                now = time.time()
                rows = []
                for item in block:
                    outcome = _as_outcome(item)
                    worker = outcome.worker
                    state = states[worker] if worker in states else self._state_of(con, worker)
                    state = states[worker] = self._advance(state, outcome, seq, now, rule)
                    rows.append(self._outcome_row(state, outcome))
                    seq += 1
                con.executemany(_INSERT_OUTCOME, rows)
            con.executemany(_UPSERT_WORKER, [self._state_row(s) for s in states.values()])
        return {worker: state.score for worker, state in states.items()}

    # --- reading -------------------------------------------------------------------------------

    def state(self, worker: str) -> WorkerState:
        """The state of a worker id, or of the latest id that recorded under that label;
        a worker never seen starts at the initial score."""
        return self.states([worker])[worker]

    def states(self, workers: Iterable[str]) -> dict[str, WorkerState]:
        """:meth:`state` for many workers in a few queries (ids first, then labels)."""
        names = list(dict.fromkeys(workers))
        found: dict[str, WorkerState] = {}
        for start in range(0, len(names), 500):
            part = names[start : start + 500]
            marks = ", ".join("?" * len(part))
            for row in self._read(
                f"SELECT {_STATE_COLUMNS} FROM workers WHERE worker IN ({marks})", part
            ):
                found[row[0]] = _state_from_row(row)
        for name in names:
            if name not in found:
                rows = self._read(
                    f"SELECT {_STATE_COLUMNS} FROM workers WHERE label = ? "
                    "ORDER BY last_seq DESC LIMIT 1",
                    (name,),
                )
                found[name] = (
                    _state_from_row(rows[0]) if rows else WorkerState(name, None, self.initial)
                )
        return {name: found[name] for name in names}

    def score(self, worker: str) -> float:
        """The current score of a worker id or label; ``initial`` for a worker never seen."""
        return self.state(worker).score

    def scores(self) -> pd.DataFrame:
        """One row per worker: worker, label, score, tasks, agreed, disagreed, run,
        quarantined, updated (UTC)."""
        return scores_frame(self.score_rows())

    def score_rows(self) -> ScoreRows:
        """``scores()`` as plain rows: cheap enough to take before and after every job, and
        made into a table only when someone looks (``scores_frame``)."""
        return tuple(
            self._read(
                "SELECT worker, label, score, tasks, agreed, disagreed, run, quarantined, "
                "updated FROM workers ORDER BY COALESCE(label, worker), worker"
            )
        )

    def history(self, worker: str | None = None) -> pd.DataFrame:
        """Every outcome in order: seq, time (UTC), worker, label, job, chunk, ok, reason,
        score (after the outcome). ``worker`` filters by id, or else by label (all its ids)."""
        import pandas as pd

        select = "SELECT seq, time, worker, label, job, chunk, ok, reason, score FROM outcomes"
        if worker is None:
            rows = self._read(f"{select} ORDER BY seq")
        else:
            rows = self._read(f"{select} WHERE worker = ? ORDER BY seq", (worker,))
            if not rows:
                rows = self._read(f"{select} WHERE label = ? ORDER BY seq", (worker,))
        columns = ["seq", "time", "worker", "label", "job", "chunk", "ok", "reason", "score"]
        df = pd.DataFrame.from_records(rows, columns=columns)
        df = df.astype({"seq": "int64", "chunk": "Int64", "ok": "bool", "score": "float64"})
        df["time"] = pd.to_datetime(df["time"].astype("float64"), unit="s", utc=True)
        return df

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> TrustLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrustLedger({self.path!r})"

    def _repr_html_(self) -> str:
        from wgtlab.views import ledger_html

        return ledger_html(self, self.rule.threshold)


def _state_from_row(row: tuple[Any, ...]) -> WorkerState:
    worker, label, score, tasks, agreed, disagreed, run, quarantined, last_seq, updated = row
    return WorkerState(
        worker, label, score, tasks, agreed, disagreed, run, bool(quarantined), last_seq, updated
    )


def _migrate_1_to_2(con: sqlite3.Connection) -> None:
    """Version 1 had no labels, no job/chunk/reason and no run or quarantine state: rebuild
    both tables, replaying each worker's log to recover its counters, run and quarantine."""
    con.execute("ALTER TABLE outcomes RENAME TO outcomes_v1")
    con.execute("ALTER TABLE workers RENAME TO workers_v1")
    for statement in _SCHEMA:
        con.execute(statement)
    con.execute(
        "INSERT INTO outcomes (seq, time, worker, ok, score) "
        "SELECT seq, time, worker, ok, score FROM outcomes_v1 ORDER BY seq"
    )
    rule = QuarantineRule()
    replayed: dict[str, WorkerState] = {}
    for seq, when, worker, ok, score in con.execute(
        "SELECT seq, time, worker, ok, score FROM outcomes_v1 ORDER BY seq"
    ):
        old = replayed.get(worker, WorkerState(worker, None, score))
        run = old.run + 1 if ok else 0
        replayed[worker] = WorkerState(
            worker, None, score, old.tasks + 1, old.agreed + bool(ok), old.disagreed + (not ok),
            run, rule.next_state(old.quarantined, score, run), seq, when,
        )  # fmt: skip
    rows = []
    for worker, score, tasks, updated in con.execute(
        "SELECT worker, score, tasks, updated FROM workers_v1"
    ):
        log = replayed.get(worker, WorkerState(worker, None, score))
        rows.append(
            (worker, None, score, tasks, log.agreed, log.disagreed, log.run,
             int(log.quarantined or score < rule.threshold), log.last_seq, updated)
        )  # fmt: skip
    con.executemany(_UPSERT_WORKER, rows)
    con.execute("DROP TABLE outcomes_v1")
    con.execute("DROP TABLE workers_v1")


_MIGRATIONS = {1: _migrate_1_to_2}


ScoreRows = tuple[tuple[Any, ...], ...]
SCORE_COLUMNS = (
    "worker", "label", "score", "tasks", "agreed", "disagreed", "run", "quarantined", "updated",
)  # fmt: skip


def scores_frame(rows: ScoreRows) -> pd.DataFrame:
    """Rows of ``TrustLedger.score_rows()`` -> the ``scores()`` table."""
    import pandas as pd

    df = pd.DataFrame.from_records(list(rows), columns=list(SCORE_COLUMNS))
    df = df.astype(
        {"score": "float64", "tasks": "int64", "agreed": "int64", "disagreed": "int64",
         "run": "int64", "quarantined": "bool"}
    )  # fmt: skip
    df["updated"] = pd.to_datetime(df["updated"].astype("float64"), unit="s", utc=True)
    return df
