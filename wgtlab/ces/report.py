"""Reports: what a shard set holds and whether it can be rebuilt, without rebuilding it.

Works without the key (checksums find bit rot); with the key, header MACs are checked too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from wgtlab.ces import store
from wgtlab.ces.keys import KeySchedule
from wgtlab.ces.shardset import (
    ShardSet,
    ShardSetReport,
    ShardSource,
    judge_shards,
    memory_sources,
)


def inspect_shards(
    shards: Sequence[bytes | None] | store.URL, keys: KeySchedule | None
) -> ShardSetReport:
    """Per-shard status of a shard set given as a list of shards or a URL / directory, with
    header MACs and key ids checked under ``keys`` when given (``wgt.ces.inspect`` is the
    public form, taking a key or a pipeline)."""
    if isinstance(shards, str | os.PathLike):
        sources, names, reasons = store.open_sources(shards)
        try:
            return _report(sources, keys, names, reasons)
        finally:
            store.close_sources(sources)
    return _report(memory_sources(shards, None), keys, None, None)


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
