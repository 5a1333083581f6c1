"""What ``%load_ext wgtlab`` adds to IPython's display: Merkle proof cards and inline figures.

Every wgtlab object draws itself (``_repr_html_``, filled from ``wgtlab.views``), in Jupyter with
or without the extension; this module holds only what belongs to the notebook layer.
"""

from __future__ import annotations

from typing import Any

from wgtlab.views import STYLES, badge, escape, render

_TEMPLATES = "wgtlab.notebook.templates"


def proof_html(result: Any, index: int, ok: bool) -> str:
    """The card ``%wgt verify`` shows: one chunk's leaf, audit path and root."""
    proof = result.proof(index)
    record = result.record(index)
    code = STYLES["code"]
    path = " ".join(
        f"<code style='{code}' title='{p.hex()}'>{p.hex()[:12]}…</code>" for p in proof.path
    )
    return render(
        "proof.html",
        _TEMPLATES,
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


_FIGURE = ("matplotlib.figure", "Figure")


def register(ipython: Any) -> None:
    """Draw matplotlib figures inline as PNG unless the session already draws them somehow
    (wgtlab's figures are built without pyplot, which never sets this up)."""
    png = ipython.display_formatter.formatters["image/png"]
    drawn = _FIGURE in png.deferred_printers or any(
        (cls.__module__, cls.__name__) == _FIGURE for cls in png.type_printers
    )
    if not drawn:
        from functools import partial

        from IPython.core.pylabtools import print_figure

        png.for_type_by_name(*_FIGURE, partial(print_figure, fmt="png", base64=True))
