"""PostHog's interval names and the grid each stands for (posthog-metrics.md, "Computation" step 1).

Bucket starts are floored to the interval in the project's zone. Sub-day intervals are fixed lengths
aligned to the zone's offset at the start of the range (a DST change inside the range keeps hour buckets
aligned; `hour_6` buckets then stay on the old alignment); `day` and `week` follow local midnights (weeks
start on Monday and run across New Year), so a DST day is 23 or 25 hours long.
"""

from __future__ import annotations

import datetime as dt
import math

from otelite.collector.query.grid import CalendarGrid, FixedGrid, Grid
from otelite.collector.times import NS

INTERVALS: dict[str, int] = {  # name → nominal seconds, finest first
    "second": 1, "minute": 60, "minute_5": 300, "minute_15": 900,
    "hour": 3600, "hour_6": 21600, "day": 86400, "week": 604800,
}
TARGET_BUCKETS = 60


def grid_for(interval: str, tz: dt.tzinfo) -> Grid:
    if interval == "day":
        return CalendarGrid(1, "d", tz)
    if interval == "week":
        return CalendarGrid(1, "w", tz, iso_weeks=True)
    return FixedGrid(INTERVALS[interval] * NS, tz)


def auto_interval(span_ns: int) -> str:
    """The interval whose bucket count over `span_ns` is closest (by ratio) to 60."""
    best, best_score = "second", math.inf
    for name, seconds in INTERVALS.items():
        buckets = max(span_ns / (seconds * NS), 1e-9)
        score = abs(math.log(buckets / TARGET_BUCKETS))
        if score < best_score - 1e-12:
            best, best_score = name, score
    return best


def coarser(name: str) -> str | None:
    names = list(INTERVALS)
    i = names.index(name)
    return names[i + 1] if i + 1 < len(names) else None


def approx_buckets(start_ns: int, end_ns: int, interval: str) -> int:
    """Bucket count for the range (upper bound; one more for an unaligned start)."""
    step = INTERVALS[interval] * NS
    return (end_ns - start_ns) // step + 2

