"""processors.memory_limiter: refuse new data while the process is above its soft memory limit.

As in the Collector, the soft limit is `limit - spike_limit`; above it receivers answer 503/UNAVAILABLE
(retryable) until memory falls below it again. Checked every `check_interval`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from otelite.collector.component import Factory, duration

if TYPE_CHECKING:
    from otelite.collector.store.writer import Writer


@dataclass
class MemoryLimiterConfig:
    # Off unless limit_mib or limit_percentage is set. Above (limit - spike) the receivers refuse new
    # data with 503/UNAVAILABLE until memory falls again.
    check_interval: float = duration(1.0)
    limit_mib: int = 0
    spike_limit_mib: int = 0  # default: 20% of the limit, as in the Collector
    limit_percentage: int = 0
    spike_limit_percentage: int = 0


FACTORY = Factory(kind="processors", type="memory_limiter", config=MemoryLimiterConfig)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _total_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def soft_limit_bytes(config: MemoryLimiterConfig) -> int:
    """0 when the limiter is off."""
    if config.limit_mib:
        limit = config.limit_mib * 1024 * 1024
        spike = config.spike_limit_mib * 1024 * 1024 if config.spike_limit_mib else limit // 5
    elif config.limit_percentage:
        total = _total_memory_bytes()
        limit = total * config.limit_percentage // 100
        spike = total * config.spike_limit_percentage // 100 if config.spike_limit_percentage else limit // 5
    else:
        return 0
    return max(limit - spike, 1)


async def run_memory_limiter(config: MemoryLimiterConfig, writer: "Writer") -> None:
    soft = soft_limit_bytes(config)
    if not soft:
        return
    while True:
        over = rss_bytes() > soft
        writer.refuse("the collector is over its memory limit" if over else None)
        await asyncio.sleep(config.check_interval)
