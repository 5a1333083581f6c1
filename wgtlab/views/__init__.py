"""HTML views: the templates every layer's ``_repr_html_`` fills, and the one function that
fills them.

A foundation module (like ``errors`` and ``defaults``): it imports no other layer, so sandbox
results, modules, errors, shard-set reports and trust ledgers draw themselves in Jupyter with or
without ``%load_ext wgtlab``. Templates are ``string.Template`` files with no logic: ``$fields``
that the caller has already computed and escaped. The views of layers 1 and 2 and the shared
pieces (badges, trust bars, worker tables) live here; jobs, clusters and the notebook keep their
own templates in a ``templates`` package beside them. ``views.plots`` draws the matplotlib
figures of trust and verification that the notebook and the CLI both show.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from wgtlab import defaults

__all__ = [
    "SHARD_COLOURS",
    "STYLES",
    "badge",
    "escape",
    "ledger_html",
    "render",
    "sandbox_error_html",
    "shard_label",
    "shard_report_html",
    "task_result_html",
    "trust_bar",
    "wasm_module_html",
    "worker_rows",
]

# Inline styles rather than a <style> block: JupyterLab strips <style> elements from the outputs
# of notebooks it does not trust (any notebook opened from disk) but keeps style attributes.
# Colours read on light and dark themes alike. Templates use them as $s_NAME.
STYLES = {
    "card": "font-size:13px;line-height:1.45;border:1px solid #8884;border-radius:6px;"
    "padding:8px 12px;margin:2px 0;width:fit-content;max-width:100%;overflow-x:auto;"
    "box-sizing:border-box",
    "title": "margin:0 0 4px 0;font-size:14px;font-weight:600",
    "dim": "color:#888",
    "table": "border-collapse:collapse;margin-top:4px",
    "th": "padding:1px 8px;text-align:left;border:none;font-size:12px;white-space:nowrap;"
    "color:#888;font-weight:500;background:none",
    "td": "padding:1px 8px;text-align:left;border:none;font-size:12px;white-space:nowrap;"
    "vertical-align:middle;background:none",
    "code": "font-size:12px",
    "pre": "margin:2px 0;font-size:12px;white-space:pre-wrap",
    "badge": "display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;font-weight:600",
    "bar": "display:inline-flex;width:80px;height:8px;border-radius:4px;background:#8883;"
    "vertical-align:middle;overflow:hidden",
    "cell": "display:inline-block;width:20px;height:20px;margin:1px;border-radius:3px;"
    "text-align:center;font-size:10px;line-height:20px;font-weight:600",
}
TONES = {  # badge colours by meaning
    "ok": "background:#dff3e4;color:#1b6e34",
    "bad": "background:#fbe0e0;color:#9b1c1c",
    "warn": "background:#fff1cc;color:#7a5a00",
    "off": "background:#e8e8e8;color:#555",
    "info": "background:#e0ecfb;color:#1d4f91",
}
_STYLE_FIELDS = {f"s_{name}": value for name, value in STYLES.items()}


@cache
def _template(package: str, name: str) -> Template:
    return Template(
        resources.files(package).joinpath(name).read_text(encoding="utf-8").rstrip("\n")
    )


def render(name: str, package: str = __name__, /, **fields: Any) -> str:
    """Fill template ``name`` of ``package`` with ``fields`` (and the ``$s_*`` styles)."""
    values = {**_STYLE_FIELDS, **{k: str(v) for k, v in fields.items()}}
    return _template(package, name).substitute(values)


def badge(text: str, tone: str) -> str:
    """A small coloured label; ``tone`` is one of ``TONES`` (ok, bad, warn, off, info)."""
    return render("badge.html", text=escape(text), tone=TONES[tone])


def escape(value: Any, limit: int | None = None) -> str:
    """``str(value)`` made safe for HTML, cut to ``limit`` characters with an ellipsis."""
    text = str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text)


def trust_bar(score: float, threshold: float = defaults.QUARANTINE_THRESHOLD) -> str:
    """A small horizontal bar for a trust score in [0, 1], coloured by how it compares with the
    quarantine ``threshold`` (the policy's: ``TrustPolicy.quarantine_threshold``)."""
    colour = (
        "#c0392b"
        if score < threshold
        else "#d4a017"
        if score < defaults.TRUST_INITIAL_SCORE
        else "#2e8b57"
    )
    return render(
        "trust_bar.html",
        width=f"{100 * max(0.0, min(1.0, score)):.0f}",
        colour=colour,
        score=f"{score:.3f}",
    )


def worker_rows(
    workers: list[tuple[str, Any, str]], threshold: float = defaults.QUARANTINE_THRESHOLD
) -> str:
    """Table rows for ``(name, WorkerState, note)`` triples: trust, tasks, verdicts, status,
    judged against the quarantine ``threshold`` of the policy in use."""
    rows = []
    for name, state, note in workers:
        # As TrustPolicy judges: the stored flag, or a score under this policy's threshold (the
        # ledger may have been written under a laxer one).
        quarantined = state.quarantined or state.score < threshold
        status = (
            badge("new", "off")
            if not state.tasks
            else badge("quarantined", "bad")
            if quarantined
            else badge("active", "ok")
        )
        rows.append(
            render(
                "worker_row.html",
                name=escape(name),
                worker_id=escape(state.worker),
                worker_short=escape(state.worker, 24),
                bar=trust_bar(state.score, threshold),
                tasks=state.tasks,
                agreed=state.agreed,
                disagreed=state.disagreed,
                status=status,
                note=escape(note),
            )
        )
    return "".join(rows)


# CES shard states, in the colours the shard map uses too (Okabe & Ito, colour-blind safe).
SHARD_COLOURS = {
    "ok": "#009E73",
    "damaged": "#E69F00",
    "missing": "#BBBBBB",
    "foreign": "#CC79A7",
    "duplicate": "#56B4E9",
}


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


# --- layer 1: sandbox -------------------------------------------------------------------------


def task_result_html(result: Any) -> str:
    streams = "".join(
        render("stream_row.html", stream=name, text=escape(data.decode("utf-8", "replace"), 2000))
        for name, data in (("stdout", result.stdout), ("stderr", result.stderr))
        if data
    )
    return render(
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
    details = render("guest_traceback.html", traceback=escape(traceback)) if traceback else ""
    family = type(error).__mro__[1].__name__ if len(type(error).__mro__) > 1 else ""
    return render(
        "sandbox_error.html",
        kind=badge(type(error).__name__, "bad"),
        family=escape(family),
        message=escape(message),
        details=details,
    )


def wasm_module_html(module: Any) -> str:
    imports = ", ".join(str(i) for i in module.imports) or "none"
    exports = ", ".join(str(e) for e in module.exports)
    return render(
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
        render(
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
    header_rows = "".join(render("field_row.html", field=n, value=v) for n, v in rows)
    problem = getattr(report, "problem", "")
    return render(
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


def ledger_html(ledger: Any, threshold: float) -> str:
    """A ledger on its own has no policy: its rows are judged by ``threshold``, its own rule's."""
    frame = ledger.scores()
    rows = worker_rows(
        [(row.label or "", row, "") for row in frame.itertuples(index=False)], threshold
    )
    table = render("worker_table.html", rows=rows, note_title="")
    where = "in memory" if ledger.path == ":memory:" else ledger.path
    return render(
        "ledger.html",
        where=escape(where),
        count=len(frame),
        threshold=threshold,
        table=table,
    )
