"""What one attempt to send a request came to, and the backoff between attempts.

Status codes follow the specifications (the OTLP specification's "Failures" and "Throttling", the
Prometheus remote-write 1.0 "Retries & Backoff"): retryable failures are retried with backoff honouring the
server's Retry-After / RetryInfo; permanent ones are dropped and counted, never retried forever.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from otelite.exporters.forwarding.config import RetryConfig


@dataclass(frozen=True, slots=True)
class Delivered:
    rejected: int = 0  # items the upstream rejected in a partial success
    message: str = ""


@dataclass(frozen=True, slots=True)
class Retryable:
    error: str
    throttle_s: float | None = None  # the server's Retry-After / RetryInfo: wait at least this long


@dataclass(frozen=True, slots=True)
class Permanent:
    error: str


Outcome = Delivered | Retryable | Permanent


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Backoff:
    """Exponential backoff with jitter (the Collector's retry_on_failure)."""

    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._interval = config.initial_interval
        self.started = time.monotonic()
        self.attempts = 0

    def next_delay(self, throttle_s: float | None = None) -> float:
        c = self._config
        interval = min(self._interval, c.max_interval)
        delta = c.randomization_factor * interval
        delay = interval + self._rng.uniform(-delta, delta)
        self._interval = min(self._interval * c.multiplier, c.max_interval)
        self.attempts += 1
        # RetryInfo / Retry-After is a minimum, as in the Collector (max of the two).
        return max(delay, throttle_s or 0.0)

    def exhausted(self) -> bool:
        limit = self._config.max_elapsed_time
        return not self._config.enabled or (limit > 0 and time.monotonic() - self.started >= limit)
