"""HTML templates for notebook displays, and the one function that fills them.

Templates are ``string.Template`` files with no logic: ``$fields`` that the caller has already
computed and escaped. Each layer keeps its own templates in a ``templates`` package beside it.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from typing import Any

__all__ = ["STYLES", "badge", "escape", "render", "trust_bar", "worker_rows"]

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


def trust_bar(score: float) -> str:
    """A small horizontal bar for a trust score in [0, 1], coloured by how it compares with the
    quarantine threshold."""
    from wgtlab import defaults

    colour = (
        "#c0392b"
        if score < defaults.QUARANTINE_THRESHOLD
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


def worker_rows(workers: list[tuple[str, Any, str]]) -> str:
    """Table rows for ``(name, WorkerState, note)`` triples: trust, tasks, verdicts, status."""
    rows = []
    for name, state, note in workers:
        status = (
            badge("new", "off")
            if not state.tasks
            else badge("quarantined", "bad")
            if state.quarantined
            else badge("active", "ok")
        )
        rows.append(
            render(
                "worker_row.html",
                name=escape(name),
                worker_id=escape(state.worker),
                worker_short=escape(state.worker, 24),
                bar=trust_bar(state.score),
                tasks=state.tasks,
                agreed=state.agreed,
                disagreed=state.disagreed,
                status=status,
                note=escape(note),
            )
        )
    return "".join(rows)
