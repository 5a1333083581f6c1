"""What the ``wgtlab`` command says when something is wrong: one line, the name that was meant,
the failed chunk and why, and help text a terminal shows as written."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import pytest

from wgtlab.cli import build_parser, main

SPIN = """(module (memory (export "memory") 1)
  (func (export "wgt_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "wgt_run") (param i32 i32) (result i64) (loop $f (br $f)) (i64.const 0)))"""

JOBS = f"""
import numpy as np
import wgtlab as wgt

spin = wgt.WasmModule.from_wat('''{SPIN}''', name="spin")

with wgt.Job("too-greedy") as greedy:  # one chunk, which runs out of fuel
    wgt.input(b"x" * 10_000, chunk_bytes=10_000)
    wgt.kernel(spin)
    wgt.limits(max_cpu_cycles=1_000_000)

with wgt.Job("by-carrier") as by_carrier:
    wgt.input(np.arange(10.0), chunk_rows=5)
    wgt.kernel(wgt.kernels.sum())

@wgt.Job.define
def words():
    wgt.Job.execute(wgt.kernels.word_count())
"""

OUT_OF_FUEL = (
    "OutOfFuel: the task used up its CPU budget: max_cpu_cycles=1,000,000 fuel; raise "
    "max_cpu_cycles or give it smaller chunks"
)


@pytest.fixture
def jobfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "jobs.py"
    path.write_text(textwrap.dedent(JOBS).lstrip())
    (tmp_path / "words.txt").write_bytes(b"alpha beta gamma")
    return path


def test_a_job_name_that_matches_nothing_lists_the_jobs_and_the_likeliest(jobfile, capsys):
    defines = (
        "the file defines 'greedy' (job 'too-greedy'), 'by_carrier' (job 'by-carrier'), 'words'"
    )
    for argv, said in [
        (
            ["--job", "by_carier"],
            f"jobs.py defines no job named 'by_carier'; did you mean 'by_carrier'? (--job takes "
            f"a variable or job name; {defines})",
        ),
        (
            ["--job", "too-greed"],
            # a variable and its job's name are one job: suggested once
            f"jobs.py defines no job named 'too-greed'; did you mean 'too-greedy'? "
            f"(--job takes a variable or job name; {defines})",
        ),
        # with --data: still about the job asked for, not about --data
        (
            ["--job", "nosuch", "--data", "words.txt"],
            f"jobs.py defines no job named 'nosuch' (--job takes a variable or job name; "
            f"{defines})",
        ),
    ]:
        assert main(["run", "jobs.py", "--no-progress", *argv]) == 1
        out, err = capsys.readouterr()
        assert (out, err) == ("", f"wgtlab run: JobDefinitionError: {said}\n")

    Path("empty.py").write_text("x = 1\n")
    assert main(["run", "empty.py", "--job", "total", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        "wgtlab run: JobDefinitionError: empty.py defines no job at module level, so none named "
        "'total'; define one with `with wgt.Job(name) as job: ...`\n"
    )
    # The name found: a variable name or a job's own name
    assert main(["run", "jobs.py", "--job", "by-carrier", "--no-progress", "--json"]) == 0
    assert '"value": 45.0' in capsys.readouterr().out


def test_a_failed_chunk_is_one_line_saying_which_and_why_and_the_other_jobs_still_run(
    jobfile, capsys
):
    assert main(["run", "jobs.py", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "wgtlab run: note: not running the @wgt.Job.define job 'words': it needs data (pass "
        "--data FILE)",
        f"wgtlab run: ChunkFailed: job 'too-greedy': chunk 0 failed: {OUT_OF_FUEL}; 0 chunks "
        "verified (job.on_error('continue') in the job file runs every chunk and combines those "
        "that verify)",
    ]
    assert out.startswith("by_carrier: JobResult('by-carrier', 2/2 chunks verified")
    assert "  value: 45.0\n" in out and "too-greedy" not in out

    # --json: the partial result of the failed job, for scripts to read
    assert main(["run", "jobs.py", "--job", "greedy", "--no-progress", "--json"]) == 1
    out, err = capsys.readouterr()
    assert '"name": "too-greedy"' in out and '"ok": false' in out
    assert err.count("\n") == 1 and err.startswith("wgtlab run: ChunkFailed: job 'too-greedy'")


def test_wgtlab_worker_takes_the_scheduler_address_positionally_or_as_an_option(capsys):
    parser = build_parser()
    positional = parser.parse_args(["worker", "tls://sched:8786", "--certs", "certs/worker-0"])
    option = parser.parse_args(["worker", "--scheduler", "tls://sched:8786"])
    assert (positional.address, positional.scheduler) == ("tls://sched:8786", None)
    assert (option.address, option.scheduler) == (None, "tls://sched:8786")

    assert main(["worker", "--certs", "certs/worker-0"]) == 1
    assert capsys.readouterr().err == (
        "wgtlab worker: ConfigError: which scheduler? give its address: wgtlab worker "
        "tls://HOST:PORT --certs DIR/worker-N (or --scheduler tls://HOST:PORT)\n"
    )
    assert main(["worker", "tls://a:8786", "--scheduler", "tls://b:8786"]) == 1
    assert capsys.readouterr().err == (
        "wgtlab worker: ConfigError: two scheduler addresses, 'tls://a:8786' and --scheduler "
        "'tls://b:8786'; give one\n"
    )
    # The same address both ways is one address: the next question is the certificates.
    assert main(["worker", "tls://a:8786", "--scheduler", "tls://a:8786"]) == 1
    assert "--certs is required" in capsys.readouterr().err


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_no_help_text_shows_restructuredtext_markup():
    parsers = _parsers(build_parser(), "wgtlab")
    assert len(parsers) > 15
    for path, parser in parsers:
        text = parser.format_help()
        assert "``" not in text, (path, [line for line in text.splitlines() if "``" in line])
    demo = dict(parsers)["wgtlab demo"].format_help()
    assert "\nThe main job, end to end, on real data with one lying worker.\n" in demo
