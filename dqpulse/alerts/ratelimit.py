"""A token bucket per notification channel (``rate_limit_per_minute``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most ``burst`` saved up (default: one minute's).

    Each delivery attempt, successful or not, takes one token, so a channel never gets more
    than ``burst + rate_per_minute * t / 60`` requests in any ``t`` seconds.

    >>> clock = iter([0.0, 0.0, 30.0]).__next__
    >>> bucket = TokenBucket(2, clock=clock)
    >>> bucket.take(3), bucket.take(1), bucket.take(1)
    (2, 0, 1)
    """

    def __init__(self, rate_per_minute: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate_per_minute must be positive, got {rate_per_minute}")
        self.rate_per_second = rate_per_minute / 60.0
        self.burst = float(burst if burst is not None else rate_per_minute)
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        self._clock = clock
        self._tokens = self.burst
        self._updated: float | None = None
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        if self._updated is not None:
            self._tokens = min(self.burst,
                               self._tokens + (now - self._updated) * self.rate_per_second)
        self._updated = now

    def available(self) -> int:
        with self._lock:
            self._refill()
            return int(self._tokens)

    def take(self, wanted: int) -> int:
        """Take up to ``wanted`` whole tokens; return how many were taken."""
        with self._lock:
            self._refill()
            granted = max(0, min(wanted, int(self._tokens)))
            self._tokens -= granted
            return granted

    def give_back(self, count: int) -> None:
        """Return tokens taken for attempts that were not made."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + count)
