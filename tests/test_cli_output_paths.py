"""``-o`` into a directory that does not exist: one typed line, non-zero exit, nothing written.

(``wgtlab ces decode`` is covered in test_ces_cli.py; this is ``wgtlab sandbox run``.)
"""

from __future__ import annotations

import pytest
import sandbox_hostile as hostile

from wgtlab.cli import main

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def work(tmp_path):
    """A directory holding only the module and its input (the cache lives beside it)."""
    root = tmp_path / "work"
    root.mkdir()
    (root / "upper.wat").write_text(hostile.UPPER)
    (root / "in.txt").write_bytes(b"hello sandbox")
    return root


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_sandbox_run_output_in_a_missing_directory(work, monkeypatch, capsysbinary):
    monkeypatch.chdir(work)
    argv = ["sandbox", "run", "upper.wat", "-i", "in.txt", "-o", "missing/dir/file"]
    assert main(argv) == 1
    out, err = capsysbinary.readouterr()
    assert out == b""
    assert err == (
        b"wgtlab sandbox: ConfigError: cannot write the output to 'missing/dir/file': its "
        b"directory 'missing/dir' does not exist; create that directory first, or choose an "
        b"output path in an existing one\n"
    )  # one line, and refused before the module ran (no usage figures)
    assert _tree(work) == {"upper.wat", "in.txt"}

    (work / "missing" / "dir").mkdir(parents=True)  # doing what it says works
    assert main(argv) == 0
    assert (work / "missing" / "dir" / "file").read_bytes() == b"HELLO SANDBOX"
    assert _tree(work) == {"upper.wat", "in.txt", "missing", "missing/dir", "missing/dir/file"}


def test_sandbox_run_output_under_a_file(work, capsys):
    target = work / "in.txt" / "out"
    argv = [
        "sandbox",
        "run",
        str(work / "upper.wat"),
        "-i",
        str(work / "in.txt"),
        "-o",
        str(target),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("wgtlab sandbox: ConfigError: cannot write the output to ")
    assert f"its directory {str(work / 'in.txt')!r} is not a directory; create" in err
    assert err.count("\n") == 1
    assert _tree(work) == {"upper.wat", "in.txt"}
    assert (work / "in.txt").read_bytes() == b"hello sandbox"


def test_sandbox_run_directory_vanishing_during_the_run(work, monkeypatch, capsys):
    """The directory is checked before the run and again when writing: gone by then, the same
    typed error, and no partial file."""
    import wgtlab.commands.sandbox as command

    checks = []
    real_check = command._check_output_directory

    def check_then_remove(name):
        real_check(name)
        checks.append(name)
        if len(checks) == 1:  # the pre-run check passed: now the directory goes away
            (work / "out").rmdir()

    (work / "out").mkdir()
    monkeypatch.setattr(command, "_check_output_directory", check_then_remove)
    target = str(work / "out" / "result")
    argv = ["sandbox", "run", str(work / "upper.wat"), "-i", str(work / "in.txt"), "-o", target]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"ConfigError: cannot write the output to {target!r}: its directory" in err
    assert "does not exist" in err and err.count("\n") == 1
    assert _tree(work) == {"upper.wat", "in.txt"}
