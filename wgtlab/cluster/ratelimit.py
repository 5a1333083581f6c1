"""Per-worker token buckets: how fast, and how much at once, a worker is given work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from wgtlab import defaults


@dataclass(frozen=True)
class RateLimit:
    """Per-worker token bucket: ``tasks_per_second`` refill, ``burst`` capacity, and at most
    ``max_in_flight`` tasks outstanding on the worker."""

    tasks_per_second: float = defaults.WORKER_TASKS_PER_SECOND
    burst: int = defaults.WORKER_BURST
    max_in_flight: int = defaults.WORKER_MAX_IN_FLIGHT

    def __post_init__(self) -> None:
        if self.tasks_per_second <= 0 or self.burst < 1 or self.max_in_flight < 1:
            raise ValueError(
                "RateLimit needs tasks_per_second > 0, burst >= 1 and max_in_flight >= 1, got "
                f"{self.tasks_per_second}, {self.burst}, {self.max_in_flight}"
            )

    def bucket(self) -> TokenBucket:
        """A full bucket for one worker."""
        return TokenBucket(self.tasks_per_second, self.burst)


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; one token per task sent."""

    def __init__(
        self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def available(self) -> bool:
        self._refill()
        return self._tokens >= 1.0

    def seconds_until_token(self) -> float:
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
