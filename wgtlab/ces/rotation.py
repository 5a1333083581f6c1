"""Key rotation: re-seal a shard set under a new key without plaintext ever reaching a disk.

Each segment is rebuilt and authenticated under the old key, then sealed again under the new
key with a fresh nonce; segments stay compressed, in memory, a few at a time. A rotation is one
``rotate`` entry in the audit log of each pipeline involved, written before any re-sealing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from wgtlab.ces import store
from wgtlab.ces.format import ShardHeader
from wgtlab.ces.keys import KeyLike
from wgtlab.ces.parallel import ordered_map
from wgtlab.ces.pipeline import CESPipeline, as_pipeline
from wgtlab.ces.shardset import ShardSet, memory_sources
from wgtlab.ces.writer import Sealed, write_shards
from wgtlab.errors import KeyConfigError

KeyOrPipeline = KeyLike | CESPipeline


def rotate(
    shards: Sequence[bytes | None],
    old_key: KeyOrPipeline,
    new_key: KeyOrPipeline,
    *,
    present: Sequence[bool] | None = None,
    data_shards: int | None = None,
    parity_shards: int | None = None,
) -> list[bytes]:
    """The shard set re-sealed under ``new_key``: a complete set, even if shards were missing.

    The dataset id, compression and segment layout stay; the shard counts too unless given.
    Raises what ``reconstruct`` raises when the old set cannot be read, and ``AuditLogError``
    when an audit log is on (a pipeline's ``audit_log``, else ``$WGTLAB_AUDIT_LOG``) but
    cannot record the rotation.
    """
    old = _pipeline(old_key)
    shard_set = ShardSet.open(memory_sources(shards, present), old._keys)
    new, header = _target(shard_set.header, new_key, data_shards, parity_shards)
    _audit_rotation(old, new, header)
    return write_shards(header, _resealed(old, new, shard_set, header), new._keys.mac_key)


def rotate_store(
    src: store.URL,
    dest: store.URL,
    old_key: KeyOrPipeline,
    new_key: KeyOrPipeline,
    *,
    overwrite: bool = False,
    data_shards: int | None = None,
    parity_shards: int | None = None,
    progress: store.Progress | None = None,
) -> store.ShardManifest:
    """Re-seal the shard set under ``src`` into ``dest`` under ``new_key``, streaming."""
    old = _pipeline(old_key)
    sources, names, reasons = store.open_sources(src)
    try:
        shard_set = ShardSet.open(sources, old._keys, names=names, missing_reasons=reasons)
        new, header = _target(shard_set.header, new_key, data_shards, parity_shards)
        _audit_rotation(old, new, header)  # before anything is written under dest
        resealed = _resealed(old, new, shard_set, header)
        return store.write_store(dest, header, resealed, new._keys.mac_key, overwrite, progress)
    finally:
        store.close_sources(sources)


def _pipeline(key: KeyOrPipeline) -> CESPipeline:
    if key is None:
        raise KeyConfigError("key rotation needs both keys explicitly (old_key and new_key)")
    return as_pipeline(key)


def _target(
    old: ShardHeader, new_key: KeyOrPipeline, data_shards: int | None, parity_shards: int | None
) -> tuple[CESPipeline, ShardHeader]:
    """The pipeline that seals under the new key with the old layout, and the new header."""
    if new_key is None:
        raise KeyConfigError("key rotation needs both keys explicitly (old_key and new_key)")
    new = CESPipeline(
        new_key._key if isinstance(new_key, CESPipeline) else new_key,
        old.compression_level,
        data_shards or old.data_shards,
        parity_shards or old.parity_shards,
        segment_size=old.segment_size,
        audit_log=new_key.audit_log if isinstance(new_key, CESPipeline) else None,
    )
    header = replace(new._new_header(old.original_size), dataset_id=old.dataset_id)
    return new, header


def _audit_rotation(old: CESPipeline, new: CESPipeline, header: ShardHeader) -> None:
    """One ``rotate`` entry (old key id, new key id, dataset) in each distinct audit log."""
    logs = {log.path: log for log in (old._audit, new._audit) if log is not None}
    for log in logs.values():
        log.record(
            "rotate",
            old._keys.key_id,
            new_key_id=new._keys.key_id,
            dataset_id=header.dataset_id,
            shards=header.total_shards,
        )


def _resealed(
    old: CESPipeline, new: CESPipeline, shard_set: ShardSet, header: ShardHeader
) -> Iterator[Sealed]:
    def reseal(j: int) -> Sealed:
        flags, payload = old._unseal(shard_set.header, j, shard_set.sealed_segment(j))
        return new._seal_payload(header, j, flags, payload)  # stored as it was: zstd or raw

    return ordered_map(reseal, range(shard_set.header.segment_count))
