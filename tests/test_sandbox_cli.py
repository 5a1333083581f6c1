"""``wgtlab sandbox run``, run in-process through the real CLI entry point."""

from __future__ import annotations

import pytest
import sandbox_hostile as hostile

from wgtlab.cli import main

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def upper_wat(tmp_path):
    path = tmp_path / "upper.wat"
    path.write_text(hostile.UPPER)
    return path


def test_run_prints_output_and_usage(tmp_path, upper_wat, capsysbinary):
    source = tmp_path / "in.txt"
    source.write_bytes(b"hello sandbox")
    assert main(["sandbox", "run", str(upper_wat), "--input", str(source)]) == 0
    out, err = capsysbinary.readouterr()
    assert out == b"HELLO SANDBOX"
    assert b"fuel used" in err and b"wall time" in err and b"output sha256" in err


def test_run_writes_output_file_from_binary_module(tmp_path, capsysbinary):
    from wgtlab.sandbox import WasmModule

    module = tmp_path / "upper.wasm"
    module.write_bytes(WasmModule.from_wat(hostile.UPPER).wasm)
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_bytes(b"abc")
    assert main(["sandbox", "run", str(module), "-i", str(source), "-o", str(target)]) == 0
    assert target.read_bytes() == b"ABC"
    assert capsysbinary.readouterr().out == b""


@pytest.mark.parametrize(
    ("wat", "flags", "message"),
    [
        (hostile.INFINITE_LOOP, ["--fuel", "100000"], "OutOfFuel: the task used up"),
        (hostile.MEMORY_BOMB, ["--memory-mb", "4"], "MemoryLimitExceeded"),
        (hostile.FORBIDDEN_IMPORTS, [], "ForbiddenImport: upper imports what"),
        (hostile.WRONG_RUN_TYPE, [], "InvalidModule"),
        (hostile.ECHO, ["--timeout-ms", "-5"], "max_execution_time_ms must be positive"),
    ],
)
def test_refused_or_stopped_module_exits_non_zero_with_the_message(
    tmp_path, capsys, wat, flags, message
):
    path = tmp_path / "upper.wat"
    path.write_text(wat)
    assert main(["sandbox", "run", str(path), *flags]) == 1
    assert message in capsys.readouterr().err


def test_missing_input_file_is_a_clear_error(upper_wat, tmp_path, capsys):
    assert main(["sandbox", "run", str(upper_wat), "--input", str(tmp_path / "nope")]) == 1
    assert "cannot read input file" in capsys.readouterr().err
