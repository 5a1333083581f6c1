"""The terminal progress bar the CLI commands draw: ``TextProgress``, a job-event subscriber.

It lives with the events (``wgtlab.jobs.events``), below the CLI and the notebook, which both
use it; this name stays for code that imports it from here.
"""

from __future__ import annotations

from wgtlab.jobs.events import TextProgress

__all__ = ["TextProgress"]
