"""The acceptance review's CES and ``wgtlab run`` edges, through a real ``wgtlab`` process.

test_ces_cli.py, test_ces_store.py and test_jobs_cluster.py check each message in process;
here the real entry point runs, so a traceback, a partial file or a second line on stderr
would show: every refusal is exactly one line, exit code 1, and leaves the directory as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wgtlab.cli import main

REPO = Path(__file__).resolve().parents[1]
# Not UTF-8 whatever the rest is: the key file that used to raise UnicodeDecodeError.
RAW_KEY = bytes([0xFF, 0xC3, 0x28, 0x00]) + os.urandom(28)
KEY_FORMS = (
    "expected 64 hex characters (optionally followed by a newline), e.g. from `wgtlab keygen > "
    "FILE`, or exactly 32 raw bytes, e.g. from `head -c 32 /dev/urandom > FILE`"
)


def _wgtlab(cwd: Path, *argv: str, env: dict[str, str] | None = None):
    environ = {
        k: v for k, v in os.environ.items() if k not in ("CES_ENCRYPTION_KEY", "CES_MASTER_SECRET")
    }
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wgtlab.cli", *argv],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _refused(proc, line: str) -> None:
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", line + "\n")


def _no_key_material(text: str) -> None:
    assert RAW_KEY.hex() not in text.lower()
    for secret in (RAW_KEY[:4].hex(), "\\xff", "0xff", "position"):
        assert secret not in text.lower()


@pytest.fixture
def work(tmp_path):
    (tmp_path / "data.bin").write_bytes(os.urandom(50_000) + b"tail" * 10_000)
    (tmp_path / "raw.key").write_bytes(RAW_KEY)
    return tmp_path


def test_ces_cli_edges_in_a_real_process(work):
    data = (work / "data.bin").read_bytes()
    key_file = ("--key-file", "raw.key")

    # 3. A key file of 32 raw bytes is a key, and so is the same key as hex (+ newline).
    proc = _wgtlab(work, "ces", "encode", "data.bin", "-o", "rk", *key_file, "--no-progress")
    assert (proc.returncode, proc.stderr) == (0, "")
    _no_key_material(proc.stdout)
    (work / "hex.key").write_text(RAW_KEY.hex() + "\n")

    # 1. Decoding into an existing directory: refused before decoding; nothing inside it.
    (work / "od").mkdir()
    before = _tree(work)
    proc = _wgtlab(work, "ces", "decode", "rk", "-o", "od", *key_file)
    _refused(
        proc,
        "wgtlab ces: ConfigError: cannot write the rebuilt data to 'od': it is a directory; "
        "give a file path (e.g. a file inside that directory)",
    )
    assert _tree(work) == before

    # 1. Decoding onto an existing file: refused without --force, replaced with it.
    (work / "out.bin").write_bytes(b"an older copy")
    before = _tree(work)
    proc = _wgtlab(work, "ces", "decode", "rk", "-o", "out.bin", "--key-file", "hex.key")
    _refused(
        proc,
        "wgtlab ces: ConfigError: cannot write the rebuilt data to 'out.bin': the file already "
        "exists; pass overwrite=True (CLI: --force) to replace it, or choose another path",
    )
    assert _tree(work) == before
    argv = ("ces", "decode", "rk", "-o", "out.bin", "--key-file", "hex.key", "--force")
    proc = _wgtlab(work, *argv, "--no-progress")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert (work / "out.bin").read_bytes() == data
    assert set(_tree(work)) == set(before)  # replaced in place: no out.bin.partial

    # 2. Encoding a directory: one typed line, no traceback, no shard directory.
    before = _tree(work)
    _refused(
        _wgtlab(work, "ces", "encode", ".", "-o", "x", *key_file),
        "wgtlab ces: ConfigError: '.' is a directory, not a file to shard",
    )
    assert _tree(work) == before

    # 4. Two explicit key sources: refused, even with $CES_ENCRYPTION_KEY set as a fallback.
    env = {"CES_MASTER_SECRET": os.urandom(32).hex(), "CES_ENCRYPTION_KEY": os.urandom(32).hex()}
    argv = ("ces", "encode", "data.bin", "-o", "t3", "--tenant", "acme", *key_file)
    _refused(
        _wgtlab(work, *argv, env=env),
        "wgtlab ces: ConfigError: --key-file and --tenant both name a key; give one: --key-file "
        "FILE for a key of its own, or --tenant ID to derive the tenant's key from the master "
        "secret",
    )
    assert _tree(work) == before

    # 3. Anything else in a key file: the file and the two forms, never a byte of it.
    (work / "short.key").write_bytes(RAW_KEY[:31])
    (work / "long.key").write_bytes(RAW_KEY + b"\n")
    before = _tree(work)
    for name, problem in (("short.key", "holds 31 bytes"), ("long.key", "holds 33 bytes")):
        proc = _wgtlab(work, "ces", "encode", "data.bin", "-o", "bad", "--key-file", name)
        _refused(proc, f"wgtlab ces: KeyConfigError: the key file {name} {problem}; {KEY_FORMS}")
        _no_key_material(proc.stderr)
    assert _tree(work) == before


@pytest.mark.parametrize(
    ("source", "line", "error"),
    [
        ("import wgtlab as wgt\nx = (1,\n", 2, "SyntaxError: '(' was never closed"),
        ("import wgtlab as wgt\n\tx = 1\n", 2, "IndentationError: unexpected indent"),
        (
            "import wgtlab as wgt\n\ndef load():\n    raise KeyError('rows')\n\nrows = load()\n",
            4,
            "KeyError: 'rows'",
        ),
        (
            "import wgtlab as wgt\nraise RuntimeError('no\\n  data')\n",
            2,
            "RuntimeError: no data",
        ),
        ("import sys\nsys.exit(3)\n", 2, "SystemExit: 3"),
    ],
    ids=["syntax", "indentation", "exception-in-a-function", "multi-line-message", "sys-exit"],
)
def test_run_job_file_errors_in_a_real_process(tmp_path, source, line, error):
    (tmp_path / "job.py").write_text(source)
    before = _tree(tmp_path)
    proc = _wgtlab(tmp_path, "run", "job.py", "--no-progress")
    _refused(proc, f"wgtlab run: JobDefinitionError: job.py line {line}: {error}")
    assert "Traceback" not in proc.stderr
    assert _tree(tmp_path) == before


def test_run_refuses_a_directory_as_its_job_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__main__.py").write_text("raise SystemExit('ran the directory')\n")
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    assert main(["run", "jobs", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "wgtlab run: JobDefinitionError: job file 'jobs' is a directory; give the Python file "
        "that defines the jobs\n"
    )
    assert _tree(tmp_path) == before
    assert main(["run", "missing.py", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        "wgtlab run: JobDefinitionError: job file 'missing.py' does not exist\n"
    )
