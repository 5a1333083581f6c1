"""Every command the README and the tutorials show, run as a reader would run it: in a temporary
directory, on the real flights data, against loopback.

The README's ``python`` blocks run in order in one namespace (the names they take as given are
in ``given()``); its ``bash`` blocks and the shell lines of the tutorials' markdown run through
bash and the real ``wgtlab`` command; the two cluster recipes (README, ``06-dask-cluster``) start
a real scheduler and worker with real certificates on 127.0.0.1 instead of the example host;
inline ``wgtlab ...`` and ``%wgt ...`` synopses in the prose parse with the real parsers, and
the cheap ones run. What cannot run here is in ``NOT_RUN`` with the reason. Tutorial code cells
are not repeated here: nbval runs them (``python -m pytest notebooks/``).

A new fenced block in the README fails ``test_every_fenced_block_is_run_or_listed`` until it is
run here or listed in ``NOT_RUN``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import linecache
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest

import wgtlab as wgt
from wgtlab import samples
from wgtlab.cli import build_parser
from wgtlab.jobs import runtime
from wgtlab.sandbox.cache import cache_dir

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NOTEBOOKS = REPO / "notebooks"
WGTLAB = Path(sys.executable).with_name("wgtlab")  # the console script of this environment
SHELL_TIMEOUT_S = 60
pytestmark = pytest.mark.timeout(120)

# Commands shown that do not run here, and why.
NOT_RUN = {
    'python -m pip install -e ".[dev]"': "installs this package, from the network; the "
    "environment running this test has it installed (the demo after && runs here)",
    'python -m pip install -e ".[dev,lab]"': "installs from the network, as above",
    "python -m pytest": "the whole suite, this test included",
    "python -m mypy": "the type check over the whole package; .ci/run runs it before the tests",
    "jupyter lab notebooks/01-quickstart.ipynb": "starts an interactive server; "
    "tests/test_browser_quickstart.py opens that notebook in JupyterLab in Chromium",
    "jupyter execute --inplace notebooks/0X-*.ipynb": "rewrites the tutorials' stored outputs; "
    "nbval runs every tutorial",
    "%wgt cluster dask local": "starts DaskCluster.local, as the README's python block here "
    "and notebooks/06 (nbval) do",
    "ruff check . && ruff format --check .": "the lint step of CI (.ci/run), not a command of "
    "wgtlab",
    "dask scheduler": "named to say what it lacks (wgtlab scheduler's role checks), not to run",
}


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # of the opening fence, 1-based
    code: str


def fenced_blocks(text: str) -> list[Block]:
    blocks, opened, lines = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if opened is None:
                opened, lines = (line[3:].strip(), number), []
            else:
                blocks.append(Block(opened[0], opened[1], "\n".join(lines) + "\n"))
                opened = None
        elif opened is not None:
            lines.append(line)
    return blocks


def readme_blocks(language: str) -> list[Block]:
    return [b for b in fenced_blocks(README.read_text(encoding="utf-8")) if b.language == language]


def inline_commands(text: str, prefixes: tuple[str, ...]) -> list[str]:
    """The `code spans` of markdown prose that start with one of ``prefixes`` (after a
    ``NAME = `` that binds a magic's result)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose)]  # may wrap a line
    spans = [re.sub(r"^\w+ = (?=%)", "", s) for s in spans]
    return [s for s in spans if s.startswith(prefixes)]


def command_path(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    """Whether ``words`` name a (sub-)command of ``parser``: `wgtlab certs init` in the prose
    names the command, without its arguments."""
    for word in words:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            return False
        parser = subparsers[0].choices[word]
    return True


def notebook_markdown() -> str:
    return "\n\n".join(
        cell.source
        for path in sorted(NOTEBOOKS.glob("*.ipynb"))
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "markdown"
    )


def notebook_06_recipe() -> str:
    """The shell block of 06-dask-cluster's introduction: a real cluster, step by step."""
    (block,) = [b for b in fenced_blocks(notebook_markdown()) if "wgtlab" in b.code]
    assert block.language == "bash"
    return block.code


# --- the environment a reader's shell has ------------------------------------------------------


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """A reader's shell, in a fresh home: the wgtlab command on PATH, nothing set but what the
    README asks for, compiled kernels cached where this environment keeps them (HOME moved)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CES_", "WGTLAB_")) or k == "WGTLAB_RESULT_CACHE"
    }
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        PATH=f"{WGTLAB.parent}{os.pathsep}{env.get('PATH', '')}",
        WGTLAB_CACHE_DIR=str(cache_dir()),
        WGTLAB_DATA_DIR=str(tmp_path / "wgtlab-data"),
        MPLCONFIGDIR=str(tmp_path / "matplotlib"),
    )
    return env


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- an inventory: every fenced block is run here, or listed -----------------------------------

# Each README block, by a line it starts with, and the test that runs it.
RUN_BY = {
    'python -m pip install -e ".[dev]" && wgtlab demo': "test_the_quickstart_commands",
    "import wgtlab as wgt\nfrom wgtlab import samples": "test_readme_python_blocks_in_order",
    "@wgt.Job.define": "test_readme_python_blocks_in_order",
    "mod = wgt.WasmModule.from_wat(text)": "test_readme_python_blocks_in_order",
    "import math, wgtlab as wgt": "test_readme_python_blocks_in_order",
    "import wgtlab as wgt\npipe = wgt.CESPipeline()": "test_readme_python_blocks_in_order",
    "export CES_ENCRYPTION_KEY=$(wgtlab keygen)": "test_readme_ces_commands",
    "mkdir -p ~/.wgtlab && export WGTLAB_AUDIT_LOG": "test_readme_audit_commands",
    "from wgtlab import verify": "test_readme_python_blocks_in_order",
    "from wgtlab.receipts import user_identity": "test_readme_python_blocks_in_order",
    # the shell side of the receipt the python blocks saved: in their directory, after them
    "wgtlab identity": "test_readme_python_blocks_in_order",
    "cluster = wgt.DaskCluster.local(": "test_readme_python_blocks_in_order",
    "admin$   wgtlab certs init certs": "test_the_cluster_recipes_run_on_loopback",
    'cluster = wgt.DaskCluster("tls://sched.example.org:8786"': (
        "test_the_cluster_recipes_run_on_loopback"
    ),
}


def test_every_fenced_block_is_run_or_listed():
    blocks = fenced_blocks(README.read_text(encoding="utf-8"))
    for block in blocks:
        if block.language in ("", "text"):  # a diagram
            assert "wgtlab " not in block.code and "import" not in block.code, block.line
            continue
        owners = [test for start, test in RUN_BY.items() if block.code.startswith(start)]
        assert len(owners) == 1, (
            f"README.md line {block.line}: a {block.language} block that no test runs; run it in "
            f"tests/test_readme_commands.py (add it to RUN_BY) or list it in NOT_RUN with the "
            f"reason:\n{block.code}"
        )
        assert owners[0] in globals(), owners[0]
    assert {b.language for b in blocks} >= {"python", "bash"}
    # The tutorials' markdown has one block of commands (06's recipe, run on loopback below).
    assert [b.code for b in fenced_blocks(notebook_markdown())] == [notebook_06_recipe()]


def test_what_is_not_run_is_shown_and_every_other_command_is_run():
    """NOT_RUN lists commands the docs show, and every command of another tool the prose shows
    is in it (wgtlab's own and the magics are run or parsed below)."""
    text = README.read_text(encoding="utf-8") + "\n" + notebook_markdown()
    for command in NOT_RUN:
        assert command in text, f"NOT_RUN lists {command!r}, which the docs no longer show"
    spans = inline_commands(text, ("python ", "jupyter ", "pip ", "ruff ", "dask ", "bash "))
    fenced = [
        line.split("  #")[0].strip()
        for block in fenced_blocks(text)
        if block.language == "bash"
        for line in block.code.splitlines()
        if line.startswith(("python ", "jupyter ", "pip "))
    ]
    for shown in spans + fenced:
        for part in (p.strip() for p in shown.split("&&")):
            if not part.startswith(("wgtlab ", "%wgt", "dask worker ")):  # run below
                assert part in NOT_RUN or shown in NOT_RUN, f"`{shown}`: run it here or list it"


# --- the README's python blocks, in order ------------------------------------------------------

ECHO_WAT = """(module
  (memory (export "memory") 1)
  (func (export "wgt_alloc") (param $size i32) (result i32)
    (drop (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))))
    (i32.const 0))
  (func (export "wgt_run") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))"""


def given(tmp_path: Path, env_key: bytes) -> dict[str, object]:
    """What the README's snippets take as given (a reader has their own): real values."""
    flights_csv = samples.path().read_bytes()
    shutil.copy(samples.path(), tmp_path / "big.csv")
    leaves = [f"chunk {i}".encode() for i in range(7)]
    return {
        "df": samples.flights(),  # the flights, as the examples' `df`
        "text": ECHO_WAT,  # a kernel's WebAssembly text: echoes its input
        "data": flights_csv,  # bytes to run a kernel on, or to shard
        "leaves": leaves,
        "i": 3,
        "sha256_in": hashlib.sha256(b"chunk 3 in").digest(),
        "sha256_out": hashlib.sha256(b"chunk 3 out").digest(),
        "d1": hashlib.sha256(b"an outcome").hexdigest(),
        "d2": hashlib.sha256(b"an outcome").hexdigest(),
        "master_secret": bytes(range(32)),
        "old_key": env_key,  # the key `CESPipeline()` took from CES_ENCRYPTION_KEY
        "new_key": bytes(range(32, 64)),
    }


def run_python(block: Block, namespace: dict[str, object], code: str | None = None) -> None:
    """Run a block as a notebook cell runs: its source registered where ``inspect`` looks, so a
    ``@wgt.udf`` it defines can be captured (as IPython registers each cell)."""
    code = block.code if code is None else code
    filename = f"<README.md line {block.line}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    exec(compile(code, filename, "exec"), namespace)


# Shell blocks that go on where the python blocks left off (their files, their identity).
AFTER_THE_PYTHON_BLOCKS = ("wgtlab identity",)


def test_readme_python_blocks_in_order(tmp_path, monkeypatch, shell_env):
    monkeypatch.chdir(tmp_path)
    # The reader's home and data: ledgers, worker keys, the identity key receipts are signed
    # with (the shell blocks after these use the same ones).
    for name in ("HOME", "WGTLAB_DATA_DIR", "WGTLAB_CACHE_DIR"):
        monkeypatch.setenv(name, shell_env[name])
    monkeypatch.delenv("WGTLAB_IDENTITY", raising=False)
    env_key = bytes(range(100, 132))
    monkeypatch.setenv("CES_ENCRYPTION_KEY", env_key.hex())
    namespace: dict[str, object] = dict(given(tmp_path, env_key))
    started = []
    blocks = [b for b in readme_blocks("python") if "sched.example.org" not in b.code]
    assert len(blocks) >= 7
    try:
        for block in blocks:
            run_python(block, namespace)
            cluster = namespace.get("cluster")
            if cluster is not None and cluster not in started:
                started.append(cluster)
    finally:
        for cluster in started:
            cluster.close()
        session = runtime.session_cluster()
        if session is not None:
            session.close()
            runtime.set_session_cluster(None)

    # What the comments say the lines give.
    flights = samples.flights()
    result = namespace["result"]
    expected = np.histogram(flights["distance"], bins=12, range=(0.0, 3000.0))[0]
    assert np.array_equal(result.value, expected)
    assert namespace["total"] / namespace["n"] == pytest.approx(flights["arr_delay"].mean())
    assert namespace["res"].output == namespace["data"]
    assert (tmp_path / "big-copy.csv").read_bytes() == (tmp_path / "big.csv").read_bytes()
    assert namespace["df"].equals(flights)  # back from its shards
    with wgt.LocalCluster() as local:
        assert namespace["upper_job"].run(b"hello world", on=local).value == b"HELLO WORLD"

    for block in readme_blocks("bash"):
        if block.code.startswith(AFTER_THE_PYTHON_BLOCKS):
            bash(block.code, tmp_path, shell_env)


# --- the README's shell blocks -----------------------------------------------------------------


def test_the_quickstart_commands(tmp_path, shell_env):
    (block,) = [b for b in readme_blocks("bash") if b.code.startswith("python -m pip")]
    install, pytest_line = [line.split("  #")[0].strip() for line in block.code.splitlines()]
    runnable, demo = install.split(" && ")
    assert runnable in NOT_RUN and pytest_line in NOT_RUN and demo == "wgtlab demo"
    done = bash(demo, tmp_path, shell_env)
    assert "equals numpy.histogram on the trusted side: True" in done.stdout
    for png in ("trust.png", "verification.png"):  # where the README says
        assert (tmp_path / "wgtlab-demo" / png).read_bytes()[:4] == b"\x89PNG"


def test_readme_ces_commands(tmp_path, shell_env):
    (block,) = [b for b in readme_blocks("bash") if "wgtlab ces encode" in b.code]
    shutil.copy(samples.path(), tmp_path / "flights.csv")
    bash(block.code, tmp_path, shell_env)
    assert (tmp_path / "rebuilt.csv").read_bytes() == samples.path().read_bytes()
    for shards in ("shards", "shards-k", "shards-acme"):
        assert len(list((tmp_path / shards).glob("shard-*.ces"))) == 12
    # The options its comment names work too.
    encode = next(line for line in block.code.splitlines() if "# also" in line)
    command, options = encode.split("# also")
    bash(f"export CES_ENCRYPTION_KEY=$(wgtlab keygen)\n{command} {options}", tmp_path, shell_env)


def test_readme_audit_commands(tmp_path, shell_env):
    (block,) = [b for b in readme_blocks("bash") if "WGTLAB_AUDIT_LOG" in b.code]
    setup, *commands = [line for line in block.code.splitlines() if line.strip()]
    # What a reader does between turning the log on and reading it: use a key.
    shutil.copy(samples.path(), tmp_path / "flights.csv")
    use_a_key = "export CES_ENCRYPTION_KEY=$(wgtlab keygen)\nwgtlab ces encode flights.csv -o s/"
    script = [setup, use_a_key]
    for line in commands:
        command = line.split("  #")[0].strip()
        script.append(command.replace(" [--json]", ""))
        if "[--json]" in command:
            script.append(command.replace("[--json]", "--json"))
    # The anchor: the tip the verify before it printed (SEQ:MAC), as a reader would copy it.
    anchored = next(i for i, line in enumerate(script) if "--anchor 41:MAC" in line)
    script[anchored] = (
        'tip=$(wgtlab audit verify $WGTLAB_AUDIT_LOG | grep -oE "[0-9]+:[0-9a-f]{64}" | tail -1)'
        "\n" + script[anchored].replace("41:MAC", '"$tip"')
    )
    done = bash("\n".join(script), tmp_path, shell_env)
    assert done.stdout.strip()
    assert (Path(shell_env["HOME"]) / ".wgtlab" / "ces-audit.jsonl").is_file()


# --- the cluster recipes, on loopback ----------------------------------------------------------


class Members:
    """``wgtlab scheduler`` and ``wgtlab worker`` processes a recipe starts; all stopped at the
    end, whatever happened."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, line: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(process)
        return process

    def wait_for(self, process: subprocess.Popen[str], text: str) -> str:
        deadline = time.monotonic() + 45
        seen = []
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            if text in line:
                # Keep reading what it prints, so a full pipe never blocks it.
                threading.Thread(target=process.stdout.read, daemon=True).start()
                return line
        raise AssertionError(f"no {text!r} from {process.args}:\n{''.join(seen)}")

    def stop(self) -> None:
        """Workers first, then the scheduler: a worker whose scheduler is gone first keeps
        trying to reach it before it exits."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def members(tmp_path, shell_env) -> Iterator[Members]:
    started = Members(tmp_path, shell_env)
    try:
        yield started
    finally:
        started.stop()


def loopback(line: str, host: str, port: int) -> str:
    """A recipe's line with the example host and port made this machine's."""
    line = line.replace(f"tls://{host}:8786", f"tls://127.0.0.1:{port}")
    if line.startswith("wgtlab scheduler"):
        line = line.replace("--port 8786", f"--port {port} --host 127.0.0.1")
    return line


def shell_lines(code: str) -> list[str]:
    """The command lines of a recipe: prompts (``admin$``) and comments gone."""
    lines = []
    for raw in code.splitlines():
        line = re.sub(r"^\w+\$\s+", "", raw.strip()).split("  #")[0].split(" #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def run_recipe(lines: list[str], host: str, members: Members, tmp_path: Path) -> str:
    """Run a recipe's lines on loopback; the scheduler's address."""
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    for line in lines:
        assert line.startswith("wgtlab "), line
        line = loopback(line, host, port)
        words = shlex.split(line)
        if words[1] == "scheduler":
            members.wait_for(members.start(line), f"wgtlab scheduler at {address}")
        elif words[1] == "worker":
            members.wait_for(members.start(line), f"scheduler {address}")
        else:
            bash(line, tmp_path, members.env)
    return address


def test_the_cluster_recipes_run_on_loopback(tmp_path, members, monkeypatch):
    # The README's: certificates for a host, a scheduler, a worker, a member added later, and
    # the client connecting from Python.
    (recipe,) = [b for b in readme_blocks("bash") if "wgtlab certs init" in b.code]
    lines = shell_lines(recipe.code)
    assert [shlex.split(line)[1] for line in lines] == [
        "certs",
        "scheduler",
        "worker",
        "certs",
    ]
    lines = [line.replace("certs/worker-N", "certs/worker-0") for line in lines]
    address = run_recipe(lines, "sched.example.org", members, tmp_path)
    assert (tmp_path / "certs" / "worker-3" / "cert.pem").is_file()
    # A plain Dask worker, as the prose after the recipe says, with the next bundle.
    (plain,) = inline_commands(README.read_text(encoding="utf-8"), ("dask worker ",))
    plain = plain.replace("tls://HOST:8786", address).replace("worker-N", "worker-1")
    joined = f"established connection to {address}"  # Dask's log line once registered
    members.wait_for(members.start(f"{plain} --name plain-1"), joined)
    (connect,) = [b for b in readme_blocks("python") if "sched.example.org" in b.code]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"wgt": wgt}
    run_python(connect, namespace, connect.code.replace("tls://sched.example.org:8786", address))
    with namespace["cluster"] as cluster:
        cluster.client.wait_for_workers(2, timeout=30)
        assert sorted(cluster.worker_names()) == ["plain-1", "worker-0"]
        job = wgt.Job("words").input(b"one two three " * 100).kernel(wgt.kernels.word_count())
        result = job.verify("redundancy", replicas=2).run(on=cluster)
        assert result.value == 300 and set(result.verification.worker) == {"plain-1", "worker-0"}

    # 06-dask-cluster's: the worker given the address positionally, the magic connecting.
    members.stop()
    workdir = tmp_path / "06"
    workdir.mkdir()
    members.cwd = workdir
    lines = shell_lines(notebook_06_recipe())
    assert lines[2].startswith("wgtlab worker tls://scheduler.example.org:8786 ")
    address = run_recipe(lines, "scheduler.example.org", members, workdir)
    (magic,) = [c for c in inline_commands(notebook_markdown(), ("%wgt cluster dask tls://",))]
    monkeypatch.chdir(workdir)
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgtlab")
    try:
        line = magic.removeprefix("%wgt ").replace("tls://scheduler.example.org:8786", address)
        cluster = shell.run_line_magic("wgt", line)
        try:
            cluster.client.wait_for_workers(1, timeout=30)
            assert cluster.worker_names() == ["worker-0"]
        finally:
            cluster.close()
    finally:
        shell.run_line_magic("unload_ext", "wgtlab")
        runtime.set_session_cluster(None)


# --- inline synopses in the prose --------------------------------------------------------------

# Placeholder words of the synopses, and what a reader would put there.
PLACEHOLDERS = {
    "JOBFILE.py": "jobs.py",
    "NAME": "words",  # --job NAME --data FILE: a @wgt.Job.define job over FILE
    "FILE": "words.txt",
    "N": "100",
    "OUT": "out.bin",
    "LOG": "audit.jsonl",
    "RECEIPT": "r.json",
    "HEX": "00" * 32,
    "DIR": "shards",
    "KEY": "KEY",
    "HOST": "127.0.0.1",
}


def expansions(synopsis: str) -> list[list[str]]:
    """Every command a synopsis stands for: ``[...]`` parts left out and put in, ``a|b``
    alternatives each, placeholders filled, a redirection dropped."""
    synopsis = synopsis.split(" > ")[0]
    optional = re.findall(r"\[([^\]]+)\]", synopsis)
    bare = re.sub(r"\s*\[[^\]]+\]", "", synopsis)
    full = re.sub(r"\[([^\]]+)\]", r"\1", synopsis)
    variants = [bare] + ([full] if optional else [])
    commands = []
    for variant in variants:
        words = shlex.split(variant)
        choices = [w.split("|") if "|" in w and not w.startswith("-") else [w] for w in words]
        for pick in _product(choices):
            commands.append([PLACEHOLDERS.get(w, w) for w in pick])
    return commands


def _product(choices: list[list[str]]) -> list[list[str]]:
    combos: list[list[str]] = [[]]
    for options in choices:
        combos = [[*c, o] for c in combos for o in options]
    return combos


def test_every_wgtlab_synopsis_in_the_prose_parses():
    text = README.read_text(encoding="utf-8") + "\n" + notebook_markdown()
    synopses = inline_commands(text, ("wgtlab ",))
    assert "wgtlab run JOBFILE.py [--job NAME] [--data FILE] [--json] [--no-cache]" in synopses
    parser = build_parser()
    for synopsis in synopses:
        if re.fullmatch(r"wgtlab( [a-z]+)+", synopsis) and command_path(
            parser, synopsis.split()[1:]
        ):
            continue  # the prose names a command (`wgtlab certs init issues one of each`)
        for words in expansions(synopsis):
            try:
                args = parser.parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"`{synopsis}` in the prose does not parse as {words}")
            assert getattr(args, "handler", None) is not None, synopsis


def test_every_magic_in_the_prose_parses_and_the_session_ones_run(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from wgtlab.notebook.magics import PARSERS, _words

    text = README.read_text(encoding="utf-8") + "\n" + notebook_markdown()
    magics = inline_commands(text, ("%wgt", "%%wgt"))
    for magic in magics:
        words = _words(magic.lstrip("%").removeprefix("wgt").strip().rstrip("?"))
        if not words or words[0] == "COMMAND":  # `%wgt`, `%wgt?`, `%wgt COMMAND --help`
            continue
        assert words[0] in PARSERS, magic
        parser = PARSERS[words[0]].parser
        if len(words) <= 2 and not any(w.startswith("-") or w.isupper() for w in words):
            # the prose names a command (`%wgt run`, `%wgt ces encode`, `%%wgt udf`)
            assert len(words) == 1 or words[1] in str(parser.format_usage()), magic
            continue
        for expanded in expansions(" ".join(words)):
            try:
                parser.parse_args(expanded[1:])
            except (SystemExit, Exception) as error:
                pytest.fail(f"`{magic}` in the prose does not parse as {expanded}: {error}")

    # The README's "In Jupyter" list, run in its order on a small session.
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "wgtlab")
    shell.user_ns.update(
        df=samples.flights().head(3000),
        KEY=bytes(range(32)),
        job=wgt.Job("d").input(samples.flights()["distance"], chunk_rows=1000),
    )
    shell.user_ns["job"].kernel(wgt.kernels.sum()).verify("redundancy", replicas=3)
    steps = [
        "%wgt cluster local 4 --liars 1",
        "result = %wgt run job",
        "%wgt verify result 4",
        "%wgt trust --plot",
        "%wgt workers",
        "%wgt ces encode df --to shards --key KEY",
        "%wgt ces inspect shards --plot",
        "%wgt ces decode shards -o df --key KEY",
        "%wgt help",
    ]
    shown = {re.sub(r"\s*\[[^\]]+\]", "", m) for m in magics}
    try:
        for step in steps:
            magic = step.split("= ")[-1]
            assert magic.replace("shards", "DIR") in shown or magic in shown, step
            assert shell.run_cell(step, store_history=False).success, step
        assert shell.user_ns["df"].equals(samples.flights().head(3000))
        assert shell.user_ns["result"].ok
    finally:
        shell.run_line_magic("unload_ext", "wgtlab")
        runtime.set_session_cluster(None)


def test_the_cheap_inline_commands_run(tmp_path, shell_env):
    (tmp_path / "k.wat").write_text(ECHO_WAT)
    (tmp_path / "data.bin").write_bytes(b"any bytes at all")
    (tmp_path / "jobs.py").write_text(
        "import numpy as np\nimport wgtlab as wgt\n\n"
        'with wgt.Job("total") as total:\n'
        "    wgt.input(np.arange(100.0), chunk_rows=10)\n"
        "    wgt.kernel(wgt.kernels.sum())\n\n"
        "@wgt.Job.define\n"
        "def words():\n"
        "    wgt.Job.execute(wgt.kernels.word_count())\n"
    )
    (tmp_path / "words.txt").write_bytes(b"alpha beta")
    text = README.read_text(encoding="utf-8")
    runs = [
        "wgtlab sandbox run k.wat --input data.bin --fuel 1000000 [--timeout-ms N "
        "--memory-mb N] [-o OUT]",
        "wgtlab run JOBFILE.py [--job NAME] [--data FILE] [--json] [--no-cache]",
        "wgtlab udf info",
        "wgtlab keygen > ces.key",
    ]
    for synopsis in runs:
        assert f"`{synopsis}`" in text, synopsis
    script = []
    for synopsis in runs:
        if " > " in synopsis:
            script.append(synopsis)
            continue
        script += [shlex.join(words) for words in expansions(synopsis)]
    bash("\n".join(script), tmp_path, shell_env)
    assert (tmp_path / "out.bin").read_bytes() == b"any bytes at all"
    assert len((tmp_path / "ces.key").read_text().strip()) == 64


# --- what the tutorials say about each other ---------------------------------------------------


def _checked_outputs(name: str) -> list[str]:
    cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
    return [
        "".join(o.get("data", {}).get("text/plain", "")) or "".join(o.get("text", ""))
        for c in cells
        if c.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in c.source
        for o in c.outputs
    ]


def test_06s_merkle_root_is_the_one_01_prints():
    """06 says so, and nbval holds each notebook to its stored outputs: the stored roots agree."""

    def roots(name: str) -> list[str]:
        return [r for o in _checked_outputs(name) for r in re.findall(r"\b[0-9a-f]{64}\b", o)]

    roots_01, roots_06 = set(roots("01-quickstart")), roots("06-dask-cluster")
    assert roots_06 and set(roots_06) <= roots_01
    assert "The Merkle root is the one `01-quickstart` printed" in json.dumps(
        nbformat.read(NOTEBOOKS / "06-dask-cluster.ipynb", as_version=4).cells[7].source
    )
