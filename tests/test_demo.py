"""``wgtlab demo``, the main job, run in-process through the real CLI entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from wgtlab.cli import main


def test_demo_catches_the_liar_and_rebuilds_the_dataset(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "equals numpy.histogram on the trusted side: True" in out
    # How many lies: as many tasks as the liar got, which depends on timing. At least the 5
    # that quarantine it; at most one per chunk (a worker runs a chunk once: replicas go to
    # distinct workers, and probation shadows only to quarantined workers, which get no
    # replicas). A narrower range failed in about one run in ten.
    lies = re.search(r"chunks verified: 28/28; lies caught: (\d+);", out)
    assert lies and 5 <= int(lies.group(1)) <= 28, out
    assert re.search(r"local-0 +0\.500 +0\.[0-2]\d\d +quarantined", out)
    for honest in ("local-1", "local-2", "local-3", "local-4"):
        assert re.search(rf"{honest} +0\.500 +0\.[6-9]\d\d +ok", out)
    assert "proof for chunk 0: 5 hashes, verifies: True" in out
    assert "lost shards [2, 9]" in out and "exact: True" in out
    for png in ("trust.png", "verification.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_demo_demonstrates_again_with_the_result_cache_on(tmp_path, monkeypatch):
    """A second demo in a row still catches the liar: a demonstration computes every chunk,
    whatever the verified-result cache holds from the first."""
    monkeypatch.setenv("WGTLAB_RESULT_CACHE", str(tmp_path / "results.sqlite3"))
    outputs = []
    for run in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "wgtlab.cli",
                "demo",
                "--no-progress",
                "--out",
                str(tmp_path / f"o{run}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ},
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    for out in outputs:
        caught = int(re.search(r"lies caught: (\d+);", out).group(1))
        assert caught >= 5
        assert re.search(r"^  local-0 +0\.500 +0\.\d+ +quarantined$", out, re.MULTILINE)
