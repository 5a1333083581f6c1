"""The %wgt magics against a careless or hostile notebook, in a real IPython shell: quoted paths,
keys typed into the wrong argument, ``%%wgt udf`` cells that try to run code on the host, and
``-o`` names that would clobber Python's or IPython's own."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from magics_support import ANSI, run

import wgtlab as wgt
from wgtlab.jobs import runtime
from wgtlab.notebook.magics import MagicError


def everything_printed(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str
) -> tuple[Any, str]:
    """Run a cell; return its result and all it printed (stdout and stderr, colours removed)."""
    capsys.readouterr()
    result = run(ip, code)
    captured = capsys.readouterr()
    return result, ANSI.sub("", captured.out + captured.err)


def one_failure_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], code: str) -> str:
    result, printed = everything_printed(ip, capsys, code)
    assert not result.success, f"{code!r} did not fail"
    assert isinstance(result.error_in_exec, MagicError), result.error_in_exec
    lines = printed.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- quoting: a quoted path is the path, not a name with quotes in it ----------------------------


def test_quoted_paths_with_spaces_are_taken_whole(ip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a path that kept its quotes would be written here, relative
    home = tmp_path / "dir with spaces"
    home.mkdir()
    frame = pd.DataFrame({"carrier": ["AA", "UA"] * 200, "delay": np.arange(400.0)})
    ip.user_ns.update(frame=frame, key=bytes(range(32)))
    shards = home / "flight shards"

    report = run(ip, f'%wgt ces encode frame --to "{shards}" --key key').result
    assert report is not None and report.recoverable and report.counts() == {"ok": 12}
    assert (shards / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir with spaces"]

    report = run(ip, f"%wgt ces inspect '{shards}'").result
    assert report.counts() == {"ok": 12}
    escaped = str(shards).replace(" ", "\\ ")  # a shell's other way of writing the same path
    assert run(ip, f"%wgt ces inspect {escaped}").result.counts() == {"ok": 12}
    assert run(ip, f'%wgt ces decode "{shards}" -o back --key key').success
    pd.testing.assert_frame_equal(ip.user_ns["back"], frame)

    ledger = home / "trust ledger.db"
    cluster = run(ip, f'%wgt cluster local 2 --ledger "{ledger}"').result
    assert isinstance(cluster, wgt.LocalCluster) and runtime.session_cluster() is cluster
    assert ledger.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir with spaces"]


def test_an_unclosed_quote_is_one_line(ip, capsys):
    line = one_failure_line(ip, capsys, '%wgt ces inspect "/tmp/no end')
    assert line == "UsageError: the line has a quote that is never closed; close it, or escape it"


# --- keys typed into the wrong argument are never echoed -----------------------------------------

_SECRET = hashlib.sha256(b"an analyst's CES key, typed where it does not belong").digest()
KEYS = {
    "hex": _SECRET.hex(),
    "hex, a valid identifier": "f" + _SECRET.hex()[1:],
    "base64": base64.b64encode(_SECRET).decode(),
    "base64url, unpadded": base64.urlsafe_b64encode(_SECRET).decode().rstrip("="),
    "api token": "sk_live_4eC39HqLyjWDarjtT1zdp7dcQ9xR",
}

# (line, the argument named in the refusal; None where the parser or a lower layer refuses)
POSITIONS = [
    ("%wgt {K}", None),
    ("%wgt cluster {K}", None),
    ("%wgt cluster local {K}", None),
    ("%wgt cluster dask {K}", None),
    ("%wgt cluster local 2 --seed {K}", None),
    ("%wgt cluster local 2 -o {K}", "-o"),
    ("%wgt cluster dask tls://127.0.0.1:9 --certs {K}", None),
    ("%wgt run {K}", "the job argument of %wgt run"),
    ("%wgt run job --on {K}", "--on"),
    ("%wgt run defined --data {K}", "--data"),
    ("%wgt run job -o {K}", "-o"),
    ("%wgt run job --replicas {K}", None),
    ("%wgt run job --verify {K}", None),
    ("%wgt verify {K} 0", "the result argument of %wgt verify"),
    ("%wgt verify res {K}", None),
    ("%wgt verify res 0 --root {K}", None),
    ("%wgt workers {K}", None),
    ("%wgt trust {K}", None),
    ("%wgt ces {K} frame", None),
    ("%wgt ces encode {K} --to shards", "the source argument of %wgt ces"),
    ("%wgt ces encode frame --to shards --pipeline {K}", "--pipeline"),
    ("%wgt ces encode frame --to shards --key {K}", "--key"),
    ("%wgt ces encode frame --to shards --data-shards {K}", None),
    ("%wgt ces decode {K} -o back --key key", None),
    ("%wgt ces inspect {K}", None),
    ("%wgt ces decode shards -o {K} --key key", "-o"),
    ("%wgt ces decode shards -o back --as {K} --key key", None),
    ("%%wgt udf {K}\nreturn 1", "the name argument of %wgt udf"),
    ("%%wgt udf f --arg {K}\nreturn 1", "--arg"),
    ("%%wgt udf f --combine {K}\nreturn 1", "--combine"),
    ("%%wgt udf f --input {K}\nreturn 1", None),
    ("%%wgt wat {K}\n(module)", "the name argument of %wgt wat"),
]


@pytest.fixture(scope="module")
def with_a_result(ip):
    """A session cluster, a job, a defined job and a verified result, so each position is
    reached with everything else in place."""
    run(ip, "%wgt cluster local 2")
    ip.user_ns.update(data=b"y" * 2_000, frame=pd.DataFrame({"a": [1, 2]}), key=bytes(32))
    run(
        ip,
        "job = wgt.Job('sum')\n"
        "job.input(data, chunk_bytes=1_000)\n"
        "job.kernel(wgt.kernels.checksum())\n"
        "@wgt.Job.define\n"
        "def defined():\n"
        "    wgt.Job.split(lambda data: [data])\n"
        "    wgt.Job.execute(wgt.kernels.checksum())\n"
        "    wgt.Job.merge(list)",
    )
    assert run(ip, "%wgt run job -o res --progress none").success
    return ip.user_ns["res"]


@pytest.mark.parametrize("form", KEYS)
@pytest.mark.parametrize(("template", "where"), POSITIONS)
def test_a_key_typed_into_any_argument_is_never_echoed(
    ip,
    with_a_result,
    tmp_path,
    monkeypatch,
    capsys,
    template,
    where,
    form,
):
    monkeypatch.chdir(tmp_path)
    secret = KEYS[form]
    names_before = set(ip.user_ns)
    line = one_failure_line(ip, capsys, template.replace("{K}", secret))
    windows = {secret[i : i + 10] for i in range(len(secret) - 9)}
    assert not [w for w in windows if w in line], line
    if where is not None:
        assert line.startswith(
            f"UsageError: the value given to {where} looks like key material; it is not shown"
        ), line
    assert set(ip.user_ns) == names_before  # nothing bound under a key's name
    assert list(tmp_path.iterdir()) == []  # nothing written under one


def test_a_wrong_root_is_not_echoed_and_the_results_own_root_is_shown(ip, with_a_result, capsys):
    typed = KEYS["hex"]
    line = one_failure_line(ip, capsys, f"%wgt verify res 0 --root {typed}")
    assert line == (
        "ProofError: the audit path of chunk 0 in res does not lead to the root given with "
        f"--root (it leads to {with_a_result.merkle_root[:16]}…, the root of res): this result "
        "is not the one that root was published for"
    )


def test_ordinary_names_and_paths_are_still_echoed(ip, capsys):
    line = one_failure_line(ip, capsys, "%wgt ces encode frame --to x --pipeline no_such_pipe")
    assert line == "UsageError: no variable 'no_such_pipe' in the namespace (a CESPipeline)"
    line = one_failure_line(ip, capsys, "%wgt cluster local many")
    assert line == "UsageError: %wgt cluster local N: N must be a number, got 'many'"


# --- a %%wgt udf cell runs nothing on the host ---------------------------------------------------


def test_top_level_code_of_a_udf_cell_never_runs_on_the_host(ip, tmp_path, capsys):
    marker = tmp_path / "marker"
    cell = f"%%wgt udf touched\nopen({str(marker)!r}, 'w')\ndef touched(rows):\n    return 1"
    line = one_failure_line(ip, capsys, cell)
    assert not marker.exists()
    assert line.startswith("UsageError: line 1 of the cell (open(")
    assert (
        ") is top-level code: only the function goes into the sandbox; nothing of the cell "
        "runs on the host" in line
    )
    assert "touched" not in ip.user_ns


@pytest.mark.parametrize(
    "signature",
    [
        'rows, x=__import__("os").system("touch {marker}")',
        'rows, *, x=open("{marker}", "w")',
        'rows, x=(1, open("{marker}", "w"))',
    ],
)
def test_a_default_that_is_not_a_literal_is_refused_unevaluated(ip, tmp_path, capsys, signature):
    marker = tmp_path / "marker"
    cell = f"%%wgt udf f\ndef f({signature.format(marker=marker)}):\n    return x"
    line = one_failure_line(ip, capsys, cell)
    assert not marker.exists()
    assert line == (
        "UsageError: the default of x in f is not a literal: defaults are evaluated when the "
        "function is defined, which would be on the host, so only literals (numbers, strings, "
        "bytes, None, True/False, and tuples, lists, sets, dicts of them) are allowed; compute "
        "it inside the function"
    )


def test_a_decorator_is_refused_uncalled(ip, tmp_path, capsys):
    marker = tmp_path / "marker"
    cell = (
        f"%%wgt udf f\n@(lambda fn: open({str(marker)!r}, 'w') and fn)\ndef f(rows):\n    return 1"
    )
    line = one_failure_line(ip, capsys, cell)
    assert not marker.exists()
    assert line == (
        "UsageError: f has a decorator, which would run on the host: remove it (the cell "
        "already makes f a sandboxed udf)"
    )


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            "import math\ndef f(rows):\n    return math.pi",
            "line 1 of the cell (import math) is top-level code",
        ),
        ("class C:\n    pass\ndef f(rows):\n    return 1", "line 1 of the cell (class C:"),
        ("def f(rows):\n    return 1\nf = 3", "line 3 of the cell (f = 3) is top-level code"),
        ("async def f(rows):\n    return 1", "line 1 of the cell (async def f(rows):"),
        ("def f(rows):\n    return 1\ndef f(rows):\n    return 2", "the cell defines f twice"),
    ],
)
def test_anything_but_plain_defs_next_to_a_def_is_refused(ip, capsys, cell, message):
    line = one_failure_line(ip, capsys, "%%wgt udf f\n" + cell)
    assert line.startswith("UsageError: " + message), line


def test_annotations_are_never_evaluated_on_the_host(ip, tmp_path):
    marker = tmp_path / "marker"
    cell = f"def f(rows: open({str(marker)!r}, 'w')) -> None:\n    return len(rows)"
    made = run(ip, "%%wgt udf f\n" + cell)
    assert made.success, made.error_in_exec
    assert not marker.exists()
    assert ip.user_ns["f"].run([1, 2, 3], echo=False) == 3


def test_literal_defaults_helpers_and_namespace_constants_still_work(ip):
    ip.user_ns.update(THRESHOLD=2, rows_in=[{"x": 1}, {"x": 2}, {"x": 4}])
    cell = (
        "def double(x):\n"
        "    return 2 * x\n"
        "\n"
        "def scaled(rows, scale=3, names=('x',), *, offset=-0.5):\n"
        "    return [double(r[n]) * scale + offset\n"
        "            for r in rows for n in names if r[n] >= THRESHOLD]"
    )
    made = run(ip, "%%wgt udf scaled\n" + cell)
    assert made.success, made.error_in_exec
    scaled = ip.user_ns["scaled"]
    assert scaled.run(ip.user_ns["rows_in"], echo=False) == [11.5, 23.5]
    assert scaled(ip.user_ns["rows_in"]) == [11.5, 23.5]  # the native function has its defaults
    assert "double" not in ip.user_ns  # the helper went into the sandbox, not the namespace

    body = "def double(x):\n    return 2 * x\nreturn sum(double(r['x']) for r in rows)"
    made = run(ip, "%%wgt udf twice\n" + body)
    assert made.success, made.error_in_exec
    assert ip.user_ns["twice"].run(ip.user_ns["rows_in"], echo=False) == 14


# --- -o NAME never clobbers Python's or IPython's own names --------------------------------------

RESERVED = {
    "__builtins__": "a name Python itself uses",
    "__name__": "a name Python itself uses",
    "__wgt__": "a name Python itself uses",
    "print": "a Python builtin",
    "len": "a Python builtin",
    "_": "one of IPython's own names",
    "__": "one of IPython's own names",
    "___": "one of IPython's own names",
    "_5": "one of IPython's own names",
    "_i2": "one of IPython's own names",
    "In": "one of IPython's own names",
    "Out": "one of IPython's own names",
    "get_ipython": "one of IPython's own names",
    "exit": "one of IPython's own names",
    "quit": "one of IPython's own names",
}


@pytest.mark.parametrize("name", RESERVED)
@pytest.mark.parametrize(
    "template",
    [
        "%wgt cluster local 1 -o {name}",
        "%wgt run job -o {name}",
        "%wgt ces decode shards -o {name} --key key",
        "%%wgt udf {name}\nreturn 1",
        "%%wgt wat {name}\n(module)",
    ],
)
def test_reserved_names_are_refused_before_anything_runs(
    ip,
    with_a_result,
    capsys,
    name,
    template,
):
    before = ip.user_ns.get(name, KeyError)
    cluster = runtime.session_cluster()
    line = one_failure_line(ip, capsys, template.format(name=name))
    assert (
        line
        == f"UsageError: {name!r} is {RESERVED[name]}, not free for results: choose another name"
    )
    assert ip.user_ns.get(name, KeyError) is before
    assert runtime.session_cluster() is cluster
