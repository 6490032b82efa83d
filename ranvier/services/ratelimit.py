"""Rate limiting with token buckets (Client-Server API, "Rate limiting").

Over the limit → 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``. Buckets are
per action and key (a user ID, or the client's IP address before login), kept
in memory and bounded: idle full buckets are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ranvier.config import RateConfig, RateLimitConfig
from ranvier.errors import MatrixError

MAX_BUCKETS = 100_000


class RateLimiter:
    def __init__(self, config: RateLimitConfig, clock_ms: Callable[[], int]) -> None:
        self._config = config
        self._clock_ms = clock_ms
        # (action, key) -> (tokens, last refill time in ms)
        self._buckets: dict[tuple[str, str], tuple[float, int]] = {}

    def _rate(self, action: str) -> RateConfig:
        rate: RateConfig = getattr(self._config, action)
        return rate

    def check(self, action: str, key: str) -> None:
        """Take one token for ``action`` by ``key`` or raise 429 M_LIMIT_EXCEEDED.

        ``action`` is one of ``message``, ``login``, ``registration``.
        """
        if not self._config.enabled:
            return
        rate = self._rate(action)
        now = self._clock_ms()
        tokens, last = self._buckets.get((action, key), (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - last) / 1000 * rate.per_second)
        if tokens < 1:
            retry_after_ms = math.ceil((1 - tokens) / rate.per_second * 1000)
            raise MatrixError(
                429, "M_LIMIT_EXCEEDED", "Too many requests.", retry_after_ms=retry_after_ms
            )
        if len(self._buckets) >= MAX_BUCKETS:
            self._evict(now)
        self._buckets[(action, key)] = (tokens - 1, now)

    def _evict(self, now: int) -> None:
        """Drop buckets that have refilled completely: they carry no information."""
        for bucket_key, (tokens, last) in list(self._buckets.items()):
            rate = self._rate(bucket_key[0])
            if tokens + (now - last) / 1000 * rate.per_second >= rate.burst:
                del self._buckets[bucket_key]
