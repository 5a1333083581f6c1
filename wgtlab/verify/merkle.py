"""RFC 6962 Merkle trees over chunk records: roots, audit paths and their verification.

leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), split at the largest power of
two below n: odd sizes need no padding, and a leaf can never pass for an inner node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wgtlab.errors import ConfigError, ProofError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962: the hash of an empty tree

_LEAF_HASHER = hashlib.sha256(LEAF_PREFIX)  # copied per leaf: no 0x00 || leaf concatenation
_sha256 = hashlib.sha256

BytesLike = bytes | bytearray | memoryview


def leaf_hash(leaf: BytesLike) -> bytes:
    """SHA-256(0x00 || leaf)."""
    h = _LEAF_HASHER.copy()
    try:
        h.update(leaf)
    except TypeError:
        raise ProofError(f"a Merkle leaf must be bytes-like, got {type(leaf).__name__}") from None
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _to_hash(value: object, what: str) -> bytes:
    """A 32-byte hash from bytes or 64 hex characters, else ProofError."""
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise ProofError(
                f"{what} is not hex: expected {2 * HASH_SIZE} hex characters"
            ) from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
    else:
        raise ProofError(f"{what} must be bytes or hex, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")
    return value


def _check_position(index: object, tree_size: object) -> None:
    for name, value in (("leaf index", index), ("tree size", tree_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProofError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= index < tree_size:  # type: ignore[operator]
        raise ProofError(
            f"leaf index {index} is out of range for a tree of {tree_size} leaves "
            f"(valid: 0..{tree_size - 1})"  # type: ignore[operator]
        )


def _iterable(values: object, who: str, what: str) -> Iterable[Any]:
    """``values`` if it is a collection of items, else ConfigError naming what was given."""
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        raise ConfigError(
            f"{who} needs an iterable of {what}, got a single {type(values).__name__} value; "
            "wrap a single item in a list"
        )
    if not isinstance(values, Iterable):
        raise ConfigError(
            f"{who} needs an iterable of {what} (a list, tuple or generator), got "
            f"{type(values).__name__}"
        )
    return values


def _check_path(proof: object) -> None:
    """Refuse, as ProofError, anything that cannot be an audit path (a sequence of hashes)."""
    if type(proof) is list or type(proof) is tuple:
        return
    if isinstance(proof, MerkleProof):
        raise ProofError(
            "the proof argument is the audit path (a sequence of sibling hashes), got a whole "
            "MerkleProof; pass proof.path, or call proof.verify(leaf) to check the leaf against "
            "the proof's own index, tree_size and root"
        )
    if isinstance(proof, (str, bytes, bytearray, memoryview)):
        raise ProofError(
            "a Merkle proof is a sequence of sibling hashes, not a single value (got "
            f"{type(proof).__name__}); pass a list of 32-byte hashes or hex strings"
        )
    if not isinstance(proof, Iterable):
        raise ProofError(
            "a Merkle proof is a sequence of sibling hashes (bytes or hex), got "
            f"{type(proof).__name__}; pass the path, e.g. MerkleTree.audit_path(i) or proof.path"
        )


def _build_levels(hashes: list[bytes]) -> list[list[bytes]]:
    # Pairing left to right and carrying an odd last node up unchanged builds exactly RFC 6962's
    # tree (split at the largest power of two below n), with every level kept for O(log n) proofs.
    levels = [hashes]
    level = hashes
    while len(level) > 1:
        paired = [
            _sha256(NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
        level = paired
    return levels


@dataclass(frozen=True)
class MerkleProof:
    """An audit path for leaf ``index`` of a tree of ``tree_size`` leaves with root ``root``.

    A path alone does not bind the tree size; publish (and sign) ``tree_size`` with the root.
    """

    index: int
    tree_size: int
    path: tuple[bytes, ...]
    root: bytes

    def verify(self, leaf: BytesLike) -> bool:
        """True if ``leaf`` is the data at ``index`` of the tree with this root."""
        return verify_proof(leaf, self.index, self.tree_size, self.path, self.root)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, hashes as hex."""
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "path": [p.hex() for p in self.path],
            "root": self.root.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MerkleProof:
        """The inverse of :meth:`to_dict`; malformed input is a ProofError."""
        if not isinstance(data, Mapping):
            raise ProofError(
                "a Merkle proof in dict form is a dict with the keys index, tree_size, path and "
                f"root, got {type(data).__name__}"
            )
        try:
            index, tree_size, path, root = (
                data["index"],
                data["tree_size"],
                data["path"],
                data["root"],
            )
        except (KeyError, TypeError):
            raise ProofError(
                "a Merkle proof needs the keys index, tree_size, path and root"
            ) from None
        _check_position(index, tree_size)
        if not isinstance(path, (list, tuple)):
            raise ProofError("a Merkle proof's path must be a list of hex hashes")
        hashes = tuple(_to_hash(p, f"proof sibling {k}") for k, p in enumerate(path))
        return cls(index, tree_size, hashes, _to_hash(root, "Merkle root"))

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> MerkleProof:
        """The inverse of :meth:`to_json`: JSON text (str or bytes), or the dict it parses to."""
        if isinstance(text, Mapping):
            return cls.from_dict(text)
        if not isinstance(text, (str, bytes, bytearray)):
            raise ProofError(
                "MerkleProof.from_json needs JSON text (str or bytes) or an already-parsed dict, "
                f"got {type(text).__name__}"
            )
        try:
            data = json.loads(text)
        except ValueError:
            raise ProofError("a Merkle proof in JSON form is not valid JSON") from None
        return cls.from_dict(data)


class MerkleTree:
    """An RFC 6962 tree built once; every level is kept so each proof costs O(log n)."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Iterable[BytesLike]) -> None:
        copy = _LEAF_HASHER.copy
        hashes = []
        for n, leaf in enumerate(_iterable(leaves, "MerkleTree", "leaves (bytes-like)")):
            h = copy()
            try:
                h.update(leaf)
            except TypeError:
                raise ProofError(
                    f"Merkle leaf {n} must be bytes-like, got {type(leaf).__name__}"
                ) from None
            hashes.append(h.digest())
        self._levels = _build_levels(hashes)

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes | str]) -> MerkleTree:
        """A tree over leaf hashes already computed as SHA-256(0x00 || leaf)."""
        tree = cls.__new__(cls)
        hashes = _iterable(hashes, "MerkleTree.from_leaf_hashes", "leaf hashes (bytes or hex)")
        tree._levels = _build_levels([_to_hash(h, f"leaf hash {n}") for n, h in enumerate(hashes)])
        return tree

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def __len__(self) -> int:
        return self.size

    @property
    def root(self) -> bytes:
        return self._levels[-1][0] if self._levels[0] else EMPTY_ROOT

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    def leaf_hash(self, index: int) -> bytes:
        _check_position(index, self.size)
        return self._levels[0][index]

    def audit_path(self, index: int) -> list[bytes]:
        """Sibling hashes from the leaf up to the root (RFC 6962 order)."""
        _check_position(index, self.size)
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):  # a carried-up last node has no sibling on this level
                path.append(level[sibling])
            index >>= 1
        return path

    def proof(self, index: int) -> MerkleProof:
        return MerkleProof(index, self.size, tuple(self.audit_path(index)), self.root)

    def proofs(self) -> list[MerkleProof]:
        """A proof for every leaf, in leaf order."""
        return [self.proof(i) for i in range(self.size)]

    def to_dict(self) -> dict[str, Any]:
        """The part to publish (and sign): the size and the root as hex."""
        return {"tree_size": self.size, "root": self.root_hex}

    def __repr__(self) -> str:
        return f"MerkleTree(size={self.size}, root={self.root_hex})"


def merkle_root(leaves: Iterable[BytesLike]) -> bytes:
    """The RFC 6962 root over ``leaves`` (raw leaf data); SHA-256(b"") for no leaves."""
    return MerkleTree(leaves).root


def merkle_proof(leaves: Sequence[BytesLike], index: int) -> list[bytes]:
    """The audit path for ``leaves[index]``, leaf to root."""
    return MerkleTree(leaves).audit_path(index)


def root_from_path(
    leaf_digest: bytes, index: int, tree_size: int, proof: Sequence[bytes | str]
) -> bytes | None:
    """The root an audit path leads to from a leaf hash, or None if the path has the wrong shape.

    RFC 9162 section 2.1.3.2: the size decides, level by level, which side each sibling is on and
    where a node was carried up without a sibling, so a wrong size fails where it changes the shape.
    """
    _check_position(index, tree_size)
    _check_path(proof)
    fn, sn = index, tree_size - 1
    r = leaf_digest
    for k, item in enumerate(proof):
        sibling = _to_hash(item, f"proof sibling {k}")
        if sn == 0:
            return None  # more siblings than the tree has levels
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + sibling + r).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + sibling).digest()
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_proof(
    leaf: BytesLike,
    index: int,
    tree_size: int,
    proof: Sequence[bytes | str],
    root: bytes | str,
) -> bool:
    """True if ``leaf`` (raw data) sits at ``index`` in the tree of ``tree_size`` with ``root``.

    False for any well-formed proof that does not prove it. Arguments that cannot describe a proof
    at all (index outside the tree, a sibling or root that is not a 32-byte hash) raise ProofError.
    ``proof`` is the audit path; a whole MerkleProof is refused (pass ``proof.path``, or call
    ``proof.verify(leaf)``), so the index, size and root checked are always the ones given here.
    """
    expected = _to_hash(root, "Merkle root")
    found = root_from_path(leaf_hash(leaf), index, tree_size, proof)
    return found is not None and found == expected
