"""The verified-result cache: reruns reuse verified chunks (same Merkle root), a killed job
resumes, a weaker entry never serves a stronger request, planted entries are refused."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import wgtlab as wgt
from wgtlab.jobs.cache import RESULT_CACHE_ENV, CachedOutcome, ResultCache
from wgtlab.jobs.events import CHUNK_SCHEDULED

VALUES = np.arange(20_000, dtype=float)


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "results.sqlite3"
    monkeypatch.setenv(RESULT_CACHE_ENV, str(path))
    return path


def _job(mode: str = "hash", replicas: int | None = None, rows: int = 1_000) -> wgt.Job:
    job = wgt.Job("cached").input(VALUES, chunk_rows=rows).kernel(wgt.kernels.sum())
    return job.verify(mode, replicas=replicas) if mode != "hash" else job


def _scheduled(job: wgt.Job, cluster: wgt.LocalCluster, **options) -> tuple[wgt.JobResult, int]:
    tasks = []
    job = job.copy()
    job.subscribe(lambda e: tasks.append(e) if e.kind == CHUNK_SCHEDULED else None)
    return job.run(on=cluster, **options), len(tasks)


def test_a_rerun_reuses_every_verified_chunk_and_gives_the_same_root(cache_file):
    with wgt.LocalCluster(workers=2) as cluster:
        first, ran = _scheduled(_job(), cluster)
        again, reran = _scheduled(_job(), cluster)
        fresh, recomputed = _scheduled(_job(), cluster, cache=False)
    assert (ran, reran, recomputed) == (20, 0, 20)
    assert not first.chunks.cached.any() and again.chunks.cached.all()
    assert again.value == first.value == fresh.value == VALUES.sum()
    assert again.merkle_root == first.merkle_root == fresh.merkle_root
    assert again.assurance.endswith(
        "; 20 from the verified-result cache; digests and signatures"
        " checked, but a worker that lies consistently is caught "
        "only by verify('redundancy')"
    )
    # attestations survive the cache: each still checks against its worker's key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from wgtlab.cluster.identity import result_message

    chunk = again.outcomes[3]
    (att,) = chunk.attestations
    Ed25519PublicKey.from_public_bytes(att.public_key).verify(
        att.signature,
        result_message(
            first.job_id,
            att.task,
            chunk.index,
            bytes.fromhex(chunk.input_digest),
            bytes.fromhex(first.kernel_digest),
            bytes.fromhex(chunk.digest),
        ),
    )


def test_a_weaker_entry_never_serves_a_stronger_request(cache_file):
    with wgt.LocalCluster(workers=3) as cluster:
        _, hashed = _scheduled(_job("hash"), cluster)
        redundant, ran = _scheduled(_job("redundancy", replicas=2), cluster)
        _, again = _scheduled(_job("redundancy", replicas=2), cluster)
        stronger, ran3 = _scheduled(_job("redundancy", replicas=3), cluster)
        weaker, ran_hash = _scheduled(_job("hash"), cluster)
    assert hashed == 20
    assert ran == 40 and not redundant.chunks.cached.any()  # hash entries don't satisfy it
    assert again == 0  # its own strength does
    assert ran3 == 60 and not stronger.chunks.cached.any()  # 2 agreeing don't satisfy 3
    assert ran_hash == 0 and weaker.chunks.cached.all()  # anything satisfies hash
    assert (weaker.chunks.replicas == 3).all()  # the strongest entry is what was kept


def test_limits_and_kernel_parameters_are_part_of_the_key(cache_file):
    with wgt.LocalCluster(workers=2) as cluster:
        _scheduled(_job(), cluster)
        _, other_limits = _scheduled(_job().limits(max_cpu_cycles=10**8), cluster)
        job = wgt.Job("c").input(VALUES, chunk_rows=1_000).kernel(wgt.kernels.count_where("<", 5))
        _, other_kernel = _scheduled(job, cluster)
    assert other_limits == 20 and other_kernel == 20


def test_a_planted_or_edited_entry_is_refused_and_recomputed(cache_file):
    with wgt.LocalCluster(workers=2) as cluster:
        truth, _ = _scheduled(_job(), cluster)
    cache = ResultCache(cache_file)
    keys = [k for (k,) in sqlite3.connect(cache_file).execute("SELECT key FROM outcomes")]
    assert len(keys) == 20
    # Someone who can write the database but not read its key file changes an outcome.
    good = cache.get(keys[0], "hash", 1)
    assert good is not None
    forged = CachedOutcome(**{**good.__dict__, "output": (123.0).hex().encode()})
    with sqlite3.connect(cache_file) as con:
        import msgpack

        value = msgpack.packb(forged.to_plain(), use_bin_type=True)
        con.execute("UPDATE outcomes SET value = ? WHERE key = ?", (value, keys[0]))
    assert cache.get(keys[0], "hash", 1) is None  # refused (and dropped)
    with wgt.LocalCluster(workers=2) as cluster:
        again, ran = _scheduled(_job(), cluster)
    assert ran == 1 and again.value == truth.value and again.merkle_root == truth.merkle_root


def test_a_key_file_others_can_read_is_refused(cache_file):
    ResultCache(cache_file)
    os.chmod(cache_file.with_name(cache_file.name + ".key"), 0o644)
    with pytest.raises(wgt.ConfigError, match=r"may be read or written by others .*chmod 600"):
        ResultCache(cache_file)


def test_the_cache_is_bounded_and_cleared(cache_file):
    cache = ResultCache(cache_file, max_bytes=4_000)
    entry = CachedOutcome("verified", "ab" * 32, b"x" * 500, None, "hash", ("w",), (), 1, 1.0)
    for i in range(64):
        cache.put(f"k{i}", entry)
    info = cache.info()
    assert info["bytes"] <= 4_000 and info["entries"] < 64  # evicted as it grew
    assert cache.get("k63", "hash", 1) is not None  # the most recent stay
    assert cache.clear() == info["entries"] and cache.info()["entries"] == 0


@pytest.mark.parametrize(("setting", "message"), [(" ", "is empty"), ("DIR", "is a directory")])
def test_bad_cache_settings_are_named(monkeypatch, tmp_path, setting, message):
    monkeypatch.setenv(RESULT_CACHE_ENV, str(tmp_path) if setting == "DIR" else setting)
    with pytest.raises(wgt.ConfigError, match=f"{RESULT_CACHE_ENV}.*{message}"):
        ResultCache.default()
    monkeypatch.setenv(RESULT_CACHE_ENV, "off")
    assert ResultCache.default() is None


def test_a_killed_job_resumes_where_it_stopped(cache_file, tmp_path):
    script = tmp_path / "long_job.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, numpy as np, wgtlab as wgt
            from wgtlab.jobs import events as ev
            done = []
            def report(event):
                if event.kind == ev.CHUNK_VERIFIED:
                    done.append(event.chunk)
                    print(len(done), flush=True)
            job = wgt.Job("long").input(np.arange(40_000.0), chunk_rows=1_000)
            job.kernel(wgt.kernels.sum())
            job.subscribe(report)
            with wgt.LocalCluster(workers=1, rate_limit=wgt.RateLimit(tasks_per_second=20)) as c:
                job.run(on=c)
            """
        )
    )
    env = {**os.environ, RESULT_CACHE_ENV: str(cache_file)}
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if line and int(line) >= 10:
            break
    child.send_signal(signal.SIGKILL)  # no clean shutdown at all
    child.wait(10)
    kept = ResultCache(cache_file).info()["entries"]
    assert 10 <= kept < 40
    with wgt.LocalCluster(workers=2) as cluster:
        job = wgt.Job("long").input(np.arange(40_000.0), chunk_rows=1_000)
        resumed, ran = _scheduled(job.kernel(wgt.kernels.sum()), cluster)
    assert ran == 40 - kept and int(resumed.chunks.cached.sum()) == kept
    assert resumed.value == np.arange(40_000.0).sum()


def _cache_cli(command: str, cache: str) -> subprocess.CompletedProcess[str]:
    """``wgtlab cache <command>`` in a real process, its cache at ``cache``."""
    return subprocess.run(
        [sys.executable, "-m", "wgtlab.cli", "cache", command],
        env={**os.environ, RESULT_CACHE_ENV: cache},
        capture_output=True,
        text=True,
    )


def test_cache_cli_info_and_clear_in_a_real_process(cache_file):
    with wgt.LocalCluster(workers=2) as cluster:
        _scheduled(_job(), cluster)
    info = _cache_cli("info", str(cache_file))
    assert info.returncode == 0, info.stderr
    assert info.stdout.splitlines()[:2] == [f"verified-result cache: {cache_file}", "  entries: 20"]
    cleared = _cache_cli("clear", str(cache_file))
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout == f"removed 20 entries from {cache_file}\n"
    off = _cache_cli("info", "off")
    assert off.returncode == 1 and "the verified-result cache is off" in off.stderr


def test_the_run_magic_uses_the_cache_unless_told_not_to(cache_file, ip):
    ip.run_line_magic("wgt", "cluster local 2")
    ip.user_ns["cached_job"] = _job()
    first = ip.run_line_magic("wgt", "run cached_job --progress none")
    again = ip.run_line_magic("wgt", "run cached_job --progress none")
    fresh = ip.run_line_magic("wgt", "run cached_job --progress none --no-cache")
    assert not first.chunks.cached.any() and again.chunks.cached.all()
    assert not fresh.chunks.cached.any() and fresh.merkle_root == first.merkle_root
