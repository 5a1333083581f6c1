"""Per-worker token buckets: how fast, and how much at once, a worker is given work."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; one token per task sent."""

    def __init__(self, rate: float, capacity: int, clock=time.monotonic) -> None:
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
