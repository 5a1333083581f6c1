"""CESPipeline round trips: every missing-shard pattern, many sizes, parallel segments."""

from __future__ import annotations

import copy
import itertools
import os
import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest
from ces_support import KEY, SEGMENT, pipeline, sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wgtlab as wgt
from wgtlab.ces.format import HEADER_BYTES, ShardHeader
from wgtlab.errors import ConfigError, NotEnoughShardsError


def test_public_names_resolve():
    assert wgt.CESPipeline is wgt.ces.CESPipeline
    for name in (
        "KeyConfigError",
        "KeyMismatchError",
        "IntegrityError",
        "NotEnoughShardsError",
        "ShardFormatError",
        "CESError",
        "EphemeralKeyWarning",
    ):
        assert getattr(wgt.ces, name) is getattr(wgt, name)
    pipe = wgt.CESPipeline(KEY)
    assert (pipe.data_shards, pipe.parity_shards, pipe.compression_level) == (8, 4, 3)


@pytest.mark.parametrize(("k", "m"), [(4, 2), (8, 4)])
def test_every_missing_pattern_up_to_parity_round_trips(k, m):
    pipe = pipeline(k, m)
    data = sample(3 * SEGMENT + 123)
    shards = pipe.process(data)
    assert len(shards) == k + m
    for lost in range(m + 1):
        for missing in itertools.combinations(range(k + m), lost):
            given_shards = [None if i in missing else s for i, s in enumerate(shards)]
            assert pipe.reconstruct(given_shards) == data, missing
            present = [i not in missing for i in range(k + m)]
            assert pipe.reconstruct(shards, present) == data, missing


@pytest.mark.parametrize(("k", "m"), [(4, 2), (8, 4)])
def test_one_more_missing_shard_than_parity_fails_clearly(k, m):
    pipe = pipeline(k, m)
    shards = pipe.process(sample(2 * SEGMENT))
    for missing in itertools.islice(itertools.combinations(range(k + m), m + 1), 40):
        with pytest.raises(NotEnoughShardsError) as caught:
            pipe.reconstruct([None if i in missing else s for i, s in enumerate(shards)])
        assert (caught.value.usable, caught.value.needed) == (k - 1, k)
        assert f"{k - 1} usable" in str(caught.value) and f"{k} of the {k + m}" in str(caught.value)


CONFIGS = st.sampled_from([(4, 2), (8, 4), (10, 4), (3, 7)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, size=st.integers(0, 6 * SEGMENT), seed=st.integers(0, 2**16), data=st.data())
def test_round_trip_with_random_losses(config, size, seed, data):
    k, m = config
    pipe = pipeline(k, m)
    payload = sample(size, seed)
    shards = pipe.process(payload)
    lost = data.draw(st.sets(st.integers(0, k + m - 1), max_size=m), label="lost shards")
    assert pipe.reconstruct([None if i in lost else s for i, s in enumerate(shards)]) == payload


@settings(max_examples=15, deadline=None)
@given(level=st.sampled_from([-7, 1, 3, 9, 19]), size=st.integers(0, 3 * SEGMENT))
def test_compression_levels_round_trip(level, size):
    pipe = pipeline(3, 2, compression_level=level)
    payload = sample(size, level)
    assert pipe.reconstruct(pipe.process(payload)) == payload


def test_default_segments_and_parallel_callers():
    pipe = wgt.CESPipeline(KEY)
    data = sample(9 << 20, 1)  # three 4 MiB segments
    shards = pipe.process(data)
    header = ShardHeader.parse(shards[0][:HEADER_BYTES])
    assert header.segment_count == 3 and header.segment_size == 4 << 20
    lost = [None, None, *shards[2:9], None, None, shards[11]]
    with ThreadPoolExecutor(3) as pool:  # the shared segment pool serves several callers
        results = list(pool.map(lambda _: pipe.reconstruct(lost), range(3)))
    assert all(r == data for r in results)


def test_shards_are_compressed_and_balanced():
    pipe = wgt.CESPipeline(KEY)
    data = b"timestamp,value\n" + b"2024-01-01T00:00:00,42\n" * 200_000
    shards = pipe.process(data)
    assert len({len(s) for s in shards}) == 1
    assert sum(len(s) for s in shards) < len(data) / 10


def test_every_process_call_is_a_new_dataset_with_fresh_nonces():
    pipe = pipeline(2, 1)
    first, second = pipe.process(b"same data" * 100), pipe.process(b"same data" * 100)
    assert first[0][:HEADER_BYTES] != second[0][:HEADER_BYTES]  # new dataset id
    assert first[0][HEADER_BYTES:] != second[0][HEADER_BYTES:]  # new nonces, new ciphertext


def test_inputs_other_than_bytes_are_refused():
    pipe = pipeline(2, 1)
    with pytest.raises(ConfigError, match="encode text first"):
        pipe.process("text")
    with pytest.raises(ConfigError):
        pipe.process(12)
    assert pipe.reconstruct(pipe.process(bytearray(b"abc"))) == b"abc"
    assert pipe.reconstruct(pipe.process(memoryview(b"abcdef")[2:])) == b"cdef"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compression_level": 23},
        {"compression_level": -8},
        {"compression_level": 3.0},
        {"segment_size": 100},
        {"segment_size": 2 << 30},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        wgt.CESPipeline(KEY, **kwargs)


def test_reconstruct_arguments_are_checked():
    pipe = pipeline(2, 1)
    shards = pipe.process(b"x" * 100)
    with pytest.raises(ConfigError, match="one flag per shard"):
        pipe.reconstruct(shards, [True, True])
    with pytest.raises(ConfigError, match="list of shards"):
        pipe.reconstruct(shards[0])
    with pytest.raises(NotEnoughShardsError, match="every shard is missing"):
        pipe.reconstruct([None, None, None])
    with pytest.raises(NotEnoughShardsError):
        pipe.reconstruct([])


def test_str_shards_are_refused_up_front_with_what_was_given():
    """Shards read as text (or hex strings) used to be reported as "0 bytes" shards."""
    pipe = wgt.CESPipeline(KEY)  # 8 + 4: twelve shards
    good = pipe.process(b"real data " * 50)
    assert len(good) == 12
    with pytest.raises(ConfigError) as caught:
        pipe.reconstruct(["abc"] * 12)
    message = str(caught.value)
    assert "all 12 shards are str" in message
    assert "each shard must be bytes, bytearray or a contiguous memoryview" in message
    assert "None for a missing shard" in message and "decode them back to bytes" in message
    assert "0 bytes" not in message and "\n" not in message

    # Hex text of genuine shards: still refused, naming the type, never the content.
    as_hex = [s.hex() for s in good]
    with pytest.raises(ConfigError, match="all 12 shards are str") as caught:
        pipe.reconstruct(as_hex)
    assert as_hex[0][:32] not in str(caught.value)


def test_wrong_shard_types_are_named_by_position():
    pipe = pipeline(2, 1)
    shards = pipe.process(b"x" * 3000)
    with pytest.raises(ConfigError, match=r"; but shard 2 is int$"):
        pipe.reconstruct([shards[0], shards[1], 7])  # even though 2 good shards would do
    with pytest.raises(ConfigError, match=r"but shard 1 is str; shard 2 is list \(shards are"):
        pipe.reconstruct([shards[0], shards[1].decode("latin-1"), [1, 2]])
    strided = memoryview(shards[2])[::2]
    with pytest.raises(ConfigError, match="shard 2 is non-contiguous memoryview"):
        pipe.reconstruct([shards[0], None, strided])
    with pytest.raises(ConfigError, match="all 3 shards are str"):
        wgt.ces.inspect(["a", "b", "c"], key=KEY)
    with pytest.raises(ConfigError, match="all 3 shards are str"):
        wgt.ces.rotate(["a", "b", "c"], KEY, bytes(range(1, 33)))
    # None, bytearray and memoryview shards stay accepted; damaged bytes count as missing.
    assert pipe.reconstruct([None, bytearray(shards[1]), memoryview(shards[2])]) == b"x" * 3000
    assert pipe.reconstruct([b"", shards[1], shards[2]]) == b"x" * 3000


def test_forked_child_gets_a_working_pool():
    pipe = pipeline(2, 1)
    shards = pipe.process(sample(5 * SEGMENT))  # starts the shared pool in this process
    pid = os.fork()
    if pid == 0:  # pragma: no cover (runs in the child)
        os._exit(0 if pipe.reconstruct(shards) == sample(5 * SEGMENT) else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_inspect_report_is_a_value_with_a_table():
    pipe = pipeline(4, 2)
    shards = pipe.process(sample(3 * SEGMENT))
    report = wgt.ces.inspect([None, *shards[1:]], key=KEY)
    assert report.recoverable and (report.usable, report.needed) == (5, 4)
    assert report.counts() == {"missing": 1, "ok": 5}
    frame = report.to_frame()
    assert list(frame["state"]) == ["missing", "ok", "ok", "ok", "ok", "ok"]
    assert frame.loc[1, "index"] == 1 and report.dataset_id == report.header.dataset_id.hex()
    assert "4 data + 2 parity" in str(report)
    with pytest.raises(AttributeError):
        report.recoverable = False  # frozen


def test_a_pipeline_refuses_to_be_pickled_with_its_key():
    pipe = pipeline(4, 2)
    shards = pipe.process(b"sealed")
    for dump in (pickle.dumps, lambda p: pickle.dumps(p, protocol=0), lambda p: pickle.dumps([p])):
        with pytest.raises(TypeError) as caught:
            dump(pipe)
        message = str(caught.value)
        assert message == (
            "a CESPipeline cannot be pickled: the pickle would hold its secret key. Give the "
            "other process the key through your key store or $CES_ENCRYPTION_KEY and build "
            "CESPipeline(key, ...) there"
        )
        assert KEY.hex() not in message and "_thread._local" not in message
    # Copies stay in the process: they share the (immutable, thread-safe) pipeline.
    assert copy.copy(pipe) is pipe and copy.deepcopy({"p": pipe})["p"] is pipe
    assert copy.deepcopy(pipe).reconstruct(shards) == b"sealed"
