"""``inspect``: what a shard set holds and whether it can be rebuilt, without rebuilding it.

Works without the key (checksums find bit rot); with the key, header MACs are checked too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from wgtlab.ces import store
from wgtlab.ces.keys import KeyLike, KeySchedule
from wgtlab.ces.shardset import ShardSet, ShardSetReport, ShardSource, judge_shards


def inspect(
    shards: Sequence[bytes | None] | store.URL, key: KeyLike | Any = None
) -> ShardSetReport:
    """Per-shard status of a shard set given as a list of shards or a URL / directory.

    ``key`` (a key, or a ``CESPipeline``) lets header MACs and key ids be checked; every
    fragment's checksum is verified either way. Never raises for damaged shards: the report
    says what is wrong, and ``.recoverable`` whether ``reconstruct`` would succeed.
    """
    keys = _schedule(key)
    if isinstance(shards, str | os.PathLike):
        sources, names, reasons = store.open_sources(shards)
        try:
            return _report(sources, keys, names, reasons)
        finally:
            store.close_sources(sources)
    from wgtlab.ces.pipeline import _memory_sources

    return _report(_memory_sources(shards, None), keys, None, None)


def _report(
    sources: Sequence[ShardSource | None],
    keys: KeySchedule | None,
    names: Sequence[str] | None,
    reasons: Sequence[str] | None,
) -> ShardSetReport:
    judgement = judge_shards(sources, keys, names=names, missing_reasons=reasons)
    problem = str(judgement.problem) if judgement.problem else ""
    if judgement.header is None:
        return ShardSetReport(
            shards=judgement.statuses,
            header=None,
            key_checked=keys is not None,
            usable=0,
            needed=0,
            recoverable=False,
            problem=problem,
        )
    return ShardSet(judgement).report(key_checked=keys is not None, problem=problem)


def _schedule(key: Any) -> KeySchedule | None:
    if key is None:
        return None  # no key: checksums only (unlike as_pipeline, never a random key)
    from wgtlab.ces.pipeline import as_pipeline

    return as_pipeline(key)._keys
