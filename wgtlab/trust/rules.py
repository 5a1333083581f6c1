"""The quarantine rule: when a worker stops getting work, and what brings it back.

A pure value shared by the ledger (which stores the state it yields) and the policy (which owns it).
"""

from __future__ import annotations

from dataclasses import dataclass

from wgtlab.defaults import PROBATION_SUCCESSES, QUARANTINE_THRESHOLD
from wgtlab.errors import ConfigError


@dataclass(frozen=True)
class QuarantineRule:
    """Enter quarantine when the score falls below ``threshold``; leave it only after
    ``probation_successes`` agreed results in a row with the score back at or above it.

    The two conditions give hysteresis: one lucky answer does not bring a liar back.
    """

    threshold: float = QUARANTINE_THRESHOLD
    probation_successes: int = PROBATION_SUCCESSES

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"quarantine threshold must be in [0, 1], got {self.threshold}")
        if isinstance(self.probation_successes, bool) or not (
            isinstance(self.probation_successes, int) and self.probation_successes >= 0
        ):
            raise ConfigError(
                f"probation_successes must be an int >= 0, got {self.probation_successes!r}"
            )

    def next_state(self, quarantined: bool, score: float, run: int) -> bool:
        """Whether the worker is quarantined after an outcome that left it at ``score`` with
        ``run`` consecutive agreed results."""
        if quarantined:
            return not (run >= self.probation_successes and score >= self.threshold)
        return score < self.threshold
