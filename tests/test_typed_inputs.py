"""Wrong inputs get a deliberate error of a stated type, saying what was given and what to do.

Each case was a raw Python error (``object of type 'int' has no len()``, ``'NoneType' object is
not iterable``) or a silent wrong answer (complex / datetime values summed) before.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sandbox_hostile as hostile

import wgtlab as wgt
from wgtlab import verify
from wgtlab.errors import ConfigError, InvalidModule, ProofError
from wgtlab.sandbox.module import WasmModule
from wgtlab.sandbox.runner import Sandbox
from wgtlab.verify import MerkleProof, MerkleTree

pytestmark = pytest.mark.usefixtures("private_cache")


@contextlib.contextmanager
def raises_exactly(error: type[BaseException], *fragments: str) -> Iterator[Any]:
    """pytest.raises for exactly ``error`` (not a subclass, not a raw TypeError from inside),
    whose message contains every fragment."""
    with pytest.raises(error) as caught:
        yield caught
    assert type(caught.value) is error, repr(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))


# --- 1. WasmModule.from_wat -------------------------------------------------------------------


@pytest.mark.parametrize("value", [123, None, 1.5, ["(module)"]])
def test_from_wat_refuses_non_text_naming_the_type(value):
    with raises_exactly(TypeError, type(value).__name__, "WAT", "as a str", "from_bytes"):
        WasmModule.from_wat(value)


def test_from_wat_is_consistent_with_from_bytes(echo):
    with raises_exactly(TypeError, "module's bytes, got str", "from_wat"):
        WasmModule.from_bytes("x")
    with raises_exactly(TypeError, "binary module", "use WasmModule.from_bytes"):
        WasmModule.from_wat(echo.wasm)
    with raises_exactly(InvalidModule, "not UTF-8"):
        WasmModule.from_wat(b"\xff\xfe(module)")
    assert WasmModule.from_wat(hostile.ECHO.encode()) == echo  # UTF-8 bytes of WAT still work


# --- 2. Sandbox.run input --------------------------------------------------------------------


def test_run_refuses_str_input_suggesting_encode(echo):
    with raises_exactly(TypeError, "bytes or a contiguous buffer", "got str", ".encode("):
        Sandbox().run(echo, "text")


@pytest.mark.parametrize("value", [None, 42, [1, 2, 3]])
def test_run_refuses_non_buffers_naming_the_type(echo, value):
    with raises_exactly(TypeError, "bytes or a contiguous buffer", type(value).__name__):
        Sandbox().run(echo, value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(10, dtype=np.uint8)[::2],
        lambda: np.arange(12, dtype=np.float64).reshape(3, 4).T,
        lambda: memoryview(b"abcdef")[::2],
    ],
)
def test_run_refuses_non_contiguous_buffers_saying_how_to_copy(echo, make):
    data = make()
    with raises_exactly(TypeError, "not C-contiguous", "ascontiguousarray", "bytes(x)"):
        Sandbox().run(echo, data)
    assert Sandbox().run(echo, np.ascontiguousarray(data)).output == bytes(data)


def test_run_still_takes_bytes_and_contiguous_buffers(echo):
    values = np.arange(5, dtype="<f8")
    for data in (b"ab", bytearray(b"ab"), memoryview(b"ab"), values, values[1:4]):
        assert Sandbox().run(echo, data).output == bytes(memoryview(data).cast("B"))


# --- 3. Merkle proofs and trees --------------------------------------------------------------


LEAVES = [b"a", b"b", b"c", b"d", b"e"]


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree(LEAVES)


def test_verify_proof_with_no_path_is_a_proof_error(tree):
    with raises_exactly(ProofError, "sequence of sibling hashes", "got NoneType"):
        verify.verify_proof(b"c", 2, 5, None, tree.root)
    with raises_exactly(ProofError, "sequence of sibling hashes", "got int"):
        verify.root_from_path(verify.leaf_hash(b"c"), 2, 5, 7)


def test_verify_proof_given_a_whole_proof_says_to_pass_its_path(tree):
    proof = tree.proof(2)
    with raises_exactly(ProofError, "got a whole MerkleProof", "proof.path", "proof.verify(leaf)"):
        verify.verify_proof(b"c", 2, 5, proof, tree.root)
    assert verify.verify_proof(b"c", 2, 5, proof.path, tree.root)
    assert proof.verify(b"c")


def test_verify_proof_path_of_any_iterable_of_hashes_still_works(tree):
    path = tree.audit_path(3)
    assert verify.verify_proof(b"d", 3, 5, iter(path), tree.root)
    assert verify.verify_proof(b"d", 3, 5, [p.hex() for p in path], tree.root_hex)
    with raises_exactly(ProofError, "not a single value", "got bytes"):
        verify.verify_proof(b"d", 3, 5, b"".join(path), tree.root)


@pytest.mark.parametrize(
    ("value", "shown"), [(None, "got NoneType"), (5, "got int"), (b"abc", "single bytes value")]
)
def test_merkle_tree_bad_leaves_are_a_config_error(value, shown):
    with raises_exactly(ConfigError, "MerkleTree needs an iterable of leaves", shown):
        MerkleTree(value)
    with raises_exactly(ConfigError, "from_leaf_hashes needs an iterable", shown):
        MerkleTree.from_leaf_hashes(value)
    with raises_exactly(ConfigError, "MerkleTree needs an iterable"):
        verify.merkle_root(value)


def test_merkle_proof_from_json_takes_text_bytes_or_a_parsed_dict(tree):
    proof = tree.proof(1)
    text = proof.to_json()
    assert MerkleProof.from_json(text) == proof
    assert MerkleProof.from_json(text.encode()) == proof
    assert MerkleProof.from_json(json.loads(text)) == proof
    assert MerkleProof.from_json(proof.to_dict()) == proof


@pytest.mark.parametrize(("value", "shown"), [(None, "NoneType"), (3, "int"), ([1], "list")])
def test_merkle_proof_from_json_refuses_other_types_naming_them(value, shown):
    with raises_exactly(ProofError, "JSON text (str or bytes) or an already-parsed dict", shown):
        MerkleProof.from_json(value)


def test_merkle_proof_from_json_of_a_non_object_names_what_it_parsed_to():
    with raises_exactly(ProofError, "dict with the keys index, tree_size, path and root", "list"):
        MerkleProof.from_json("[1, 2]")
    with raises_exactly(ProofError, "dict with the keys", "got str"):
        MerkleProof.from_dict("index")  # type: ignore[arg-type]


# --- 4. quorum votes -------------------------------------------------------------------------


X, Y = "aa" * 32, "bb" * 32


def test_quorum_of_bare_worker_names_shows_the_item():
    with raises_exactly(ConfigError, "(worker, digest) pairs", "vote 0 is str 'w1'", "not a pair"):
        verify.quorum(["w1", "w2"], replicas=2)
    with raises_exactly(ConfigError, "(worker, digest) pairs", "vote 1 is tuple ('w2', 'b', 'c')"):
        verify.quorum([("w1", X), ("w2", "b", "c")], replicas=2)


def test_quorum_of_a_dict_says_to_pass_its_items():
    with raises_exactly(ConfigError, "(worker, digest) pairs", "got a dict", "list(votes.items())"):
        verify.quorum({"w1": X}, replicas=1)
    decision = verify.quorum(list({"w1": X, "w2": X}.items()), replicas=2)
    assert decision.status == "canonical" and decision.agreed == ("w1", "w2")


@pytest.mark.parametrize(("value", "shown"), [(None, "NoneType"), ("w1", "str 'w1'")])
def test_quorum_of_no_iterable_names_it(value, shown):
    with raises_exactly(ConfigError, "(worker, digest) pairs", shown):
        verify.quorum(value, replicas=1)


def test_quorum_unhashable_parts_and_generators():
    with raises_exactly(ConfigError, "hashable worker id and digest", "vote 0 is (['w1'], "):
        verify.quorum([(["w1"], X)], replicas=1)
    # a generator of votes is read once: the dissenters are still reported
    decision = verify.quorum(((w, d) for w, d in [("a", X), ("b", Y), ("c", X)]), replicas=2)
    assert decision.status == "canonical" and decision.dissented == ("b",)


# --- 5. ResourceLimits as README writes them ------------------------------------------------


def test_limits_accept_integral_floats_stored_as_int():
    limits = wgt.ResourceLimits(max_cpu_cycles=1e9, max_memory_bytes=256.0 * (1 << 20))
    assert limits.max_cpu_cycles == 1_000_000_000 and type(limits.max_cpu_cycles) is int
    assert type(limits.max_memory_bytes) is int
    assert limits == wgt.ResourceLimits()
    assert type(limits.replace(max_execution_time_ms=5e3).max_execution_time_ms) is int
    assert wgt.ResourceLimits(max_log_bytes=np.int64(4096)).max_log_bytes == 4096


@pytest.mark.parametrize("value", [1.5, float("nan"), float("inf"), True, False, "1e9"])
def test_limits_still_refuse_non_whole_numbers_naming_the_field(value):
    with raises_exactly(
        ValueError, "ResourceLimits.max_cpu_cycles must be a whole number", type(value).__name__
    ):
        wgt.ResourceLimits(max_cpu_cycles=value)


# --- 6. numeric kernels refuse complex and datetime values ----------------------------------


KERNELS = [
    wgt.kernels.sum(),
    wgt.kernels.min_max(),
    wgt.kernels.histogram(bins=4, lo=0.0, hi=4.0),
    wgt.kernels.count_where(">", 1.0),
]
COMPLEX = [
    np.array([1 + 2j, 3 - 1j]),
    pd.Series([1 + 2j, 3 - 1j]),
    pd.DataFrame({"z": [1 + 2j]}),
    [np.complex64(1 + 1j)],
    [1 + 2j],
]
DATETIMES = [
    np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]"),
    pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"])),
    pd.Series(pd.to_datetime(["2024-01-01"]).tz_localize("UTC")),
    pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])}),
    [np.datetime64("2024-01-01")],
]
TIMEDELTAS = [
    np.array([1, 2], dtype="timedelta64[s]"),
    pd.Series(pd.to_timedelta(["1s", "2s"])),
]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("chunk", COMPLEX, ids=lambda c: type(c).__name__)
def test_float_kernels_refuse_complex_values(kernel, chunk):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning on the way to the error
        with raises_exactly(ConfigError, "complex", "imaginary part", ".real", "abs(x)"):
            kernel.encode(chunk)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("chunk", DATETIMES, ids=lambda c: type(c).__name__)
def test_float_kernels_refuse_datetimes(kernel, chunk):
    with raises_exactly(ConfigError, "datetime64", "raw integer ticks", ".astype('int64')"):
        kernel.encode(chunk)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("chunk", TIMEDELTAS, ids=lambda c: type(c).__name__)
def test_float_kernels_refuse_timedeltas(kernel, chunk):
    with raises_exactly(ConfigError, "timedelta64", "raw integer ticks", ".dt.total_seconds()"):
        kernel.encode(chunk)


def test_float_kernels_take_what_they_took_before():
    sandbox = Sandbox()
    total = wgt.kernels.sum()
    for chunk, expected in [
        (np.array([1.5, np.nan, 2.5]), 4.0),
        (np.arange(4, dtype=np.int32), 6.0),
        (pd.Series([1.0, None, 2.0], dtype="Float64"), 3.0),
        ([1, None, 2.5], 3.5),
        (["1.5", "2"], 3.5),
        (np.array([1 + 2j, 3 - 1j]).real, 4.0),
        (
            pd.Series(pd.to_timedelta(["1s", "2s"])).dt.total_seconds(),
            3.0,
        ),
        (np.arange(2.0).tobytes(), 1.0),
    ]:
        output = total.execute(sandbox, total.encode(chunk)).output
        assert total.combine([total.decode(output)]) == expected, chunk
