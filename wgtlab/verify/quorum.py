"""Quorum over replicas: which output of one chunk, if any, enough workers agree on.

The rule (unanimity or escalate): an outcome is decided once at least ``replicas`` workers
returned it and they are a strict majority of every reply. Replicas that all agree decide at
once; any dissent asks for more replicas until one outcome has both. So no wrong outcome is
accepted unless ``replicas`` workers return it: fewer colluders than ``replicas`` never win, and
with honest workers a majority of the pool, escalation reaches the honest outcome.

Stateless: call it again with every vote received so far; it says what to do next.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from wgtlab.defaults import MAX_EXTRA_REPLICAS
from wgtlab.errors import ConfigError

Status = Literal["canonical", "need_more", "failed"]


@dataclass(frozen=True)
class QuorumDecision:
    """The verdict for one chunk.

    ``status``: "canonical" (``digest`` is the result, ``agreed`` / ``dissented`` say who was
    right / wrong), "need_more" (``extra_needed`` more votes, counting replicas already in flight,
    could decide it), or "failed" (no outcome can decide within ``max_replicas``).
    ``groups`` lists every digest seen with its workers, largest group first: the disagreement.
    """

    status: Status
    digest: str | None
    agreed: tuple[str, ...]
    dissented: tuple[str, ...]
    extra_needed: int
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def decided(self) -> bool:
        return self.status != "need_more"


def _decides(count: int, replies: int, replicas: int) -> bool:
    """``count`` equal votes among ``replies`` decide: at least ``replicas``, strict majority."""
    return count >= replicas and 2 * count > replies


def _shown(item: object) -> str:
    text = repr(item)
    return text if len(text) <= 100 else text[:97] + "..."


def _pairs(votes: object) -> list[tuple[str, Hashable]]:
    """``votes`` as a list of (worker, digest) pairs; ConfigError showing anything else."""
    expected = "votes must be (worker, digest) pairs, e.g. [('w1', digest1), ('w2', digest2)]"
    if isinstance(votes, Mapping):
        raise ConfigError(
            f"{expected}; got a {type(votes).__name__} {_shown(votes)}. For a mapping of "
            "worker -> digest pass list(votes.items())"
        )
    if isinstance(votes, (str, bytes)) or not isinstance(votes, Iterable):
        raise ConfigError(f"{expected}; got {type(votes).__name__} {_shown(votes)}")
    pairs = []
    for n, item in enumerate(votes):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise ConfigError(
                f"{expected}; vote {n} is {type(item).__name__} {_shown(item)}, not a pair"
            )
        worker, digest = item
        try:
            hash(worker)
            hash(digest)
        except TypeError:
            raise ConfigError(
                f"{expected}, with a hashable worker id and digest (str or bytes); vote {n} is "
                f"{_shown(item)}"
            ) from None
        pairs.append((worker, digest))
    return pairs


def quorum(
    votes: Sequence[tuple[str, Hashable]],
    *,
    replicas: int,
    max_replicas: int | None = None,
) -> QuorumDecision:
    """Decide one chunk from ``votes``, the ``(worker, output digest)`` pairs received so far.

    A digest is canonical once at least ``replicas`` workers returned it and they are a strict
    majority of all votes: ``replicas`` equal votes decide at once, and after any dissent more
    replicas are needed until one digest has both. ``max_replicas`` caps the total number of
    replicas (default ``replicas + MAX_EXTRA_REPLICAS``; the manager passes the number of
    eligible workers); when even that many could not decide, the chunk has failed. Each worker
    may vote once. Anything but an iterable of 2-item pairs (a dict, bare worker names) is a
    ConfigError showing the offending item.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError(f"replicas must be an int >= 1, got {replicas!r}")
    if max_replicas is None:
        max_replicas = replicas + MAX_EXTRA_REPLICAS
    if isinstance(max_replicas, bool) or not isinstance(max_replicas, int):
        raise ConfigError(f"max_replicas must be an int, got {max_replicas!r}")
    if max_replicas < replicas:
        raise ConfigError(f"max_replicas ({max_replicas}) must be at least replicas ({replicas})")

    votes = _pairs(votes)
    by_digest: dict[Hashable, list[str]] = {}
    seen: set[str] = set()
    for worker, digest in votes:
        if worker in seen:
            raise ConfigError(
                f"worker {worker!r} voted twice on one chunk: replicas must run on distinct "
                "workers, pass each worker's vote once"
            )
        seen.add(worker)
        by_digest.setdefault(digest, []).append(worker)
    # Largest group first; among equals the digest seen first, so the order is reproducible.
    ranked = sorted(by_digest.items(), key=lambda item: -len(item[1]))
    groups = tuple((digest, tuple(workers)) for digest, workers in ranked)
    n = len(seen)
    top = len(ranked[0][1]) if ranked else 0

    if ranked and _decides(top, n, replicas):
        digest, winners = ranked[0]
        return QuorumDecision(
            "canonical",
            digest,  # type: ignore[arg-type]
            tuple(winners),
            tuple(w for w, d in votes if d != digest),
            0,
            groups,  # type: ignore[arg-type]
        )
    # The fewest further votes that could still make the leading digest decide.
    for extra in range(1, max_replicas - n + 1):
        if _decides(top + extra, n + extra, replicas):
            return QuorumDecision("need_more", None, (), (), extra, groups)  # type: ignore[arg-type]
    return QuorumDecision("failed", None, (), (), 0, groups)  # type: ignore[arg-type]
