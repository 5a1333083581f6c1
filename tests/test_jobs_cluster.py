"""The manager's bookkeeping: rate limits, identities, many workers, the `wgtlab run` command."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

import wgtlab as wgt
from wgtlab.cli import main
from wgtlab.cluster.ratelimit import RateLimit, TokenBucket
from wgtlab.jobs import events as ev


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate_up_to_its_capacity():
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, capacity=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_until_token() == pytest.approx(0.1)
    clock.now += 0.25
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    clock.now += 60
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_rate_limit_rejects_nonsense():
    with pytest.raises(ValueError, match="max_in_flight"):
        RateLimit(max_in_flight=0)


def test_a_worker_never_has_more_tasks_in_flight_than_its_limit():
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}

    def watch(event: ev.Event) -> None:
        worker = event.worker or "?"  # these kinds always name their worker
        if event.kind == ev.CHUNK_SCHEDULED:
            in_flight[worker] = in_flight.get(worker, 0) + 1
            peak[worker] = max(peak.get(worker, 0), in_flight[worker])
        elif event.kind in (ev.CHUNK_DONE, ev.CHUNK_REJECTED, ev.CHUNK_FAILED_ON_WORKER):
            in_flight[worker] -= 1

    limit = RateLimit(tasks_per_second=1e6, burst=1000, max_in_flight=2)
    with wgt.LocalCluster(workers=3, rate_limit=limit) as cluster:
        job = wgt.Job("flood").input(np.arange(3000.0), chunk_rows=10).kernel(wgt.kernels.sum())
        job.subscribe(watch)
        result = job.run(on=cluster)
    assert result.value == float(np.arange(3000.0).sum())
    assert max(peak.values()) <= 2 and set(peak) == {"local-0", "local-1", "local-2"}


def test_many_workers_small_chunks_and_replicas_give_exact_results():
    values = np.random.default_rng(5).integers(0, 1000, 20_000).astype(np.float64)
    with wgt.LocalCluster(workers=12) as cluster:
        job = wgt.Job("busy").input(values, chunk_rows=40)
        job.kernel(wgt.kernels.count_where(">=", 500.0)).verify("redundancy", replicas=3)
        result = job.run(on=cluster)
    assert result.ok and len(result.outcomes) == 500
    assert result.value == int((values >= 500).sum())
    assert result.disagreements == 0
    # Every chunk was decided by distinct workers that all agreed (never by more than the 3
    # replicas asked for), and the verification table holds a row for each of their votes.
    table = result.verification
    assert not table.duplicated(["chunk", "worker"]).any()
    assert (table.outcome == "agreed").all()
    for chunk in result.outcomes:
        assert chunk.status == "verified" and 1 <= chunk.replicas <= 3
        assert len(set(chunk.workers)) == chunk.replicas and not chunk.dissenters
        assert set(chunk.workers) <= set(table.worker[table.chunk == chunk.index])
    assert sorted(set(table.chunk)) == list(range(500))


def test_trust_is_keyed_by_the_worker_key_not_its_name(tmp_path):
    ledger = wgt.TrustLedger(tmp_path / "trust.sqlite3")
    values = np.arange(100.0)
    fingerprints = []
    for _ in range(2):  # two clusters, same worker names, fresh keys, one shared ledger
        with wgt.LocalCluster(workers=2, ledger=ledger) as cluster:
            job = wgt.Job("k").input(values, chunk_rows=10).kernel(wgt.kernels.sum())
            job.verify("redundancy", replicas=2).run(on=cluster)
            fingerprints.append(cluster.fingerprint("local-0"))
    assert fingerprints[0] != fingerprints[1]
    scores = ledger.scores()
    assert len(scores) == 4 and sorted(set(scores.label)) == ["local-0", "local-1"]
    # Kept keys: the same identity across clusters.
    keys = tmp_path / "keys"
    with (
        wgt.LocalCluster(workers=1, identity_dir=keys) as a,
        wgt.LocalCluster(workers=1, identity_dir=keys) as b,
    ):
        assert a.fingerprint("local-0") == b.fingerprint("local-0")
    assert oct((keys / "local-0.ed25519").stat().st_mode & 0o777) == "0o600"


def test_fault_parameters_are_checked():
    with pytest.raises(wgt.ConfigError, match=r"^Liar.rate must be in \[0, 1\], got 2.0$"):
        wgt.faults.Liar(rate=2.0)
    with pytest.raises(wgt.ConfigError, match=r"^Crash.rate must be a number, got 'often'$"):
        wgt.faults.Crash(rate="often")
    with pytest.raises(wgt.ConfigError, match=r"^Stall.seconds must be in \[0, 3600\], got -1$"):
        wgt.faults.Stall(seconds=-1)
    assert wgt.faults.Stall(seconds=0.5, rate=0.25).seconds == 0.5


def test_fault_names_must_exist():
    with pytest.raises(wgt.ConfigError, match="unknown workers"):
        wgt.LocalCluster(workers=2, faults={"local-7": wgt.faults.Liar()})
    with pytest.raises(ValueError, match="rate"):
        wgt.faults.Crash(rate=1.5)


def test_wgtlab_run_runs_the_jobs_a_file_defines(tmp_path, capsys):
    jobfile = tmp_path / "job.py"
    jobfile.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import wgtlab as wgt

            with wgt.Job("squares") as job:
                wgt.input(np.arange(1000.0), chunk_rows=100)
                wgt.kernel(wgt.kernels.sum())
            """
        )
    )
    assert main(["run", str(jobfile), "--workers", "2", "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"value": 499500.0' in out and '"ok": true' in out
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["run", str(empty), "--no-progress"]) == 1
    assert "defines no wgt.Job" in capsys.readouterr().err


def _jobfile(tmp_path: Path, source: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


@pytest.mark.parametrize(
    ("source", "line", "error"),
    [
        ("import wgtlab as wgt\nx = 1\ny = x +\n", 3, "SyntaxError: invalid syntax"),
        (
            "import wgtlab as wgt\n\ndef ratio():\n    return 1 / 0\n\nr = ratio()\n",
            4,
            "ZeroDivisionError: division by zero",
        ),
        (
            "import wgtlab as wgt\nwgt.kernel(wgt.kernels.sum())\n",
            2,
            "JobDefinitionError: no job is being defined in this thread: call this inside "
            "`with wgt.Job(name) as job:` or call the method on the job object (job.input(...))",
        ),
    ],
    ids=["syntax", "exception", "wgt-error"],
)
def test_wgtlab_run_reports_an_error_in_the_job_file_as_one_line(
    tmp_path, monkeypatch, capsys, source, line, error
):
    _jobfile(tmp_path, source)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "job.py"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"wgtlab run: JobDefinitionError: job.py line {line}: {error}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.py"]


def test_wgtlab_run_validates_every_job_before_drawing_or_running_anything(tmp_path, capsys):
    path = _jobfile(
        tmp_path,
        """
        import numpy as np
        import wgtlab as wgt

        with wgt.Job("fine") as fine:
            wgt.input(np.arange(10.0), chunk_rows=5)
            wgt.kernel(wgt.kernels.sum())

        with wgt.Job("nokernel") as broken:
            wgt.input(np.arange(10.0), chunk_rows=5)
        """,
    )
    assert main(["run", str(path)]) == 1  # with the progress bar on
    out, err = capsys.readouterr()
    assert out == ""  # "fine" did not run either
    assert err == (
        "wgtlab run: JobDefinitionError: job 'nokernel' has no kernel: call job.kernel(...)\n"
    )  # no "nokernel: 0chunk" bar before it

    replicas = _jobfile(
        tmp_path,
        """
        import numpy as np
        import wgtlab as wgt

        with wgt.Job("wide") as wide:
            wgt.input(np.arange(10.0), chunk_rows=5)
            wgt.kernel(wgt.kernels.sum())
            wgt.verify("redundancy", replicas=3)
        """,
        "wide.py",
    )
    assert main(["run", str(replicas), "--workers", "2"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "wgtlab run: JobDefinitionError: job 'wide' asks for 3 replicas but the cluster has 2 "
        "workers; lower replicas or add workers\n"
    )


DEFINED = """
import wgtlab as wgt

@wgt.Job.define
def words():
    wgt.Job.execute(wgt.kernels.word_count())
"""


def test_wgtlab_run_a_defined_job_needs_its_data(tmp_path, capsys):
    path = _jobfile(tmp_path, DEFINED)
    assert main(["run", str(path), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"wgtlab run: JobDefinitionError: {path} defines the @wgt.Job.define job 'words' but "
        "no data for it: pass --data FILE to run it over that file's bytes, or give it data in "
        "the file (job = words.job(data))\n"
    )
    assert "A @wgt.Job.define job needs data: with --data FILE it runs over that file's bytes" in (
        " ".join(build_parser_help("run").split())
    )

    data = tmp_path / "text.txt"
    data.write_bytes(b"alpha beta gamma delta")
    assert main(["run", str(path), "--data", str(data), "--no-progress", "--json"]) == 0
    out, err = capsys.readouterr()
    assert '"value": 4' in out and '"ok": true' in out and err == ""

    given = _jobfile(tmp_path, DEFINED + 'job = words.job(b"one two three")\n', "given.py")
    assert main(["run", str(given), "--no-progress", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out.count('"ok": true') == 1 and '"value": 3' in out and err == ""


def test_wgtlab_run_mixes_jobs_and_refuses_data_nobody_takes(tmp_path, capsys):
    mixed = _jobfile(
        tmp_path,
        DEFINED
        + """
import numpy as np

with wgt.Job("total") as total:
    wgt.input(np.arange(4.0), chunk_rows=2)
    wgt.kernel(wgt.kernels.sum())
""",
    )
    assert main(["run", str(mixed), "--no-progress", "--json"]) == 0
    out, err = capsys.readouterr()
    assert out.count('"ok": true') == 1 and '"value": 6.0' in out
    assert err == (
        "wgtlab run: note: not running the @wgt.Job.define job 'words': it needs data (pass "
        "--data FILE)\n"
    )

    plain = _jobfile(tmp_path, "import wgtlab as wgt\nx = 1\n", "plain.py")
    data = tmp_path / "text.txt"
    data.write_bytes(b"a b")
    assert main(["run", str(plain), "--data", str(data)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"wgtlab run: ConfigError: --data is the data for @wgt.Job.define jobs, and {plain} "
        "defines none; a wgt.Job takes its data from wgt.input(...) in the file\n"
    )
    assert main(["run", str(mixed), "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"wgtlab run: ConfigError: --data {str(tmp_path)!r} is a directory; give a file\n"
    )


def build_parser_help(command: str) -> str:
    from wgtlab.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(action.choices, dict)  # the sub-commands' parsers, by name
    return action.choices[command].format_help()
