"""Test-suite settings shared by every test module."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs each property test on the same examples every time: a red CI is a real regression,
# never a newly drawn example. Locally, hypothesis explores freely.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
