"""Shared by the @wgt.udf test files: the runner, built or loaded once per test session.

The runner lives in the real cache (WGTLAB_CACHE_DIR if set, else the user cache that
`wgtlab udf build` warms in CI), so a warm cache costs ~0.2 s here and a cold one one build.
"""

from __future__ import annotations

import functools

from wgtlab.sandbox.python import build_runner


@functools.cache
def ensure_runner() -> dict[str, float]:
    return build_runner()
