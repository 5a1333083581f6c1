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

__all__ = ["escape", "render"]


@cache
def _template(package: str, name: str) -> Template:
    return Template(
        resources.files(package).joinpath(name).read_text(encoding="utf-8").rstrip("\n")
    )


def render(name: str, package: str = __name__, /, **fields: Any) -> str:
    """Fill template ``name`` of ``package``; ``$style`` (the shared CSS) is always available."""
    if "style" not in fields:
        fields["style"] = _template(__name__, "style.html").template
    return _template(package, name).substitute({k: str(v) for k, v in fields.items()})


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
        style="",
        width=f"{100 * max(0.0, min(1.0, score)):.0f}",
        colour=colour,
        score=f"{score:.3f}",
    )


def worker_rows(workers: list[tuple[str, Any, str]]) -> str:
    """Table rows for ``(name, WorkerState, note)`` triples: trust, tasks, verdicts, status."""
    rows = []
    for name, state, note in workers:
        status, badge = ("quarantined", "wgt-bad") if state.quarantined else ("active", "wgt-ok")
        if not state.tasks:
            status, badge = "new", "wgt-off"
        rows.append(
            render(
                "worker_row.html",
                style="",
                name=escape(name),
                worker_id=escape(state.worker),
                worker_short=escape(state.worker, 24),
                bar=trust_bar(state.score),
                tasks=state.tasks,
                agreed=state.agreed,
                disagreed=state.disagreed,
                status=status,
                badge=badge,
                note=escape(note),
            )
        )
    return "".join(rows)
