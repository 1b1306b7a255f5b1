"""Token buckets per API key and route class (auth.md, "Rate limits").

Memory is bounded by the number of keys × classes; a class with no limit is unlimited. Limits come from
`auth.rate_limits`, over the defaults dialects declare (`Dialect.rate_limits`, e.g. Flux's documented
batch 10/min and query 60/min): a configured class replaces its default, `enabled: false` removes it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from otelite.collector.config import RateLimitConfig


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # whole tokens left after this request
    retry_after: int  # seconds until a token is available (0 when allowed)
    reset: float  # epoch seconds when the bucket is full again


def effective_limits(configured: Mapping[str, "RateLimitConfig"],
                     defaults: Iterable[Mapping[str, "RateLimitConfig"]] = ()) -> dict[str, "RateLimitConfig"]:
    """The limits in force: every dialect default, replaced by the configured class of the same name;
    classes whose limit is disabled are left out (unlimited)."""
    merged: dict[str, "RateLimitConfig"] = {}
    for declared in defaults:
        merged.update(declared)
    merged.update(configured)
    return {name: limit for name, limit in merged.items() if getattr(limit, "enabled", True)}


class RateLimiter:
    def __init__(self, limits: Mapping[str, "RateLimitConfig"], clock: Callable[[], float] = time.monotonic) -> None:
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
