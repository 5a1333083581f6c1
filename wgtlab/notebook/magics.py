"""The ``%wgt`` / ``%%wgt`` magics: clusters, kernels, UDFs, jobs, proofs, trust and CES shards.

``%load_ext wgtlab`` registers them. Each sub-command has its own ``magic_arguments`` parser;
``%wgt?`` shows them all. Lines are split as a shell splits them (quote a path with spaces). A
failure prints one line, never echoing what looks like key material, and marks the cell failed.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import dataclasses
import hashlib
import io
import keyword
import linecache
import math
import os
import re
import shlex
import textwrap
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from wgtlab import defaults
from wgtlab.errors import ChunkFailed, WgtError
from wgtlab.jobs import runtime
from wgtlab.jobs.events import TextProgress
from wgtlab.notebook.widgets import JobDashboard
from wgtlab.verify import verify_proof
from wgtlab.views.messages import chunk_failed_line, did_you_mean, listing

__all__ = ["MagicError", "WgtMagics", "load_ipython_extension", "unload_ipython_extension"]

_RED, _RESET = "\x1b[0;31m", "\x1b[0m"


class MagicError(Exception):
    """A ``%wgt`` command failed: IPython shows one line (no traceback), the cell fails."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    @classmethod
    def of(cls, exc: BaseException) -> MagicError:
        """The error's first line (a sandboxed traceback stays on the exception, ``__cause__``)."""
        lines = str(exc).strip().splitlines() or [""]
        return cls(type(exc).__name__, lines[0] + (" …" if len(lines) > 1 else ""))

    def _render_traceback_(self) -> list[str]:
        # IPython prints what this returns instead of the traceback.
        return [f"{_RED}{self.kind}{_RESET}: {self.message}"]


@dataclass(frozen=True)
class ProofCheck:
    """What ``%wgt verify`` found: the chunk's audit path checked against the result's root."""

    result: Any
    chunk: int
    root: bytes  # the root the audit path was checked against (and leads to)

    def __repr__(self) -> str:
        proof = self.result.proof(self.chunk)
        lines = [
            f"Merkle proof of chunk {self.chunk} verifies (RFC 6962, tree size {proof.tree_size})",
            f"  leaf  {proof.leaf.hex()}",
            *(f"  path  {p.hex()}" for p in proof.path),
            f"  root  {self.root.hex()}",
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from wgtlab.notebook.display import proof_html

        return proof_html(self.result, self.chunk, ok=True)


# --- sub-command parsers (their docstrings are the help %wgt? and --help show: plain text) -----


@magic_arguments(name="wgt cluster")
@argument("kind", nargs="?", choices=["local", "dask"], help="start a cluster (none: show it)")
@argument("target", nargs="?", help="local: number of workers; dask: tls:// address or 'local'")
@argument("--liars", type=int, default=0, help="how many workers lie (the first ones)")
@argument("--liar-rate", type=float, default=1.0, help="how often a liar lies (0..1)")
@argument("--seed", type=int, default=0, help="seed for simulated faults and worker choice")
@argument("--ledger", help="trust ledger file (default: in memory for this cluster)")
@argument("--certs", help="dask: the client bundle `wgtlab certs init DIR` wrote (DIR/client)")
@argument("--workers", type=int, default=2, help="dask local: how many worker processes")
@argument("-o", "--out", help="also bind the cluster to this variable")
def _cluster_args(line: str) -> None:
    """The session's cluster: what %wgt run and job.run() use by default."""


@magic_arguments(name="wgt udf")
@argument("name", help="variable the sandboxed function is bound to")
@argument("--input", dest="input_kind", choices=["records", "text", "bytes"], help="chunk kind")
@argument("--rows", choices=["records", "columns"], help="records: list of row dicts (default)")
@argument(
    "--combine", help="list (default: the per-chunk values), sum, natural, concat, min, max, frame"
)
@argument("--arg", default="rows", help="parameter name when the cell is a function body")
def _udf_args(line: str) -> None:
    """(cell) A Python function (a def, or a body using rows) compiled into a sandboxed UDF.

    Nothing of the cell runs on the host: it holds defs only (no decorators, literal defaults),
    or one function body; the other defs are helpers the udf may call."""


@magic_arguments(name="wgt wat")
@argument("name", help="variable the WasmModule is bound to")
def _wat_args(line: str) -> None:
    """(cell) WebAssembly text (ABI v1) compiled into a validated WasmModule."""


@magic_arguments(name="wgt run")
@argument(
    "job", help="a Job, a frame query (wgt.frame / wgt.sql), or a @wgt.Job.define job with --data"
)
@argument("-o", "--out", help="bind the JobResult to this variable")
@argument("--verify", choices=["hash", "merkle", "redundancy"], help="verification mode")
@argument("--replicas", type=int, help="workers per chunk (implies --verify redundancy)")
@argument("--on", dest="cluster", help="cluster variable (default: the session cluster)")
@argument("--data", help="input variable for a @wgt.Job.define job")
@argument("--progress", default="auto", choices=["auto", "widget", "text", "none"])
@argument(
    "--no-cache",
    action="store_true",
    help="compute every chunk, even those verified before (the verified-result cache)",
)
def _run_args(line: str) -> None:
    """Run a job with the live dashboard and return its verified JobResult."""


@magic_arguments(name="wgt sql")
@argument("-o", "--out", help="bind the result (a DataFrame) to this variable")
@argument("--verify", choices=["hash", "merkle", "redundancy"], help="verification mode")
@argument("--replicas", type=int, help="workers per chunk (implies --verify redundancy)")
@argument("--on", dest="cluster", help="cluster variable (default: the session cluster)")
@argument("--progress", default="auto", choices=["auto", "widget", "text", "none"])
@argument(
    "--no-cache",
    action="store_true",
    help="compute every chunk, even those verified before (the verified-result cache)",
)
@argument("--result", help="also bind the verified JobResult to this variable")
def _sql_args(line: str) -> None:
    """(cell) One SELECT over a notebook variable (a DataFrame, Parquet path or wgt.frame),
    computed by generated WebAssembly on the cluster and verified; shows the answer."""


@magic_arguments(name="wgt workers")
def _workers_args(line: str) -> None:
    """The session cluster's workers: keys, trust, verdicts, simulated faults."""


@magic_arguments(name="wgt trust")
@argument("--plot", action="store_true", help="also draw the trust timeline")
def _trust_args(line: str) -> None:
    """The session cluster's trust ledger (scores, quarantine)."""


@magic_arguments(name="wgt verify")
@argument("result", help="a JobResult variable")
@argument("chunk", type=int, help="chunk index")
@argument("--root", help="the published Merkle root (hex) to check against (default: RESULT's)")
def _verify_args(line: str) -> None:
    """Print a chunk's Merkle audit path and check it against the (published) root."""


@magic_arguments(name="wgt ces")
@argument("action", choices=["encode", "decode", "inspect"])
@argument("source", help="encode: a variable (DataFrame, bytes, str, Path); else: a URL")
@argument("--to", help="encode: where to save the shard set (directory or fsspec URL)")
@argument("-o", "--out", help="decode: variable to bind the data to")
@argument("--pipeline", help="a CESPipeline variable (its key and shard layout)")
@argument("--key", help="a variable holding a 32-byte key")
@argument("--data-shards", type=int, help="encode: data shards (default 8)")
@argument("--parity-shards", type=int, help="encode: parity shards (default 4)")
# --force, as `wgtlab ces` and the messages of ces.save (overwrite=True) call it
@argument("--force", action="store_true", help="encode: replace a shard set at --to")
@argument("--as", dest="as_kind", default="auto", choices=["auto", "dataframe", "bytes", "text"])
@argument("--plot", action="store_true", help="inspect: also draw the shard map")
def _ces_args(line: str) -> None:
    """CES shard sets: encode a variable to a URL, decode one back, or inspect one."""


@magic_arguments(name="wgt receipt")
@argument("result", help="a JobResult variable")
@argument("-o", "--out", help="variable to bind the Receipt to")
@argument("--save", metavar="PATH", help="also save it there (JSON)")
def _receipt_args(line: str) -> None:
    """A result's signed receipt (in-toto Statement in a DSSE envelope, your identity key)."""


@magic_arguments(name="wgt verify-receipt")
@argument("path", help="a saved receipt")
@argument("--key", help="the signer required: public key (hex, PEM file) or fingerprint")
@argument("--data", help="the data the job read (a variable or a file): input digests again")
@argument("--shards", help="the CES shard set the job read (directory or URL)")
@argument("--audit", default="0", help="re-run N random chunks (or all) in the local sandbox")
def _verify_receipt_args(line: str) -> None:
    """Check a saved receipt: signatures, Merkle roots, and with --data the data and an audit."""


@magic_arguments(name="wgt help")
def _help_args(line: str) -> None:
    """This overview."""


# magic_arguments gives each of these functions a ``.parser`` (argparse), which typing cannot see.
PARSERS: dict[str, Any] = {
    "cluster": _cluster_args,
    "udf": _udf_args,
    "wat": _wat_args,
    "run": _run_args,
    "sql": _sql_args,
    "workers": _workers_args,
    "trust": _trust_args,
    "verify": _verify_args,
    "ces": _ces_args,
    "receipt": _receipt_args,
    "verify-receipt": _verify_receipt_args,
    "help": _help_args,
}
CELL_COMMANDS = ("udf", "wat", "sql")
COMPLETIONS = {"cluster": ["local", "dask"], "ces": ["encode", "decode", "inspect"]}


def _words(line: str) -> list[str]:
    """The words of a magic line, split as a POSIX shell splits them: quotes group a path with
    spaces and are removed, a backslash escapes the next character. (IPython's own
    ``parse_argstring`` splits in non-POSIX mode, which keeps the quotes in the path.)"""
    try:
        return shlex.split(line)
    except ValueError as exc:  # shlex's messages: "No closing quotation", "No escaped character"
        if "quotation" in str(exc):
            raise UsageError(
                "the line has a quote that is never closed; close it, or escape it"
            ) from None
        raise UsageError("the line ends in a lone backslash; remove it, or escape it") from None


# --- key material is never echoed -------------------------------------------------------------

_HEX_RUN = re.compile(r"[0-9A-Fa-f]{32,}")
_BASE64_RUNS = (re.compile(r"[A-Za-z0-9+/]{32,}={0,2}"), re.compile(r"[A-Za-z0-9_-]{32,}={0,2}"))
_NOT_SHOWN = "<not shown: looks like key material>"
_SHOWN_PIECE = 8  # no 8 characters in a row of a key-like value are echoed, even re-encoded
# Arguments that take paths, URLs, addresses or a published (hex) root: key-shaped text there may
# be legitimate (a content-addressed directory), so it is only kept out of messages.
_FREE_TEXT = {
    "cluster": {"target", "ledger", "certs"},
    "verify": {"root"},
    "ces": {"to"},
    "receipt": {"save"},
    # a public key is no secret; a fingerprint or a content-addressed path looks like one
    "verify-receipt": {"path", "key", "data", "shards"},
}


def _key_material(text: str) -> list[str]:
    """The parts of ``text`` that look like key material: 32 or more hex characters (16 bytes
    and up; a CES key is 64), base64 of 32 bytes, or a long token of the base64 alphabets that
    mixes upper case, lower case and digits with the entropy of a random one (at least 4 bits a
    character over 32 or more characters; words, identifiers and paths stay below)."""
    found = [m.group() for m in _HEX_RUN.finditer(text)]
    for pattern in _BASE64_RUNS:
        for m in pattern.finditer(text):
            token = m.group()
            is_32_bytes = len(token) == 44 and token.endswith("=") and token[-2] != "="
            if is_32_bytes or _looks_random(token.rstrip("=")):
                found.append(token)
    return list(dict.fromkeys(found))


def _looks_random(token: str) -> bool:
    classes = sum(any(test(c) for c in token) for test in (str.islower, str.isupper, str.isdigit))
    counts = Counter(token)
    entropy = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return len(token) >= 32 and classes == 3 and entropy >= 4.0


def _redact(message: str, typed: str) -> str:
    """``message`` with every piece of ``_SHOWN_PIECE`` or more characters of a key-like part of
    ``typed`` (what the user wrote: the magic's line and cell) replaced by a placeholder."""
    pieces = {
        secret[i : i + _SHOWN_PIECE]
        for secret in _key_material(typed)
        for i in range(len(secret) - _SHOWN_PIECE + 1)
    }
    hidden = [False] * len(message)
    for i in range(len(message) - _SHOWN_PIECE + 1):
        if message[i : i + _SHOWN_PIECE] in pieces:
            hidden[i : i + _SHOWN_PIECE] = [True] * _SHOWN_PIECE
    if not any(hidden):
        return message
    parts = (
        _NOT_SHOWN if is_hidden else "".join(c for _, c in group)
        for is_hidden, group in groupby(zip(hidden, message, strict=True), key=lambda h: h[0])
    )
    return "".join(parts)


def _refuse_key_material(command: str, args: Any) -> None:
    """A key typed where a variable's name (or a word) belongs is refused without showing it."""
    free_text = _FREE_TEXT.get(command, set())
    if command == "ces" and args.action != "encode":
        free_text = free_text | {"source"}  # decode and inspect take a URL there
    for action in PARSERS[command].parser._actions:
        value = getattr(args, action.dest, None)
        if isinstance(value, str) and action.dest not in free_text and _key_material(value):
            where = (
                action.option_strings[0]
                if action.option_strings
                else f"the {action.dest} argument of %wgt {command}"
            )
            raise UsageError(
                f"the value given to {where} looks like key material; it is not shown. Never "
                "type a key into a cell: keep it in a variable (or in the environment as "
                f"{defaults.CES_KEY_ENV}) and give the variable's name"
            )


def _overview() -> str:
    lines = ["%wgt COMMAND ... / %%wgt udf|wat NAME (cell) / %%wgt sql (cell)", ""]
    for fn in PARSERS.values():
        usage = fn.parser.format_usage().strip().removeprefix("::").strip()
        description = (fn.parser.description or "").strip().splitlines()[0]
        lines += [f"  {usage}", f"      {description}"]
    lines += ["", "Details: %wgt? or %wgt COMMAND --help"]
    return "\n".join(lines)


# --- the magics --------------------------------------------------------------------------------


@magics_class
class WgtMagics(Magics):
    """``%wgt`` and ``%%wgt``; each sub-command is a ``cmd_NAME`` method."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._started: Any = None  # the session cluster this extension started (it closes it)

    @line_cell_magic
    def wgt(self, line: str, cell: str | None = None) -> Any:
        try:
            return self._dispatch(line, cell)
        except MagicError as exc:
            error, cause = exc, exc.__cause__
        except UsageError as exc:
            error, cause = MagicError("UsageError", str(exc)), None
        except WgtError as exc:
            error, cause = MagicError.of(exc), exc
        # Whatever echoes what was typed (argparse, a lower layer naming a path) is shown without
        # the parts that look like key material; the original, which would show them, is dropped.
        message = _redact(error.message, line if cell is None else f"{line}\n{cell}")
        if message != error.message:
            raise MagicError(error.kind, message) from None
        raise error from cause

    def _dispatch(self, line: str, cell: str | None) -> Any:
        words = _words(line)
        command, rest = (words[0], words[1:]) if words else ("", [])
        if command not in PARSERS:
            known = ", ".join(PARSERS)
            raise UsageError(
                f"unknown %wgt command {command!r}; use one of {known} (see %wgt help)"
                if command
                else f"%wgt needs a command: one of {known} (see %wgt help)"
            )
        if (cell is not None) != (command in CELL_COMMANDS):
            raise UsageError(
                f"%%wgt {command} needs a cell body"
                if command in CELL_COMMANDS
                else f"{command} is a line command: write %wgt {command} (one %)"
            )
        if {"-h", "--help"} & set(rest):
            print(PARSERS[command].parser.format_help().strip().removeprefix("::").strip())
            return None
        args = PARSERS[command].parser.parse_args(rest)
        _refuse_key_material(command, args)
        if getattr(args, "out", None):
            _check_variable(args.out)  # before the command runs, not when its result is bound
        handler = getattr(self, f"cmd_{command.replace('-', '_')}")
        return handler(args, cell) if cell is not None else handler(args)

    wgt.__doc__ = "Run wgtlab from the notebook.\n\n" + "\n\n".join(
        textwrap.dedent(fn.__doc__ or "") for fn in PARSERS.values()
    )

    # --- helpers -------------------------------------------------------------------------------

    @property
    def _user_ns(self) -> dict[str, Any]:
        """The notebook's variables (a registered magic always has its shell)."""
        assert self.shell is not None
        return self.shell.user_ns

    def _lookup(self, name: str, what: str, kinds: type | tuple[type, ...] = object) -> Any:
        """The notebook's variable ``name``; if there is none, the error names the variables of
        ``kinds`` that were most likely meant (or those there are)."""
        try:
            return self._user_ns[name]
        except KeyError:
            meant = self._meant(name, kinds)
            raise UsageError(
                f"no variable {name!r} in the namespace ({what}){'; ' if meant else ''}{meant}"
            ) from None

    def _meant(self, name: str, kinds: type | tuple[type, ...]) -> str:
        """``"did you mean 'x'?"`` among the notebook's variables of ``kinds``; for a specific
        kind with nothing close, the variables of that kind there are; else nothing."""
        names = _variables_of(self._user_ns, kinds)
        guess = did_you_mean(name, names)
        if guess or kinds is object or not names:
            return guess
        return f"those in the namespace: {listing(names)}"

    def _key_variables(self) -> list[str]:
        return _variables_of(self._user_ns, (bytes, bytearray, str))

    def _bind(self, name: str | None, value: Any) -> None:
        if name:
            _check_variable(name)
            self._user_ns[name] = value

    def _cluster(self) -> Any:
        return runtime.default_cluster()

    # --- sub-commands --------------------------------------------------------------------------

    def cmd_help(self, args: Any) -> None:
        print(_overview())

    def cmd_cluster(self, args: Any) -> Any:
        if args.kind is None:
            return self._cluster()
        cluster = self._local_cluster(args) if args.kind == "local" else self._dask_cluster(args)
        previous, self._started = self._started, cluster
        runtime.set_session_cluster(cluster)
        if previous is not None and previous is not cluster:
            previous.close()
        self._bind(args.out, cluster)
        return cluster

    def _local_cluster(self, args: Any) -> Any:
        from wgtlab.cluster.faults import Liar
        from wgtlab.cluster.local import LocalCluster

        try:
            workers = int(args.target) if args.target is not None else None
        except ValueError:
            raise UsageError(
                f"%wgt cluster local N: N must be a number, got {args.target!r}"
            ) from None
        if workers is None:
            workers = defaults.LOCAL_WORKERS
        if not 0 <= args.liars <= workers:
            raise UsageError(f"--liars must be between 0 and the {workers} workers")
        faults = {
            f"local-{i}": Liar(rate=args.liar_rate, seed=args.seed + i) for i in range(args.liars)
        }
        return LocalCluster(workers, ledger=args.ledger, faults=faults, seed=args.seed)

    def _dask_cluster(self, args: Any) -> Any:
        from wgtlab.cluster.dask import DaskCluster
        from wgtlab.cluster.faults import Liar

        if not args.target:
            raise UsageError("%wgt cluster dask ADDRESS: give a tls:// address, or 'local'")
        if args.target == "local":
            if not 0 <= args.liars <= args.workers:
                raise UsageError(f"--liars must be between 0 and the {args.workers} workers")
            faults = {i: Liar(rate=args.liar_rate, seed=args.seed + i) for i in range(args.liars)}
            return DaskCluster.local(
                args.workers, faults=faults, ledger=args.ledger, seed=args.seed
            )
        if not args.target.startswith("tls://"):
            raise UsageError(
                f"%wgt cluster dask: {args.target!r} is not a tls:// address; wgtlab talks to "
                "Dask only over mutual TLS (tls://HOST:PORT with --certs), or use 'local'"
            )
        return DaskCluster(args.target, args.certs, ledger=args.ledger, seed=args.seed)

    def cmd_workers(self, args: Any) -> Any:
        return self._cluster()

    def cmd_trust(self, args: Any) -> Any:
        cluster = self._cluster()
        ledger = cluster.ledger
        if args.plot:
            from IPython.display import display

            from wgtlab.views.plots import trust_timeline

            display(trust_timeline(ledger.history(), cluster.policy.quarantine_threshold))
        return ledger

    def cmd_verify(self, args: Any) -> ProofCheck:
        from wgtlab.jobs.result import JobResult

        result = self._lookup(args.result, "a JobResult", JobResult)
        if not isinstance(result, JobResult):
            raise UsageError(f"{args.result} is a {type(result).__name__}, not a JobResult")
        proof = result.proof(args.chunk)
        root = proof.root
        if args.root is not None:
            try:
                root = bytes.fromhex(args.root.strip())
            except ValueError:
                raise UsageError(f"--root must be hex, got {args.root!r}") from None
        if not verify_proof(proof.leaf, proof.index, proof.tree_size, list(proof.path), root):
            # The root typed is not echoed: it is key-shaped, and it may be a key pasted by mistake.
            raise MagicError(
                "ProofError",
                f"the audit path of chunk {args.chunk} in {args.result} does not lead to the "
                f"root given with --root (it leads to {proof.root.hex()[:16]}…, the root of "
                f"{args.result}): this result is not the one that root was published for"
                if args.root is not None
                else f"the audit path of chunk {args.chunk} in {args.result} does not lead to "
                f"its own root {root.hex()[:16]}…: the result is not intact",
            )
        return ProofCheck(result, args.chunk, root)

    def cmd_receipt(self, args: Any) -> Any:
        from wgtlab.jobs.result import JobResult

        result = self._lookup(args.result, "a JobResult", JobResult)
        if not isinstance(result, JobResult):
            raise UsageError(f"{args.result} is a {type(result).__name__}, not a JobResult")
        receipt = result.receipt()
        if args.save:
            receipt.save(args.save)
        self._bind(args.out, receipt)
        return receipt

    def cmd_verify_receipt(self, args: Any) -> Any:
        from IPython.display import display

        from wgtlab.receipts import Receipt

        audit = args.audit if args.audit == "all" else _count(args.audit, "--audit")
        data = args.data
        if data is not None and data.isidentifier() and data in self._user_ns:
            data = self._user_ns[data]  # a variable holding the data, else a file's path
        report = Receipt.load(args.path).verify(
            args.key, data=data, shards=args.shards, audit=audit
        )
        if not report.ok:  # the table first, then the cell fails
            display(report)
            raise MagicError("ReceiptError", f"{args.path}: {report.verdict}")
        return report

    def cmd_wat(self, args: Any, cell: str) -> Any:
        from wgtlab.sandbox.module import WasmModule

        _check_variable(args.name)
        module = WasmModule.from_wat(cell, name=args.name)
        self._bind(args.name, module)
        return module

    def cmd_udf(self, args: Any, cell: str) -> Any:
        from wgtlab.sandbox.python import udf

        _check_variable(args.name)
        function = _function_from_cell(args.name, args.arg, cell, self._user_ns)
        options = {
            name: value
            for name, value in (
                ("input", args.input_kind),
                ("rows", args.rows),
                ("combine", args.combine),
            )
            if value is not None
        }
        kernel = udf(function, **options)
        self._bind(args.name, kernel)
        return kernel

    def cmd_run(self, args: Any) -> Any:
        from wgtlab.frame.api import Query, QueryJob
        from wgtlab.jobs.job import DefinedJob, Job

        if args.out:
            _check_variable(args.out)
        job = self._lookup(args.job, "a job or a frame query", (Job, DefinedJob, Query))
        if isinstance(job, Query):
            job = job.job()
        if isinstance(job, DefinedJob):
            if args.data is None:
                raise UsageError(
                    f"{args.job} is a @wgt.Job.define job: give it its input with --data VAR"
                )
            job = job.job(self._lookup(args.data, "the job's input"))
        elif args.data is not None:
            raise UsageError(f"--data is for @wgt.Job.define jobs; {args.job} has its input")
        if not isinstance(job, Job):
            raise UsageError(
                f"{args.job} is not a wgt.Job or a frame query (it holds a {type(job).__name__})"
            )
        if args.replicas is not None or args.verify is not None:
            mode = args.verify or "redundancy"
            job = job.copy().verify(mode, replicas=args.replicas)  # for this run only
        cluster = self._run_cluster(args)
        try:
            if isinstance(job, QueryJob):  # a frame query: one or more passes, each shown
                result = job.run_passes(lambda one: self._run_with_progress(one, cluster, args))
            else:
                result = self._run_with_progress(job, cluster, args)
        except ChunkFailed as exc:
            raise self._chunk_failed(exc, args.out) from exc
        self._bind(args.out, result)
        return result

    def cmd_sql(self, args: Any, cell: str) -> Any:
        from wgtlab.frame.sql import sql, table_name

        for name in (args.out, args.result):
            if name:
                _check_variable(name)
        text = cell.strip()
        table = table_name(text)
        names = [n for n in self._user_ns if not n.startswith("_")]
        found = table if table in self._user_ns else _folded(table, names)
        if found is None:
            raise UsageError(
                f"the query reads {table!r}, and there is no such variable"
                f"{_parenthesised(did_you_mean(table, names))}; a table is a notebook variable "
                "holding a DataFrame, a Parquet path or a wgt.frame"
            )
        job = sql(text, **{table: self._user_ns[found]}).job()
        if args.replicas is not None or args.verify is not None:
            job.verify(args.verify or "redundancy", replicas=args.replicas)
        cluster = self._run_cluster(args)
        try:
            result = job.run_passes(lambda one: self._run_with_progress(one, cluster, args))
        except ChunkFailed as exc:
            raise self._chunk_failed(exc, args.result) from exc
        self._bind(args.result, result)
        self._bind(args.out, result.value)
        return result.value

    def _run_cluster(self, args: Any) -> Any:
        from wgtlab.cluster.base import Cluster

        cluster = (
            self._lookup(args.cluster, "a cluster", Cluster) if args.cluster else self._cluster()
        )
        if not isinstance(cluster, Cluster):
            raise UsageError(
                f"{args.cluster or 'the session cluster'} is a {type(cluster).__name__}, not a "
                "wgt.LocalCluster or wgt.DaskCluster"
            )
        return cluster

    def _run_with_progress(self, job: Any, cluster: Any, args: Any) -> Any:
        """Run one job on ``cluster`` with its progress view (the dashboard, text, or none)."""
        from wgtlab.cluster.manager import delegate_job
        from wgtlab.notebook.widgets import job_progress

        plan = dataclasses.replace(job.plan(), cache=not args.no_cache)
        plan.check_workers(len(cluster.worker_names()))
        progress = None
        try:
            progress = job_progress(plan, cluster, args.progress)
            result = delegate_job(plan, cluster, subscribers=[progress] if progress else [])
        except BaseException as exc:
            _close(progress, exc)
            raise
        _close(progress, None)
        return result

    def _chunk_failed(self, exc: ChunkFailed, out: str | None) -> MagicError:
        partial = exc.result
        message = chunk_failed_line(exc)
        if partial is not None:
            if out:
                self._bind(out, partial)
                message += f"; the partial JobResult is in {out} (see {out}.chunks)"
            else:
                message += "; run with -o VAR to keep the partial JobResult"
        return MagicError("ChunkFailed", message)

    def cmd_ces(self, args: Any) -> Any:
        from wgtlab import ces

        pipeline = self._pipeline(args)
        if args.action == "encode":
            if not args.to:
                raise UsageError("%wgt ces encode VAR --to URL: where should the shards go?")
            value = self._lookup(args.source, "the data to encode")
            shards = _shards_of(value, pipeline)
            ces.save(shards, args.to, overwrite=args.force)
            return pipeline.inspect(args.to)
        if args.action == "decode":
            if not args.out:
                raise UsageError("%wgt ces decode URL -o VAR: which variable gets the data?")
            data = pipeline.reconstruct(ces.load(args.source))
            value = _decoded(data, args.as_kind)
            self._bind(args.out, value)
            print(f"{args.out} = {_describe(value)} (from {len(data):,} bytes)")
            return None
        report = ces.inspect(args.source, key=pipeline if (args.pipeline or args.key) else None)
        if args.plot:
            from IPython.display import display

            from wgtlab.notebook.shardmap import shard_map

            display(shard_map(report))
        return report

    def _pipeline(self, args: Any) -> Any:
        from wgtlab.ces import CESPipeline
        from wgtlab.ces.keys import key_from_env

        if args.pipeline and args.key:
            raise UsageError("give --pipeline or --key, not both")
        if args.pipeline:
            pipeline = self._lookup(args.pipeline, "a CESPipeline", CESPipeline)
            if not isinstance(pipeline, CESPipeline):
                raise UsageError(
                    f"{args.pipeline} is a {type(pipeline).__name__}, not a CESPipeline"
                )
            return pipeline
        layout = {
            k: v
            for k, v in (("data_shards", args.data_shards), ("parity_shards", args.parity_shards))
            if v is not None
        }
        if args.key:
            if args.key not in self._user_ns:  # never echo it: it may be a key itself
                raise UsageError(
                    "--key takes the name of a variable that holds the key (bytes or 64 hex "
                    "characters), and there is no such variable"
                    f"{_parenthesised(did_you_mean(args.key, self._key_variables()))}; never "
                    "type a key into a cell"
                )
            return CESPipeline(self._user_ns[args.key], **layout)
        if args.action == "inspect":
            return None
        if args.action == "decode" and key_from_env() is None:
            raise UsageError(
                f"%wgt ces decode needs the key the shards were sealed with: --key VAR, "
                f"--pipeline VAR, or {defaults.CES_KEY_ENV} in the environment"
            )
        return CESPipeline(**layout)  # $CES_ENCRYPTION_KEY, else an ephemeral key (warned)


def _count(text: str, option: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{option} takes a number or 'all', got {text[:20]!r}")
    return int(text)


def _folded(name: str, names: list[str]) -> str | None:
    """``name`` among ``names`` ignoring case (SQL identifiers), when that is unambiguous."""
    found = [n for n in names if n.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def _parenthesised(text: str) -> str:
    return f" ({text})" if text else ""


def _close(progress: JobDashboard | TextProgress | None, error: BaseException | None) -> None:
    if isinstance(progress, JobDashboard):
        progress.finish(error)
    elif progress is not None:
        progress.close()


def _function_from_cell(name: str, arg: str, cell: str, namespace: dict[str, Any]) -> Any:
    """The function a ``%%wgt udf`` cell defines: its one ``def`` (or the one named ``name``,
    the cell's other defs being helpers it may call), or its body wrapped in ``def name(arg)``.

    Nothing of the cell runs on the host. The defs are compiled, never executed: each function
    object is made from its code, with its literal defaults, and globals taken from the
    namespace, which capture then sends into the sandbox as constants, imports or functions.
    What a def statement or a cell would run here (top-level code, decorators, defaults that are
    not literals) is refused."""
    source = textwrap.dedent(cell).strip("\n")
    tree = _parse_cell(source, 0)
    has_def = any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in tree.body)
    wrapped = not has_def or _returns_outside_functions(tree)
    if wrapped:
        if not arg.isidentifier() or keyword.iskeyword(arg):
            raise UsageError(f"--arg {arg!r} is not a valid parameter name")
        source = f"def {name}({arg}):\n{textwrap.indent(source, '    ')}\n"
        tree = _parse_cell(source, 1)
    defs = _plain_defs(tree, source, arg)
    names = [d.name for d in defs]
    if len(defs) == 1:
        wanted = names[0]
    elif name in names:
        wanted = name
    else:
        raise UsageError(f"the cell defines {', '.join(names)}; which one is {name!r}?")
    # capture reads the source with inspect.getsource: register it where that looks, as IPython
    # does for cells.
    filename = f"<wgt-udf-{name}-{hashlib.sha256(source.encode()).hexdigest()[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        # Annotations stay unevaluated strings, as the guest's Python treats them.
        flags = __future__.annotations.compiler_flag
        module = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
    except SyntaxError as exc:
        line = (exc.lineno or 1) - wrapped
        raise UsageError(f"the cell is not valid Python: {exc.msg} (line {line})") from None
    codes = {c.co_name: c for c in module.co_consts if isinstance(c, types.CodeType)}
    # The functions see the namespace as it is now, as their sandboxed copy will: only the
    # names their code uses, so a variable deleted later is not kept alive by the udf.
    used = {n for code in _code_objects(module) for n in code.co_names}
    scope = {n: namespace[n] for n in used if n in namespace}
    scope["__builtins__"] = namespace.get("__builtins__", builtins)
    scope["__name__"] = namespace.get("__name__", "__main__")
    for node in defs:
        positional, keyword_only = _literal_defaults(node)
        function = types.FunctionType(codes[node.name], scope, node.name, positional)
        function.__kwdefaults__ = keyword_only
        scope[node.name] = function
    return scope[wanted]


def _parse_cell(source: str, wrapper_lines: int) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        line = (exc.lineno or 1) - wrapper_lines
        raise UsageError(f"the cell is not valid Python: {exc.msg} (line {line})") from None


def _returns_outside_functions(tree: ast.Module) -> bool:
    """True if the cell returns at top level: it is a function body (which may define helpers)."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            return True
        if not isinstance(node, scopes):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _plain_defs(tree: ast.Module, source: str, arg: str) -> list[ast.FunctionDef]:
    """The cell's defs, refusing anything that would run on the host when a cell or a def runs."""
    defs: list[ast.FunctionDef] = []
    for node in tree.body:
        segment = (ast.get_source_segment(source, node) or "").splitlines() or [""]
        shown = segment[0] if len(segment[0]) <= 60 else segment[0][:59] + "…"
        where = f"line {node.lineno} of the cell ({shown})"
        if isinstance(node, ast.AsyncFunctionDef):
            raise UsageError(
                f"{where} defines an async function; the sandbox runs plain functions: make it "
                "a def"
            )
        if not isinstance(node, ast.FunctionDef):
            raise UsageError(
                f"{where} is top-level code: only the function goes into the sandbox; nothing "
                "of the cell runs on the host, so a %%wgt udf cell holds defs only (or one "
                f"function body using {arg}): move it into the function"
            )
        if node.decorator_list:
            raise UsageError(
                f"{node.name} has a decorator, which would run on the host: remove it (the cell "
                f"already makes {node.name} a sandboxed udf)"
            )
        if any(d.name == node.name for d in defs):
            raise UsageError(f"the cell defines {node.name} twice; give each function its name")
        defs.append(node)
    return defs


def _literal_defaults(
    node: ast.FunctionDef,
) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
    """(positional defaults, keyword-only defaults) of a def, each a literal read without
    running anything; anything else is refused."""
    arguments = node.args
    positional_params = [*arguments.posonlyargs, *arguments.args]
    pairs = [
        *zip(
            positional_params[len(positional_params) - len(arguments.defaults) :],
            arguments.defaults,
            strict=True,
        ),
        *(
            (p, d)
            for p, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
            if d is not None
        ),
    ]
    values: dict[str, Any] = {}
    for param, default in pairs:
        try:
            values[param.arg] = ast.literal_eval(default)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise UsageError(
                f"the default of {param.arg} in {node.name} is not a literal: defaults are "
                "evaluated when the function is defined, which would be on the host, so only "
                "literals (numbers, strings, bytes, None, True/False, and tuples, lists, sets, "
                "dicts of them) are allowed; compute it inside the function"
            ) from None
    positional = tuple(values[p.arg] for p in positional_params if p.arg in values)
    keyword_only = {p.arg: values[p.arg] for p in arguments.kwonlyargs if p.arg in values}
    return positional or None, keyword_only or None


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    found, stack = [], [code]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return found


def _shards_of(value: Any, pipeline: Any) -> list[bytes]:
    import pandas as pd

    from wgtlab.ces import shard_dataframe

    if isinstance(value, pd.DataFrame):
        return shard_dataframe(value, pipeline)
    if isinstance(value, str):
        return pipeline.process(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pipeline.process(value)
    if isinstance(value, os.PathLike):
        with open(value, "rb") as f:
            return pipeline.process(f.read())
    raise UsageError(
        f"cannot encode a {type(value).__name__}; give a DataFrame, bytes, str or pathlib.Path"
    )


_PARQUET_MAGIC = b"PAR1"


def _decoded(data: bytes, kind: str) -> Any:
    if kind == "auto":
        is_parquet = data[:4] == _PARQUET_MAGIC and data[-4:] == _PARQUET_MAGIC
        kind = "dataframe" if is_parquet else "bytes"
    if kind == "dataframe":
        import pandas as pd

        try:
            return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        except Exception as exc:
            raise UsageError(f"the data is not a DataFrame (Parquet): {exc}") from None
    if kind == "text":
        return data.decode("utf-8")
    return data


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) == 2:
        return f"DataFrame, {shape[0]:,} rows × {shape[1]} columns"
    return f"{type(value).__name__}, {len(value):,} long"


# --- completion and loading --------------------------------------------------------------------


def candidates(shell: Any, text_until_cursor: str) -> list[str]:
    """What may follow ``%wgt`` at the cursor: sub-commands, their words, fitting variables and
    options (unfiltered; the caller keeps those starting with the token being typed)."""
    words = text_until_cursor.split()
    if not words or words[0] not in ("%wgt", "%%wgt", "wgt"):
        return []
    position = len(words) - (0 if text_until_cursor.endswith((" ", "\t")) else 1)
    if position <= 1:
        return list(CELL_COMMANDS) if words[0] == "%%wgt" else list(PARSERS)
    command = words[1]
    if command not in PARSERS:
        return []
    if position == 2:
        if command in COMPLETIONS:
            return COMPLETIONS[command]
        if command in ("run", "verify", "receipt"):
            return _variables(shell, command)
    return [
        option
        for action in PARSERS[command].parser._actions
        for option in action.option_strings
        if option.startswith("--")
    ]


def _matcher(shell: Any) -> Callable[[Any], dict[str, Any]]:
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher()
    def wgt_completions(context: Any) -> dict[str, Any]:
        token = context.token
        found = [c for c in candidates(shell, context.text_until_cursor) if c.startswith(token)]
        # Suppress the other matchers (Jedi's Python keywords make no sense after %wgt).
        return {
            "completions": [SimpleCompletion(text=c, type="wgt") for c in found],
            "suppress": bool(found),
            "ordered": True,
        }

    return wgt_completions


# IPython's own names in every notebook: In, Out, the output history (_, __, ___, _5), the input
# history (_i, _ii, _iii, _i5), the history lists and its helpers.
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "_ih", "_oh", "_dh"})
_IPYTHON_HISTORY = re.compile(r"_{1,3}|_i{1,3}|_i?\d+")


def _check_variable(name: str) -> None:
    """A name a command may bind its result to: an identifier that is not Python's or IPython's."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"{name!r} is not a valid variable name: use a Python identifier")
    reserved = (
        "a name Python itself uses"
        if len(name) > 4 and name.startswith("__") and name.endswith("__")
        else "one of IPython's own names"
        if name in _IPYTHON_NAMES or _IPYTHON_HISTORY.fullmatch(name)
        else "a Python builtin"
        if name in vars(builtins)
        else None
    )
    if reserved:
        raise UsageError(f"{name!r} is {reserved}, not free for results: choose another name")


def _variables(shell: Any, command: str) -> list[str]:
    from wgtlab.frame.api import Query
    from wgtlab.jobs.job import DefinedJob, Job
    from wgtlab.jobs.result import JobResult

    runnable = (Job, DefinedJob, Query)
    return _variables_of(shell.user_ns, runnable if command == "run" else JobResult)


def _variables_of(namespace: dict[str, Any], kinds: type | tuple[type, ...]) -> list[str]:
    """The user's variables in ``namespace`` holding ``kinds`` (not IPython's, not modules)."""
    return sorted(
        name
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _IPYTHON_NAMES
        and not isinstance(value, types.ModuleType)
        and isinstance(value, kinds)
    )


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext wgtlab``: the magics, inline figures, tab completion."""
    from wgtlab.notebook import display

    ipython.register_magics(WgtMagics)
    display.register(ipython)
    completer = ipython.Completer
    completer.custom_matchers[:] = [
        m for m in completer.custom_matchers if getattr(m, "__name__", "") != "wgt_completions"
    ]
    completer.custom_matchers.append(_matcher(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.get("WgtMagics")
    if magics is not None and magics._started is not None:
        magics._started.close()
        if runtime.session_cluster() is magics._started:
            runtime.set_session_cluster(None)
    ipython.magics_manager.magics["line"].pop("wgt", None)
    ipython.magics_manager.magics["cell"].pop("wgt", None)
    completer = ipython.Completer
    completer.custom_matchers[:] = [
        m for m in completer.custom_matchers if getattr(m, "__name__", "") != "wgt_completions"
    ]
