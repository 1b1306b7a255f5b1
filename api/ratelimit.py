"""Token buckets per API key and route class (auth.md, "Rate limits").

Memory is bounded by the number of keys × classes; a class with no configured limit is unlimited.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from otelite.collector.config import RateLimitConfig


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # whole tokens left after this request
    retry_after: int  # seconds until a token is available (0 when allowed)
    reset: float  # epoch seconds when the bucket is full again


class RateLimiter:
    def __init__(self, limits: dict[str, "RateLimitConfig"], clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: dict[tuple[object, str], list[float]] = {}  # (key id, class) → [tokens, last refill]
        self._lock = threading.Lock()

    def limited(self, route_class: str | None) -> bool:
        return route_class is not None and route_class in self._limits

    def take(self, key_id: object, route_class: str) -> Decision:
        limit = self._limits[route_class]
        capacity = float(limit.burst or limit.requests)
        rate = limit.requests / limit.per  # tokens per second
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get((key_id, route_class), (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[(key_id, route_class)] = [tokens, now]
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / rate))
        reset = time.time() + (capacity - tokens) / rate
        return Decision(allowed, int(tokens), retry_after, reset)
