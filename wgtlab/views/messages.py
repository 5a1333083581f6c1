"""Wording that the ``wgtlab`` command and the ``%wgt`` magics share (neither imports the
other): the names most likely meant when one is not found, and a failed job in one line."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from wgtlab.errors import ChunkFailed

__all__ = ["chunk_failed_line", "closest", "did_you_mean", "listing"]

_SHOWN = 12  # names listed before "..."


def closest(
    name: str, known: Iterable[str], n: int = 3, same: Callable[[str], object] | None = None
) -> list[str]:
    """Up to ``n`` of ``known`` that ``name`` most likely misspells, best first; a name that
    differs only in case comes first. ``same`` maps a name to what it names: two names of one
    thing (a variable and its job's name) are suggested once, by the closer."""
    candidates = list(dict.fromkeys(known))
    same_case = [c for c in candidates if c.lower() == name.lower() and c != name]
    # 0.7 rather than difflib's 0.6: a long name that shares a few letters is no suggestion
    close = difflib.get_close_matches(name, candidates, n=max(1, len(candidates)), cutoff=0.7)
    found: dict[object, str] = {}
    for candidate in dict.fromkeys([*same_case, *close]):
        found.setdefault(candidate if same is None else same(candidate), candidate)
    return list(found.values())[:n]


def did_you_mean(
    name: str, known: Iterable[str], same: Callable[[str], object] | None = None
) -> str:
    """``"did you mean 'x'?"`` (or ``'x' or 'y'``), or ``""`` when nothing is close."""
    close = closest(name, known, same=same)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def listing(names: Iterable[str]) -> str:
    """``'a', 'b', 'c'``: the names in order, at most a dozen, then ``...``."""
    shown = list(names)
    text = ", ".join(repr(n) for n in shown[:_SHOWN])
    return text + (", ..." if len(shown) > _SHOWN else "")


def chunk_failed_line(exc: ChunkFailed) -> str:
    """Which chunk failed, why, and what became of the others, in one line: the error's message
    without its advice for Python callers (``on_error``, ``.result``), which each front end
    replaces with its own."""
    return str(exc).strip().splitlines()[0].split(" (on_error=")[0]
