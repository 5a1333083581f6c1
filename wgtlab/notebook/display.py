"""Notebook views of lower-layer objects, attached from above through IPython's formatters.

Sandbox results and errors, modules, trust ledgers and shard-set reports live in layers 1-2,
which know nothing of notebooks: ``register(ipython)`` teaches IPython to draw them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wgtlab import defaults
from wgtlab.jobs.templates import STYLES, badge, escape, render, worker_rows

_TEMPLATES = "wgtlab.notebook.templates"

# CES shard states, in the colours the shard map uses too (Okabe & Ito, colour-blind safe).
SHARD_COLOURS = {
    "ok": "#009E73",
    "damaged": "#E69F00",
    "missing": "#BBBBBB",
    "foreign": "#CC79A7",
    "duplicate": "#56B4E9",
}


def _view(template: str, **fields: Any) -> str:
    return render(template, _TEMPLATES, **fields)


def _fragment(template: str, **fields: Any) -> str:
    return render(template, _TEMPLATES, **fields)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


# --- layer 1: sandbox -------------------------------------------------------------------------


def task_result_html(result: Any) -> str:
    streams = "".join(
        _fragment(
            "stream_row.html", stream=name, text=escape(data.decode("utf-8", "replace"), 2000)
        )
        for name, data in (("stdout", result.stdout), ("stderr", result.stderr))
        if data
    )
    return _view(
        "task_result.html",
        output_size=f"{len(result.output):,}",
        sha256=escape(result.output_sha256),
        fuel=f"{result.fuel_used:,}",
        wall_ms=f"{result.wall_ms:.3f}",
        memory=_size(result.memory_bytes),
        module=escape(result.module_digest),
        module_short=escape(result.module_digest, 17),
        streams=streams,
        preview=escape(repr(result.output), 200),
    )


_GUEST_TRACEBACK = "\n--- traceback inside the sandbox ---"


def sandbox_error_html(error: BaseException) -> str:
    message, _, guest = str(error).partition(_GUEST_TRACEBACK)
    traceback = "".join(getattr(error, "traceback", ())) or guest.strip("\n")
    details = _fragment("guest_traceback.html", traceback=escape(traceback)) if traceback else ""
    family = type(error).__mro__[1].__name__ if len(type(error).__mro__) > 1 else ""
    return _view(
        "sandbox_error.html",
        kind=badge(type(error).__name__, "bad"),
        family=escape(family),
        message=escape(message),
        details=details,
    )


def wasm_module_html(module: Any) -> str:
    imports = ", ".join(str(i) for i in module.imports) or "none"
    exports = ", ".join(str(e) for e in module.exports)
    return _view(
        "wasm_module.html",
        name=escape(module.name),
        size=f"{len(module.wasm):,}",
        digest=escape(module.digest),
        memory=_size(module.initial_memory_bytes),
        imports=escape(imports),
        exports=escape(exports),
    )


# --- layer 1: CES -----------------------------------------------------------------------------


def shard_label(status: Any, data_shards: int | None) -> str:
    """ "d3" / "p1" for a shard whose header says which it is, else "#position"."""
    if status.index is None or data_shards is None:
        return f"#{status.position}"
    if status.index < data_shards:
        return f"d{status.index}"
    return f"p{status.index - data_shards}"


def shard_report_html(report: Any) -> str:
    header = report.header
    data_shards = header.data_shards if header is not None else None
    cells = "".join(
        _fragment(
            "shard_cell.html",
            colour=SHARD_COLOURS.get(s.state, "#444"),
            text_colour="#333" if s.state == "missing" else "#fff",
            title=escape(f"{s.name}: {s.state}{' (' + s.reason + ')' if s.reason else ''}"),
            label=escape(shard_label(s, data_shards)),
        )
        for s in report.shards
    )
    counts = report.counts()
    legend = " · ".join(f"{counts[state]} {state}" for state in SHARD_COLOURS if state in counts)
    rows = []
    if header is not None:
        rows = [
            ("dataset id", f"<code>{escape(header.dataset_id.hex())}</code>"),
            ("key id", f"<code>{escape(header.key_id.hex())}</code>"),
            ("layout", f"{header.data_shards} data + {header.parity_shards} parity shards"),
            ("original size", f"{header.original_size:,} bytes"),
            ("segments", f"{header.segment_count} × {_size(header.segment_size)}"),
            (
                "header MACs",
                "checked with the key" if report.key_checked else "not checked (no key)",
            ),
        ]
    header_rows = "".join(_fragment("field_row.html", field=n, value=v) for n, v in rows)
    problem = getattr(report, "problem", "")
    return _view(
        "shard_report.html",
        verdict=badge("recoverable", "ok")
        if report.recoverable
        else badge("NOT recoverable", "bad"),
        usable=report.usable,
        needed=report.needed,
        cells=cells,
        legend=escape(legend) + " · d: data shard, p: parity shard, #: position of a lost one",
        header_rows=header_rows,
        problem=f"<div>{escape(problem)}</div>" if problem else "",
    )


# --- layer 2: trust ---------------------------------------------------------------------------


def ledger_html(ledger: Any) -> str:
    frame = ledger.scores()
    rows = worker_rows([(row.label or "", row, "") for row in frame.itertuples(index=False)])
    table = render("worker_table.html", rows=rows, note_title="")
    where = "in memory" if ledger.path == ":memory:" else ledger.path
    return _view(
        "ledger.html",
        where=escape(where),
        count=len(frame),
        threshold=defaults.QUARANTINE_THRESHOLD,
        table=table,
    )


# --- layer 3: proofs --------------------------------------------------------------------------


def proof_html(result: Any, index: int, ok: bool) -> str:
    proof = result.proof(index)
    record = result.record(index)
    code = STYLES["code"]
    path = " ".join(
        f"<code style='{code}' title='{p.hex()}'>{p.hex()[:12]}…</code>" for p in proof.path
    )
    return _view(
        "proof.html",
        index=index,
        verdict=badge("verified", "ok") if ok else badge("does NOT verify", "bad"),
        input_digest=escape(_hex(getattr(record, "input_digest", b"")), 17),
        output_digest=escape(_hex(getattr(record, "output_digest", b"")), 17),
        path=path or "(empty: a one-chunk tree)",
        root=escape(proof.root.hex()),
        tree_size=proof.tree_size,
    )


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value)


# --- registration -----------------------------------------------------------------------------

#: (module, class name) -> HTML view; deferred, so registering imports none of these modules
VIEWS: dict[tuple[str, str], Callable[[Any], str]] = {
    ("wgtlab.sandbox.runner", "TaskResult"): task_result_html,
    ("wgtlab.errors", "SandboxError"): sandbox_error_html,
    ("wgtlab.sandbox.module", "WasmModule"): wasm_module_html,
    ("wgtlab.ces.shardset", "ShardSetReport"): shard_report_html,
    ("wgtlab.trust.ledger", "TrustLedger"): ledger_html,
}


_FIGURE = ("matplotlib.figure", "Figure")


def register(ipython: Any) -> None:
    """Draw the objects in ``VIEWS`` with their HTML views in this IPython session, and
    matplotlib figures inline as PNG unless the session already draws them somehow."""
    formatter = ipython.display_formatter.formatters["text/html"]
    for (module, name), view in VIEWS.items():
        formatter.for_type_by_name(module, name, view)
    png = ipython.display_formatter.formatters["image/png"]
    drawn = _FIGURE in png.deferred_printers or any(
        (cls.__module__, cls.__name__) == _FIGURE for cls in png.type_printers
    )
    if not drawn:  # wgtlab's figures are built without pyplot, which never set this up
        from functools import partial

        from IPython.core.pylabtools import print_figure

        png.for_type_by_name(*_FIGURE, partial(print_figure, fmt="png", base64=True))


def unregister(ipython: Any) -> None:
    formatter = ipython.display_formatter.formatters["text/html"]
    for module, name in VIEWS:
        formatter.pop(f"{module}.{name}", None)
