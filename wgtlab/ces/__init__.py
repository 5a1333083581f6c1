"""CES: compress (zstd), encrypt (XChaCha20-Poly1305) and shard (Reed-Solomon) datasets.

``CESPipeline`` is the recipe; ``aead``, ``erasure`` and ``keys`` are the primitives below it.
Shard sets are saved to and loaded from any fsspec URL; ``inspect`` says what a set holds.
``audit`` is the key audit log (``$WGTLAB_AUDIT_LOG``): ``audit.verify``, ``audit.read_entries``.
"""

from __future__ import annotations

from wgtlab.ces import audit as audit  # the key audit log, as wgt.ces.audit
from wgtlab.ces.aead import XChaCha20Poly1305
from wgtlab.ces.erasure import ErasureCodec
from wgtlab.ces.format import ShardHeader
from wgtlab.ces.frames import dataframe_from_shards, shard_dataframe
from wgtlab.ces.keys import derive_tenant_key, generate_key
from wgtlab.ces.pipeline import CESPipeline, inspect
from wgtlab.ces.rotation import rotate, rotate_store
from wgtlab.ces.shardset import ShardSetReport, ShardStatus
from wgtlab.ces.store import ShardManifest, load, save
from wgtlab.errors import (
    AuditLogError,
    CESError,
    EphemeralKeyWarning,
    IntegrityError,
    KeyConfigError,
    KeyMismatchError,
    NotEnoughShardsError,
    ShardFormatError,
)

__all__ = [
    "AuditLogError",
    "CESError",
    "CESPipeline",
    "EphemeralKeyWarning",
    "ErasureCodec",
    "IntegrityError",
    "KeyConfigError",
    "KeyMismatchError",
    "NotEnoughShardsError",
    "ShardFormatError",
    "ShardHeader",
    "ShardManifest",
    "ShardSetReport",
    "ShardStatus",
    "XChaCha20Poly1305",
    "dataframe_from_shards",
    "derive_tenant_key",
    "generate_key",
    "inspect",
    "load",
    "rotate",
    "rotate_store",
    "save",
    "shard_dataframe",
]
