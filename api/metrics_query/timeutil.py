"""Times and the bucket grid (posthog-metrics.md, "Computation" step 1).

Absolute times are ISO 8601; one without an offset is read in the caller's default zone (the project's
zone for `metrics/query`, UTC for `metrics/characterize`, as the spec says). Relative times follow
PostHog's `relative_date_parse`: `-<n><unit>` with `s` seconds, `M` minutes, `h` hours, `d` days,
`w` weeks, `m` months, `q` quarters (13 weeks), `y` years; `now` is accepted too.

The grid: bucket starts floored to the interval in the project's zone. Sub-day intervals are fixed
lengths aligned to the zone's offset at the start of the range (a DST change inside the range keeps
hour buckets aligned; `hour_6` buckets then stay on the old alignment); `day` and `week` follow local
midnights (weeks start on Monday), so a DST day is 23 or 25 hours long.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from dateutil.relativedelta import relativedelta

UTC = dt.timezone.utc
NS = 1_000_000_000

INTERVALS: dict[str, int] = {  # name → nominal seconds, finest first
    "second": 1, "minute": 60, "minute_5": 300, "minute_15": 900,
    "hour": 3600, "hour_6": 21600, "day": 86400, "week": 604800,
}
TARGET_BUCKETS = 60

_RELATIVE = re.compile(r"^-?(\d+)([sMhdwmqy])$")
_UNITS = {"s": "seconds", "M": "minutes", "h": "hours", "d": "days", "w": "weeks", "m": "months", "y": "years"}


class TimeError(ValueError):
    """A time that cannot be read; the message says what was wrong."""


def zone(name: str | None) -> dt.tzinfo:
    """The project's zone; an unknown name falls back to UTC rather than failing every query."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_time(value: object, default_tz: dt.tzinfo, now: dt.datetime) -> dt.datetime:
    """An aware datetime from an ISO string, a relative string (`-1h`), `now`, or epoch seconds."""
    if isinstance(value, bool) or value is None:
        raise TimeError("expected an ISO datetime or a relative time such as -1h")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise TimeError("not a finite number")
        return dt.datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        raise TimeError("expected an ISO datetime or a relative time such as -1h")
    text = value.strip()
    if text.lower() == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = relativedelta(weeks=13 * n) if unit == "q" else relativedelta(**{_UNITS[unit]: n})
        try:
            return now - delta
        except (OverflowError, ValueError) as e:
            raise TimeError(f"{text!r} is out of range") from e
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeError(f"{text!r} is neither an ISO datetime nor a relative time such as -1h or -7d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz)
    return parsed


def to_ns(t: dt.datetime) -> int:
    """Exact integer nanoseconds since the epoch (no float rounding)."""
    delta = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def from_ns(ns: int, tz: dt.tzinfo) -> dt.datetime:
    return (dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=ns // 1000)).astimezone(tz)


def iso(ns: int, tz: dt.tzinfo) -> str:
    """ISO 8601 in the project's zone; UTC is written with `Z`."""
    text = from_ns(ns, tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


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


def grid(start_ns: int, end_ns: int, interval: str, tz: dt.tzinfo) -> np.ndarray:
    """Bucket edges: starts of every bucket from the one holding `start_ns` up to `end_ns` (exclusive),
    plus the end of the last bucket. `edges[i] <= t < edges[i+1]` is bucket i."""
    seconds = INTERVALS[interval]
    step = seconds * NS
    if seconds < 86400:
        start = from_ns(start_ns, tz)
        offset = int(start.utcoffset().total_seconds()) * NS if start.utcoffset() else 0
        local = start_ns + offset
        first = local - (local % step) - offset
        n = -(-(end_ns - first) // step)  # ceil
        return first + step * np.arange(max(n, 1) + 1, dtype=np.int64)
    local_start = from_ns(start_ns, tz)
    day = local_start.date()
    if interval == "week":
        day -= dt.timedelta(days=day.weekday())
    stride = dt.timedelta(days=7 if interval == "week" else 1)
    edges = []
    while True:
        edge = to_ns(dt.datetime.combine(day, dt.time(0), tzinfo=tz))
        edges.append(edge)
        if edge >= end_ns and len(edges) >= 2:
            break
        day += stride
    return np.asarray(edges, dtype=np.int64)
