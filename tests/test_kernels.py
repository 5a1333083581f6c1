"""Built-in kernels against numpy / Python references, over many sizes and chunkings.

Every comparison is exact (==), including sum against math.fsum; only the hypothesis test on
arbitrary (possibly ill-conditioned) floats allows sum the error bound stated in Sum's docstring.
"""

from __future__ import annotations

import math
import pickle
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import wgtlab as wgt
from wgtlab.errors import ConfigError
from wgtlab.sandbox.kernels import Kernel, WasmKernel
from wgtlab.sandbox.runner import Sandbox

SIZES = [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 100_003]
OPS = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox()


def run(kernel, chunks, sandbox):
    """What a job does: encode each chunk, run it, decode, combine in order."""
    partials = [kernel.decode(kernel.execute(sandbox, kernel.encode(c)).output) for c in chunks]
    return kernel.combine(partials) if partials else kernel.empty()


def values(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + n)
    return np.round(rng.normal(50.0, 30.0, n), 3)  # rounded: plenty of exact ties


def chunkings(a):
    yield [a]
    if len(a) > 1:
        yield np.array_split(a, 3)
        yield [a[: len(a) // 2], a[:0], a[len(a) // 2 :]]  # an empty chunk in the middle


# --- float64 kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_sum_equals_fsum(sandbox, n):
    a = values(n)
    for chunks in chunkings(a):
        assert run(wgt.kernels.sum(), chunks, sandbox) == math.fsum(a)


def test_sum_survives_cancellation_that_breaks_naive_sums(sandbox):
    # the small terms are integers, so the kernel's error terms add up exactly
    a = np.array([1e16, 1.0, -1e16, 3.0, 2.0**60, 5.0, -(2.0**60)] * 37)
    assert float(np.sum(a)) != math.fsum(a)  # numpy's pairwise sum loses it
    for chunks in chunkings(a):
        assert run(wgt.kernels.sum(), chunks, sandbox) == math.fsum(a)


def test_sum_follows_ieee_for_infinities_and_overflow(sandbox):
    k = wgt.kernels.sum()
    assert run(k, [np.array([1.0, np.inf, 2.0])], sandbox) == math.inf
    assert math.isnan(run(k, [np.array([np.inf]), np.array([-np.inf])], sandbox))
    assert run(k, [np.array([1.7e308, 1.7e308])], sandbox) == math.inf


def test_sum_partials_read_as_chunk_sums(sandbox):
    k = wgt.kernels.sum()
    partial = k.decode(k.execute(sandbox, k.encode([0.1, 0.2, 0.3])).output)
    assert partial == math.fsum([0.1, 0.2, 0.3])
    assert pickle.loads(pickle.dumps(partial)).errors == partial.errors


@pytest.mark.parametrize("n", SIZES)
def test_min_max_equals_numpy(sandbox, n):
    a = values(n)
    for chunks in chunkings(a):
        got = run(wgt.kernels.min_max(), chunks, sandbox)
        if n:
            assert got == (a.min(), a.max())
        else:
            assert all(math.isnan(v) for v in got)


def test_min_max_handles_infinities(sandbox):
    a = np.array([3.0, -np.inf, 7.0, np.inf, 0.0])
    assert run(wgt.kernels.min_max(), [a], sandbox) == (-math.inf, math.inf)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    ("bins", "lo", "hi"), [(20, 0.0, 100.0), (7, -3.3, 97.1), (1, 10.0, 20.0), (1000, 0.0, 1.0)]
)
def test_histogram_equals_numpy(sandbox, n, bins, lo, hi):
    edges = np.linspace(lo, hi, bins + 1)
    a = np.concatenate(
        [values(n), edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)]
    )
    expected = np.histogram(a, bins=bins, range=(lo, hi))[0]
    for chunks in chunkings(a):
        got = run(wgt.kernels.histogram(bins=bins, lo=lo, hi=hi), chunks, sandbox)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_histogram_of_nothing_and_of_a_point_range(sandbox):
    k = wgt.kernels.histogram(bins=4, lo=0.0, hi=1.0)
    np.testing.assert_array_equal(run(k, [], sandbox), np.zeros(4, dtype=np.int64))
    a = np.array([5.0, 5.0, 4.6, 5.4, 5.5, 4.5, 6.0])
    point = wgt.kernels.histogram(bins=3, lo=5.0, hi=5.0)  # numpy widens to [4.5, 5.5]
    np.testing.assert_array_equal(run(point, [a], sandbox), np.histogram(a, 3, (5.0, 5.0))[0])
    np.testing.assert_array_equal(point.edges, np.histogram(a, 3, (5.0, 5.0))[1])


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=200),
    bins=st.integers(1, 50),
    lo=st.floats(-1e6, 1e6),
    width=st.floats(1e-6, 1e6),
)
def test_histogram_matches_numpy_on_arbitrary_floats(data, bins, lo, width):
    a = np.array(data, dtype=np.float64)
    hi = lo + width
    finite = a[~np.isnan(a)]
    expected = np.histogram(finite, bins=bins, range=(lo, hi))[0]
    got = run(wgt.kernels.histogram(bins=bins, lo=lo, hi=hi), [a], Sandbox())
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=300))
@example(data=[2.107307990822234e296, -1.7976931348602085e308])
def test_sum_and_min_max_on_arbitrary_floats(data):
    a = np.array(data, dtype=np.float64)
    sandbox = Sandbox()
    try:
        expected = math.fsum(a)
    except OverflowError:
        expected = None
    got = run(wgt.kernels.sum(), np.array_split(a, 4), sandbox)
    if expected is not None and math.isfinite(expected):
        # the bound stated in Sum's docstring, per chunk of n values
        # (sum |x| scaled down first: it may exceed the largest float even when sum x does not)
        abs_total = math.fsum(abs(a) * 2.0**-64) * 2.0**64
        bound = max(len(c) for c in np.array_split(a, 4)) ** 2 * 2.0**-112 * abs_total
        assert got == expected or abs(got - expected) <= max(bound, math.ulp(expected))
    if len(a):
        assert run(wgt.kernels.min_max(), [a], sandbox) == (a.min(), a.max())


@pytest.mark.parametrize("n", [0, 1, 9, 17, 1000, 100_003])
@pytest.mark.parametrize("op", OPS)
def test_count_where_equals_numpy(sandbox, n, op):
    a = values(n)
    threshold = float(a[len(a) // 2]) if n else 50.0  # a value that occurs: == is exercised
    expected = int(OPS[op](a, threshold).sum())
    for chunks in chunkings(a):
        assert run(wgt.kernels.count_where(op, threshold), chunks, sandbox) == expected


def test_float64_inputs_drop_nan_and_accept_pandas_and_lists(sandbox):
    series = pd.Series([1.5, None, 2.5, np.nan, -4.0], dtype="Float64")  # pandas NA and NaN
    assert run(wgt.kernels.sum(), [series], sandbox) == 0.0
    assert run(wgt.kernels.min_max(), [series], sandbox) == (-4.0, 2.5)
    assert run(wgt.kernels.count_where(">", 0), [[1, 2, float("nan"), -1]], sandbox) == 2
    frame = pd.DataFrame({"fare": [1.0, 2.0, 3.0]})
    assert run(wgt.kernels.sum(), [frame], sandbox) == 6.0
    raw = np.array([1.0, 2.0]).tobytes()
    assert run(wgt.kernels.sum(), [raw], sandbox) == 3.0
    assert run(wgt.kernels.sum(), [np.arange(4, dtype=np.int32)], sandbox) == 6.0
    pa = pytest.importorskip("pyarrow")
    arrow = [pa.array([1.5, None, 2.5]), pa.chunked_array([[1, None], [4]])]
    assert run(wgt.kernels.sum(), arrow, sandbox) == 9.0


def test_float64_inputs_that_make_no_sense_are_refused():
    k = wgt.kernels.sum()
    with pytest.raises(ConfigError, match="multiple of 8"):
        k.encode(b"12345")
    with pytest.raises(ConfigError, match="convert to float64"):
        k.encode(["a", "b"])
    with pytest.raises(ConfigError, match="one column"):
        k.encode(pd.DataFrame({"a": [1.0], "b": [2.0]}))


# --- bytes and text kernels -----------------------------------------------------------------------

TEXT = (
    "The quick brown fox\tjumps over\nthe lazy dog.\r\n  Ünïcödé wörds, non\u00a0breaking "
    "space (one word), \x0bvertical\x0cfeed   end"
).encode()


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 16, 17, 1000])
def test_word_count_equals_bytes_split_however_cut(sandbox, cut):
    chunks = [TEXT[i : i + cut] for i in range(0, len(TEXT), cut)]
    assert run(wgt.kernels.word_count(), chunks, sandbox) == len(TEXT.split())


def test_word_count_on_real_text(sandbox, tmp_path):
    rng = np.random.default_rng(3)
    tokens = [
        "fox",
        "jümps",
        "ó",
        "x",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\x0b",
        "\x0c",
        "\u00a0",
        "日本",
    ]
    data = "".join(rng.choice(tokens, 120_000)).encode("utf-8")
    chunks = [data[i : i + 65_536] for i in range(0, len(data), 65_536)]
    assert run(wgt.kernels.word_count(), chunks, sandbox) == len(data.split())
    assert run(wgt.kernels.word_count(), [data.decode("utf-8")], sandbox) == len(data.split())
    assert run(wgt.kernels.word_count(), [], sandbox) == 0
    assert run(wgt.kernels.word_count(), [b"   ", b""], sandbox) == 0


@pytest.mark.parametrize("n", [0, 1, 7, 8, 5551, 5552, 5553, 100_000, 1_000_003])
def test_checksum_equals_zlib_adler32(sandbox, n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    for cut in (n or 1, 1000, 65_536):
        chunks = [data[i : i + cut] for i in range(0, n, cut)]
        assert run(wgt.kernels.checksum(), chunks, sandbox) == zlib.adler32(data)


def test_checksum_of_all_ff_bytes_exercises_the_modulo(sandbox):
    data = b"\xff" * 200_000
    assert run(wgt.kernels.checksum(), [data], sandbox) == zlib.adler32(data)


# --- the kernel objects -------------------------------------------------------------------------


def test_every_builtin_kernel_follows_the_protocol():
    from wgtlab.sandbox.kernels import BUILTINS

    for name, factory in BUILTINS.items():
        kernel = factory(">", 1.0) if name == "count_where" else factory()
        assert isinstance(kernel, Kernel)
        assert kernel.name == name
        assert kernel.digest == kernel.module.digest and len(kernel.digest) == 64
        assert kernel.input_kind in {"float64", "bytes", "text"}
        assert pickle.loads(pickle.dumps(kernel)) == kernel


def test_kernel_params_are_recorded_and_read_only():
    k = wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0)
    assert dict(k.params) == {"bins": 20, "lo": 0.0, "hi": 100.0}
    assert repr(k) == "wgt.kernels.histogram(bins=20, lo=0.0, hi=100.0)"
    with pytest.raises(TypeError):
        k.params["bins"] = 3  # type: ignore[index]
    assert wgt.kernels.histogram(5).digest == k.digest  # same code, params travel in the payload


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: wgt.kernels.histogram(bins=0), "between 1 and"),
        (lambda: wgt.kernels.histogram(bins=True), "must be an int"),
        (lambda: wgt.kernels.histogram(bins=2.5), "must be an int"),
        (lambda: wgt.kernels.histogram(bins=5, lo=2.0, hi=1.0), "must not exceed"),
        (lambda: wgt.kernels.histogram(bins=5, lo=0.0, hi=math.inf), "finite"),
        (lambda: wgt.kernels.histogram(bins=5, lo=-1e308, hi=1e308), "too wide"),
        (lambda: wgt.kernels.histogram(bins=5, lo="0", hi=1.0), "real number"),
        (lambda: wgt.kernels.count_where("=>", 1.0), "op must be one of"),
        (lambda: wgt.kernels.count_where(">", None), "real number"),
    ],
)
def test_bad_kernel_parameters_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_wasm_kernel_wraps_any_module(sandbox):
    import sandbox_hostile as hostile

    module = wgt.WasmModule.from_wat(hostile.UPPER)
    kernel = WasmKernel(module)
    assert (kernel.name, kernel.digest, kernel.input_kind) == (module.name, module.digest, "bytes")
    assert run(kernel, [b"abc", "déf", bytearray(b"ghi")], sandbox) == "ABCDéFGHI".encode()
    assert kernel.empty() == b""
    counted = WasmKernel(module, combine=lambda parts: sum(len(p) for p in parts), name="upper")
    assert run(counted, [b"ab", b"cde"], sandbox) == 5
    assert counted.empty() == 0
    assert pickle.loads(pickle.dumps(kernel)).digest == module.digest
    with pytest.raises(ConfigError, match="bytes or text"):
        kernel.encode(12)
