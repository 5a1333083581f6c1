"""The trust ledger on real SQLite files: exact EMA, concurrency, crashes and migration."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wgtlab as wgt
from wgtlab.errors import ConfigError, TrustError
from wgtlab.trust import SCHEMA_VERSION, Outcome, TrustLedger

ROOT = Path(__file__).resolve().parents[1]
DECAY, INITIAL = 0.9, 0.5


def ema(outcomes, start=INITIAL, decay=DECAY):
    score = start
    for ok in outcomes:
        score = decay * score + (1 - decay) * (1.0 if ok else 0.0)
    return score


def assert_consistent(path: Path) -> sqlite3.Connection:
    """Integrity check, then replay the whole log: every stored score must be the EMA of the
    outcomes before it, and every worker row must match its log (a lost update breaks both)."""
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    scores: dict[str, float] = {}
    counts: dict[str, list[int]] = {}
    last: dict[str, int] = {}
    expected_seq = 1
    for seq, worker, ok, score in con.execute(
        "SELECT seq, worker, ok, score FROM outcomes ORDER BY seq"
    ):
        assert seq == expected_seq
        expected_seq += 1
        scores[worker] = ema([ok], scores.get(worker, INITIAL))
        assert score == scores[worker], (seq, worker)
        counts.setdefault(worker, [0, 0])[ok] += 1
        last[worker] = seq
    rows = con.execute(
        "SELECT worker, score, tasks, agreed, disagreed, last_seq FROM workers WHERE tasks > 0"
    )
    stored = {w: (s, t, a, d, q) for w, s, t, a, d, q in rows}
    assert stored == {
        w: (scores[w], sum(counts[w]), counts[w][1], counts[w][0], last[w]) for w in scores
    }
    return con


# --- the score --------------------------------------------------------------------------------


def test_record_applies_the_documented_ema_and_starts_at_half(tmp_path):
    ledger = TrustLedger(tmp_path / "t.sqlite3")
    assert ledger.score("never-seen") == 0.5
    assert ledger.record("w", True) == 0.9 * 0.5 + (1 - 0.9) * 1
    assert ledger.record("w", False) == 0.9 * (0.9 * 0.5 + (1 - 0.9)) + 0.0
    assert ledger.score("w") == pytest.approx(0.9 * (0.9 * 0.5 + 0.1 * 1) + 0.1 * 0, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.booleans()), min_size=1, max_size=120)
)
def test_ema_exact_after_random_sequences_single_and_batched(steps):
    ledger = TrustLedger(":memory:")
    batch: list[Outcome] = []
    for worker, ok, batched in steps:
        if batched:
            batch.append(Outcome(f"w{worker}", ok))
        else:
            ledger.record_many(batch)
            batch = []
            ledger.record(f"w{worker}", ok)
    ledger.record_many(batch)
    for w in range(4):
        expected = ema([ok for worker, ok, _ in steps if worker == w])
        assert ledger.score(f"w{w}") == expected  # exact, not approximate
    history = ledger.history()
    assert list(history["seq"]) == list(range(1, len(steps) + 1))
    assert list(history["ok"]) == [ok for _, ok, _ in steps]


def test_record_many_returns_final_scores_and_accepts_tuples_and_dicts():
    ledger = TrustLedger(":memory:")
    final = ledger.record_many(
        [
            ("a", True),
            {"worker": "b", "ok": False, "job": "j", "chunk": 3},
            Outcome("a", False, reason="digest mismatch"),
            ("a", True, "j", 4, None, "local-0"),
        ]
    )
    assert final == {"a": ema([True, False, True]), "b": ema([False])}
    history = ledger.history("a")
    assert list(history["reason"].fillna("")) == ["", "digest mismatch", ""]
    assert ledger.state("local-0").worker == "a"


def test_labels_resolve_to_the_latest_id():
    ledger = TrustLedger(":memory:")
    ledger.record("fp-old", True, label="local-0")
    ledger.record("fp-new", False, label="local-0")
    assert ledger.score("local-0") == ledger.score("fp-new") == ema([False])
    assert ledger.score("fp-old") == ema([True])
    ledger.record("fp-old", True)  # no label given: keeps its label and becomes the latest
    assert ledger.state("fp-old").label == "local-0"
    assert ledger.score("local-0") == ema([True, True])
    # an id wins over another worker's label of the same name
    ledger.record("local-0", False)
    assert ledger.score("local-0") == ema([False])
    assert set(ledger.history("fp-new")["worker"]) == {"fp-new"}


def test_scores_and_history_frames():
    ledger = TrustLedger(":memory:")
    assert list(ledger.scores().columns) == [
        "worker", "label", "score", "tasks", "agreed", "disagreed", "run", "quarantined",
        "updated",
    ]  # fmt: skip
    assert len(ledger.history()) == 0
    for _ in range(5):
        ledger.record("liar", False, job="j1", chunk=7, label="local-1")
    ledger.record("honest", True, job="j1", chunk=8)
    scores = ledger.scores().set_index("worker")
    assert scores.loc["liar", "tasks"] == 5 and scores.loc["liar", "disagreed"] == 5
    assert bool(scores.loc["liar", "quarantined"]) and not scores.loc["honest", "quarantined"]
    assert scores.loc["honest", "run"] == 1
    assert isinstance(scores["updated"].dtype, pd.DatetimeTZDtype)
    history = ledger.history()
    assert list(history.columns) == [
        "seq", "time", "worker", "label", "job", "chunk", "ok", "reason", "score",
    ]  # fmt: skip
    assert history["chunk"].tolist() == [7] * 5 + [8]
    assert history["ok"].dtype == bool
    assert len(ledger.history("local-1")) == 5  # by label


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", True), {}, "worker must be a non-empty str"),
        ((5, True), {}, "worker must be a non-empty str"),
        (("w", "yes"), {}, "ok must be True or False"),
        (("w", True), {"chunk": "3"}, "chunk must be an int"),
        (("w", True), {"job": 5}, "job must be a str"),
        (("w", True), {"label": b"x"}, "label must be a str"),
    ],
)
def test_bad_outcomes_are_refused(args, kwargs, message):
    ledger = TrustLedger(":memory:")
    with pytest.raises(ConfigError, match=message):
        ledger.record(*args, **kwargs)
    assert len(ledger.history()) == 0


def test_a_bad_item_rolls_back_the_whole_batch():
    ledger = TrustLedger(":memory:")
    ledger.record("w", True)
    with pytest.raises(ConfigError, match="ok must be True or False"):
        ledger.record_many([("w", True)] * 5000 + [("w", "maybe")])
    assert len(ledger.history()) == 1 and ledger.score("w") == ema([True])
    with pytest.raises(ConfigError, match="record_many takes Outcome objects"):
        ledger.record_many([42])
    with pytest.raises(ConfigError, match=r"^record_many: \('w',\) is not an outcome"):
        ledger.record_many([("w", True), ("w",)])
    with pytest.raises(ConfigError, match=r"is not an outcome .*unexpected keyword .*'worke'"):
        ledger.record_many([{"worke": "w", "ok": True}])
    with pytest.raises(ConfigError, match=r"is not an outcome"):
        ledger.record_many([("w", True, "j", 1, None, "label", "one too many")])
    assert len(ledger.history()) == 1 and ledger.score("w") == ema([True])


def test_bad_parameters():
    with pytest.raises(ConfigError, match="decay must be in"):
        TrustLedger(":memory:", decay=1.0)
    with pytest.raises(ConfigError, match="initial trust score"):
        TrustLedger(":memory:", initial=1.5)


def test_default_path_is_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WGTLAB_DATA_DIR", str(tmp_path / "data"))
    with TrustLedger() as ledger:
        ledger.record("w", True)
        assert Path(ledger.path) == tmp_path / "data" / "trust.sqlite3"
    assert (tmp_path / "data" / "trust.sqlite3").exists()
    assert wgt.TrustLedger is TrustLedger


def test_closed_and_locked_ledgers_raise_trust_error(tmp_path):
    path = tmp_path / "t.sqlite3"
    ledger = TrustLedger(path)
    ledger.close()
    with pytest.raises(TrustError, match="closed"):
        ledger.record("w", True)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the file
    waiting = TrustLedger(path, timeout=0.1)
    with pytest.raises(TrustError, match="stayed locked"):
        waiting.record("w", True)
    holder.execute("ROLLBACK")
    assert waiting.record("w", True) == ema([True])


def test_journal_is_wal(tmp_path):
    TrustLedger(tmp_path / "t.sqlite3").record("w", True)
    con = sqlite3.connect(tmp_path / "t.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --- concurrency and crashes ------------------------------------------------------------------


def test_8_threads_x_5000_records_lose_nothing(tmp_path):
    path = tmp_path / "t.sqlite3"
    shared = TrustLedger(path)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        # half the threads share one ledger object, half open their own on the same file
        ledger = shared if t % 2 else TrustLedger(path)
        try:
            for i in range(5000):
                ledger.record(f"w{i % 4}", (i + t) % 5 != 0, job=f"t{t}", chunk=i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    con = assert_consistent(path)
    assert con.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 40_000
    per_job = dict(con.execute("SELECT job, COUNT(*) FROM outcomes GROUP BY job"))
    assert per_job == {f"t{t}": 5000 for t in range(8)}


WRITER = """
import sys
from wgtlab.trust import TrustLedger
ledger = TrustLedger(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[3])):
    ledger.record(f"w{i % 3}", i % 4 != 0, job=sys.argv[2], chunk=i)
print("done", flush=True)
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_2_processes_at_once_lose_nothing(tmp_path):
    path = tmp_path / "t.sqlite3"
    TrustLedger(path).close()
    procs = [_python(WRITER, str(path), f"p{k}", "3000") for k in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:  # start both at once, on the same workers
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "done"
    con = assert_consistent(path)
    jobs = [job for (job,) in con.execute("SELECT job FROM outcomes ORDER BY seq")]
    # Both started together on the same workers; whether their writes interleave is up to the
    # scheduler (on a loaded machine one may finish first), so only the totals are asserted.
    assert jobs.count("p0") == jobs.count("p1") == 3000


KILLED_MID_BATCH = """
import sys, time
from wgtlab.trust import Outcome, TrustLedger
ledger = TrustLedger(sys.argv[1])
ledger.record_many(Outcome(f"w{i % 5}", i % 3 != 0, job="before", chunk=i) for i in range(1000))
def outcomes():
    for i in range(200_000):
        if i == 150_000:
            print("mid-batch", flush=True)
            time.sleep(600)
        yield Outcome(f"w{i % 5}", i % 2 == 0, job="killed", chunk=i)
ledger.record_many(outcomes())
"""


def test_a_process_killed_mid_batch_leaves_a_consistent_database(tmp_path):
    path = tmp_path / "t.sqlite3"
    proc = _python(KILLED_MID_BATCH, str(path))
    assert proc.stdout.readline().strip() == "mid-batch"
    # 150,000 uncommitted outcomes overflowed SQLite's page cache into the WAL: real writes are
    # on disk when the process dies.
    assert os.path.getsize(f"{path}-wal") > 1 << 20
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    con = assert_consistent(path)
    assert dict(con.execute("SELECT job, COUNT(*) FROM outcomes GROUP BY job")) == {"before": 1000}
    ledger = TrustLedger(path)
    before = ledger.score("w0")
    assert ledger.record("w0", True) == ema([True], before)
    assert ledger.history()["seq"].iloc[-1] == 1001


LOOPING_WRITER = """
import sys
from wgtlab.trust import Outcome, TrustLedger
ledger = TrustLedger(sys.argv[1])
k = 0
while True:
    ledger.record_many(Outcome(f"w{i % 3}", (i * k) % 7 != 0, job=f"{sys.argv[2]}-{k}")
                       for i in range(500))
    print(k, flush=True)
    k += 1
"""


def test_processes_killed_between_and_inside_batches_leave_whole_batches(tmp_path):
    path = tmp_path / "t.sqlite3"
    for round_ in range(3):
        proc = _python(LOOPING_WRITER, str(path), f"r{round_}")
        for _ in range(3 + round_):  # let a few batches commit, then kill it wherever it is
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    con = assert_consistent(path)
    sizes = {n for _, n in con.execute("SELECT job, COUNT(*) FROM outcomes GROUP BY job")}
    assert sizes == {500}  # every batch is all there or not there at all


# --- schema versions --------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE workers (worker TEXT PRIMARY KEY, score REAL NOT NULL, tasks INTEGER NOT NULL,
                      updated REAL NOT NULL);
CREATE TABLE outcomes (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,
                       worker TEXT NOT NULL, ok INTEGER NOT NULL, score REAL NOT NULL);
PRAGMA user_version = 1;
"""


def _write_v1(path: Path, logs: dict[str, list[bool]], idle: tuple[str, ...] = ()) -> None:
    con = sqlite3.connect(path)
    con.executescript(V1_SCHEMA)
    t = 1_700_000_000.0
    for worker, oks in logs.items():
        score = INITIAL
        for ok in oks:
            score = ema([ok], score)
            t += 1
            con.execute(
                "INSERT INTO outcomes (time, worker, ok, score) VALUES (?, ?, ?, ?)",
                (t, worker, int(ok), score),
            )
        con.execute("INSERT INTO workers VALUES (?, ?, ?, ?)", (worker, score, len(oks), t))
    for worker in idle:
        con.execute("INSERT INTO workers VALUES (?, 0.5, 0, ?)", (worker, t))
    con.commit()
    con.close()


def test_old_schema_is_migrated_on_open(tmp_path):
    path = tmp_path / "old.sqlite3"
    logs = {
        "good": [True] * 10,
        "liar": [False] * 6,
        "recovering": [False] * 5 + [True] * 2,  # score back above 0.3, probation not done
    }
    _write_v1(path, logs, idle=("idle",))
    ledger = TrustLedger(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    TrustLedger(tmp_path / "fresh.sqlite3").close()
    fresh_con = sqlite3.connect(tmp_path / "fresh.sqlite3")
    for table in ("workers", "outcomes"):  # the migrated layout is exactly the fresh one
        info = f"PRAGMA table_info({table})"
        assert con.execute(info).fetchall() == fresh_con.execute(info).fetchall()
    for worker, oks in logs.items():
        assert ledger.score(worker) == ema(oks)
    assert ledger.score("idle") == 0.5
    good, liar, recovering = (ledger.state(w) for w in ("good", "liar", "recovering"))
    assert (good.run, good.agreed, good.quarantined) == (10, 10, False)
    assert (liar.disagreed, liar.quarantined) == (6, True)
    assert recovering.score > 0.3 and recovering.run == 2 and recovering.quarantined
    assert ledger.update("recovering", True).quarantined is False  # third agreed in a row
    assert len(ledger.history()) == 24 and ledger.history()["seq"].iloc[-1] == 24
    assert_consistent(path)


def test_newer_schema_foreign_sqlite_and_garbage_are_refused_untouched(tmp_path):
    newer = tmp_path / "newer.sqlite3"
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    foreign = tmp_path / "foreign.sqlite3"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE notes (x)")
    con.commit()
    con.close()
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all" * 100)
    cases = [(newer, "newer than this wgtlab"), (foreign, "not a trust ledger"),
             (garbage, "not a SQLite database")]  # fmt: skip
    for path, message in cases:
        before = path.read_bytes()
        with pytest.raises(TrustError, match=message):
            TrustLedger(path)
        assert path.read_bytes() == before
