"""Verification: SHA-256 digests, RFC 6962 Merkle trees and proofs, quorum over replicas.

Imports only the standard library (hashlib, json, struct), so ``wgt.verify`` loads instantly.
"""

from wgtlab.verify.digests import sha256, sha256_hex
from wgtlab.verify.merkle import (
    EMPTY_ROOT,
    MerkleProof,
    MerkleTree,
    leaf_hash,
    merkle_proof,
    merkle_root,
    node_hash,
    root_from_path,
    verify_proof,
)
from wgtlab.verify.quorum import QuorumDecision, quorum  # the function shadows the submodule
from wgtlab.verify.records import (
    RECORD_SIZE,
    RECORD_VERSION,
    ChunkRecord,
    chunk_record,
    parse_chunk_record,
)

__all__ = [
    "EMPTY_ROOT",
    "RECORD_SIZE",
    "RECORD_VERSION",
    "ChunkRecord",
    "MerkleProof",
    "MerkleTree",
    "QuorumDecision",
    "chunk_record",
    "leaf_hash",
    "merkle_proof",
    "merkle_root",
    "node_hash",
    "parse_chunk_record",
    "quorum",
    "root_from_path",
    "sha256",
    "sha256_hex",
    "verify_proof",
]
