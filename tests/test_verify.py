"""Merkle trees, proofs, digests and chunk records against an independent RFC 6962 reference."""

from __future__ import annotations

import hashlib
import random
import struct
from functools import cache
from pathlib import Path

import pytest

from wgtlab import verify
from wgtlab.errors import ConfigError, ProofError, VerificationError
from wgtlab.verify import MerkleProof, MerkleTree

# --- an independent, straightforward RFC 6962 (section 2.1) ----------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


_rng = random.Random(6962)
BASE = [_rng.randbytes(_rng.randrange(0, 80)) for _ in range(300)]


@cache
def ref_mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) over BASE: the recursive definition, memoised on the range."""
    n = hi - lo
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + BASE[lo])
    k = _split(n)
    return _h(b"\x01" + ref_mth(lo, lo + k) + ref_mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]) exactly as RFC 6962 writes it."""
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_path(m, lo, lo + k), ref_mth(lo + k, hi)]
    return [*ref_path(m - k, lo + k, hi), ref_mth(lo, lo + k)]


def ref_shape(m: int, n: int) -> list[str]:
    """Which side each sibling of leaf m sits on in a tree of n leaves, leaf to root."""
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_shape(m, k), "right"]
    return [*ref_shape(m - k, n - k), "left"]


# --- roots and proofs equal the reference ----------------------------------------------------


def test_every_size_0_to_300_matches_reference_and_every_proof_verifies():
    for n in range(301):
        leaves = BASE[:n]
        tree = MerkleTree(leaves)
        assert tree.root == ref_mth(0, n) == verify.merkle_root(leaves), n
        assert tree.size == len(tree) == n
        for i in range(n):
            path = tree.audit_path(i)
            assert path == ref_path(i, 0, n), (n, i)
            assert verify.verify_proof(leaves[i], i, n, path, tree.root), (n, i)


def test_random_larger_sizes_match_an_iterative_reference():
    rng = random.Random(2024)
    for n in [rng.randrange(301, 5000) for _ in range(4)] + [1024, 1025, 4097]:
        leaves = [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]

        @cache
        def mth(lo: int, hi: int, leaves=leaves) -> bytes:
            if hi - lo == 1:
                return _h(b"\x00" + leaves[lo])
            k = _split(hi - lo)
            return _h(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))

        tree = MerkleTree(leaves)
        assert tree.root == mth(0, n)
        for i in [*rng.sample(range(n), 40), 0, n - 1]:
            lo, hi, expected = 0, n, []
            while hi - lo > 1:  # PATH unrolled top-down, independent of the recursion above
                k = _split(hi - lo)
                if i < lo + k:
                    expected.append(mth(lo + k, hi))
                    hi = lo + k
                else:
                    expected.append(mth(lo, lo + k))
                    lo = lo + k
            assert tree.audit_path(i) == expected[::-1]
            assert tree.proof(i).verify(leaves[i])


def test_empty_and_single_leaf_trees():
    assert verify.merkle_root([]) == hashlib.sha256(b"").digest() == verify.EMPTY_ROOT
    assert verify.merkle_root([b"x"]) == _h(b"\x00x")
    assert verify.merkle_proof([b"x"], 0) == []
    assert verify.verify_proof(b"x", 0, 1, [], _h(b"\x00x"))
    with pytest.raises(ProofError, match="out of range for a tree of 0 leaves"):
        MerkleTree([]).proof(0)


# --- tampering fails -------------------------------------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 31, 64, 100])
def test_any_changed_byte_index_size_or_sibling_fails(n):
    leaves = [bytes([i % 251]) * (1 + i % 5) for i in range(n)]
    tree = MerkleTree(leaves)
    root = tree.root
    for i in range(n):
        leaf, path = leaves[i], tree.audit_path(i)
        assert verify.verify_proof(leaf, i, n, path, root)
        for at in range(len(leaf)):
            assert not verify.verify_proof(_flip(leaf, at), i, n, path, root)
        assert not verify.verify_proof(leaf + b"\x00", i, n, path, root)
        for at in (0, 17, 31):
            assert not verify.verify_proof(leaf, i, n, path, _flip(root, at))
        for j in range(n):
            if j != i:
                assert not verify.verify_proof(leaf, j, n, path, root)
        with pytest.raises(ProofError):
            verify.verify_proof(leaf, n + i, n, path, root)
        with pytest.raises(ProofError):
            verify.verify_proof(leaf, -1, n, path, root)
        # A path does not bind the size by itself: a wrong size fails exactly where it changes
        # the path's shape (so roots are published together with their tree size).
        for m in range(i + 1, 2 * n + 3):
            if m != n:
                same_shape = ref_shape(i, m) == ref_shape(i, n)
                assert verify.verify_proof(leaf, i, m, path, root) == same_shape, (n, i, m)
        for k in range(len(path)):
            for at in (0, 31):
                bad = [*path[:k], _flip(path[k], at), *path[k + 1 :]]
                assert not verify.verify_proof(leaf, i, n, bad, root)
            assert not verify.verify_proof(leaf, i, n, path[:k] + path[k + 1 :], root)
            swapped = list(path)
            if k + 1 < len(path):
                swapped[k], swapped[k + 1] = swapped[k + 1], swapped[k]
                assert not verify.verify_proof(leaf, i, n, swapped, root)
        assert not verify.verify_proof(leaf, i, n, [*path, root], root)


def test_wrong_size_changing_the_shape_fails_example():
    leaves = [b"a", b"b", b"c"]
    tree = MerkleTree(leaves)
    # leaf 2 of 3 was carried up; claiming 4 leaves would need a right sibling it does not have
    assert verify.verify_proof(b"c", 2, 3, tree.audit_path(2), tree.root)
    assert not verify.verify_proof(b"c", 2, 4, tree.audit_path(2), tree.root)
    assert ref_shape(0, 3) == ref_shape(0, 4)  # ...while leaf 0's path looks the same in both


def _naive_root(leaves: list[bytes]) -> bytes:
    """The seed system's kind of tree: no leaf/node separation."""
    level = [_h(x) for x in leaves]
    while len(level) > 1:
        level = [_h(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def test_second_preimage_inner_node_as_leaf_fails():
    leaves = [b"alpha", b"beta", b"gamma", b"delta"]
    tree = MerkleTree(leaves)
    h0, h1, h2, h3 = (tree.leaf_hash(i) for i in range(4))
    n23 = verify.node_hash(h2, h3)
    # Without domain separation two inner nodes pass for the leaves of a smaller tree with the
    # same root: the attack this test would catch.
    forged = [_h(b"alpha") + _h(b"beta"), _h(b"gamma") + _h(b"delta")]
    assert _naive_root(forged) == _naive_root(leaves)
    assert MerkleTree([h0 + h1, h2 + h3]).root != tree.root
    # With RFC 6962 prefixes it fails, whichever way the inner node is dressed up as a leaf.
    for forged_leaf in (h0 + h1, b"\x01" + h0 + h1, verify.node_hash(h0, h1)):
        assert not verify.verify_proof(forged_leaf, 0, 2, [n23], tree.root)
    assert verify.root_from_path(verify.node_hash(h0, h1), 0, 2, [n23]) == tree.root  # the node
    assert verify.leaf_hash(h0 + h1) != verify.node_hash(h0, h1)


def test_malformed_arguments_raise_proof_error():
    tree = MerkleTree([b"a", b"b", b"c"])
    path = tree.audit_path(0)
    with pytest.raises(ProofError, match="must be 32 bytes"):
        verify.verify_proof(b"a", 0, 3, [path[0][:31], path[1]], tree.root)
    with pytest.raises(ProofError, match="not hex"):
        verify.verify_proof(b"a", 0, 3, ["zz" * 32, path[1]], tree.root)
    with pytest.raises(ProofError, match="Merkle root must be 32 bytes"):
        verify.verify_proof(b"a", 0, 3, path, tree.root + b"\x00")
    with pytest.raises(ProofError, match="sequence of sibling hashes"):
        verify.verify_proof(b"a", 0, 3, b"".join(path), tree.root)
    with pytest.raises(ProofError, match="leaf index must be an int"):
        verify.verify_proof(b"a", True, 3, path, tree.root)
    with pytest.raises(ProofError, match="leaf 1 must be bytes-like, got str"):
        MerkleTree([b"a", "b"])
    with pytest.raises(ProofError, match="out of range"):
        tree.audit_path(3)


def test_hex_forms_round_trip_for_notebooks_and_json():
    leaves = [bytes([i]) * 3 for i in range(11)]
    tree = MerkleTree(leaves)
    assert tree.to_dict() == {"tree_size": 11, "root": tree.root.hex()}
    for proof in tree.proofs():
        back = MerkleProof.from_json(proof.to_json())
        assert back == proof
        d = proof.to_dict()
        assert verify.verify_proof(leaves[proof.index], d["index"], 11, d["path"], d["root"])
    bad = tree.proof(4).to_dict() | {"path": ["00" * 31]}
    with pytest.raises(ProofError, match="proof sibling 0 must be 32 bytes"):
        MerkleProof.from_dict(bad)
    with pytest.raises(ProofError, match="needs the keys"):
        MerkleProof.from_dict({"index": 0})
    with pytest.raises(ProofError, match="not valid JSON"):
        MerkleProof.from_json("{")


def test_tree_from_leaf_hashes_equals_tree_from_leaves():
    leaves = [bytes([i]) for i in range(37)]
    hashes = [verify.leaf_hash(x) for x in leaves]
    assert MerkleTree.from_leaf_hashes(hashes).root == MerkleTree(leaves).root
    assert MerkleTree.from_leaf_hashes([h.hex() for h in hashes]).root == MerkleTree(leaves).root


def test_memoryview_leaves_hash_like_bytes():
    blob = bytes(range(256)) * 64
    views = [memoryview(blob)[i : i + 1000] for i in range(0, len(blob), 1000)]
    assert MerkleTree(views).root == MerkleTree([bytes(v) for v in views]).root


# --- digests and canonical chunk records -----------------------------------------------------


def test_sha256_known_vector_and_str_refused():
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify.sha256(b"abc").hex() == verify.sha256_hex(bytearray(b"abc")) == abc
    with pytest.raises(ConfigError, match="encode the text first"):
        verify.sha256("abc")


def test_chunk_record_encoding_is_the_documented_73_bytes():
    i_d, o_d = verify.sha256(b"in"), verify.sha256(b"out")
    record = verify.chunk_record(258, i_d, o_d)
    assert record == b"\x01" + (258).to_bytes(8, "big") + i_d + o_d
    assert len(record) == verify.RECORD_SIZE == 73
    assert record == struct.pack(">BQ32s32s", 1, 258, i_d, o_d)
    assert verify.chunk_record(258, i_d.hex(), o_d.hex()) == record
    parsed = verify.parse_chunk_record(record)
    assert (parsed.index, parsed.input_digest, parsed.output_digest) == (258, i_d, o_d)
    assert verify.chunk_record(2**64 - 1, i_d, o_d)[1:9] == b"\xff" * 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, b"\x00" * 32, b"\x00" * 32), "0..2\\*\\*64-1"),
        ((2**64, b"\x00" * 32, b"\x00" * 32), "0..2\\*\\*64-1"),
        ((True, b"\x00" * 32, b"\x00" * 32), "must be an int"),
        ((0, b"\x00" * 31, b"\x00" * 32), "input digest must be 32 bytes"),
        ((0, b"\x00" * 32, "ab"), "output digest must be 32 bytes"),
        ((0, b"\x00" * 32, "xy" * 32), "output digest is not hex"),
        ((0, 5, b"\x00" * 32), "input digest must be bytes or a hex string"),
    ],
)
def test_chunk_record_refuses_bad_fields(args, message):
    with pytest.raises(ConfigError, match=message):
        verify.chunk_record(*args)


def test_parse_chunk_record_refuses_wrong_length_and_version():
    record = verify.chunk_record(1, b"\x00" * 32, b"\x11" * 32)
    with pytest.raises(VerificationError, match="73 bytes, got 72"):
        verify.parse_chunk_record(record[:-1])
    with pytest.raises(VerificationError, match="version 2 is not supported"):
        verify.parse_chunk_record(b"\x02" + record[1:])


def test_importing_verify_pulls_in_no_numpy_or_pandas():
    import subprocess
    import sys

    code = (
        "import sys, wgtlab.verify; "
        "print(any(m.split('.')[0] in ('numpy', 'pandas') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
