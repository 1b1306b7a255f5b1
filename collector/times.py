"""Times in one place: config durations, ISO 8601 instants, PostHog's relative dates, time zones.

Every surface that reads a time or a duration from a user (the config file, the REST dialects, the
bucket grids of collector/query) goes through this module, so a unit means one thing throughout otelite.
Two grammars, each the one its users already know:

- **Durations** (config file, Go's `time.ParseDuration` plus `d` and `w`): ``200ms``, ``1h30m``, ``7d``;
  here ``m`` is minutes.
- **Instants** (REST dialects): ISO 8601 (nanoseconds kept; a value without an offset is read in the
  caller's zone, e.g. the project's), ``now``, or PostHog's relative dates exactly as PostHog's
  `relative_date_parse` reads them (posthog-tracing.md, "Date ranges"): ``-<n><unit>[Start|End]``
  with ``s`` seconds, ``M`` minutes, ``h`` hours, ``d`` days, ``w`` weeks, ``m`` MONTHS, ``q`` quarters
  (13 weeks), ``y`` years. So ``-30M`` is thirty minutes and ``-3m`` three months, in every dialect.

How a relative date is computed (PostHog's `get_delta_mapping_for`, applied with dateutil's
`relativedelta` in the project's zone):

- ``d``, ``w``, ``m``, ``q``, ``y`` are calendar steps on the local wall clock: ``-1d`` at 12:00 is 12:00
  the day before even across a DST change; ``-1m`` on 31 March is 28/29 February (clamped).
- ``s``, ``M``, ``h`` are exact lengths of time. (PostHog subtracts them on the wall clock too, which
  near a DST change can give an empty or a two-hour ``-1h`` window; otelite does not copy that.)
- ``Start``/``End``: ``h`` → start/end of that hour; ``d`` → start/end of that day (``-1dStart`` =
  00:00 yesterday, ``dStart`` = 00:00 today); ``m`` → day 1 / the last day of that month; ``y`` → 1
  January / day 31 of that month (PostHog sets only the day for ``yEnd``). For ``m`` and ``y`` the time
  of day also becomes 00:00:00 / 23:59:59.999999, as PostHog's query runners truncate day-or-longer
  ranges (`always_truncate`). ``w``, ``q``, ``s``, ``M`` ignore the suffix, as PostHog does.
- The number may be left out only with a suffix (``dStart``, ``mStart``); a leading ``-`` is optional
  (``6h`` = ``-6h``). Anything else (``yesterday``, ``-5H``, ``-h``) is an error, never "now".
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from dateutil.relativedelta import relativedelta

NS = 1_000_000_000
UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
# Instants are stored as signed 64-bit nanoseconds since the epoch (SQLite INTEGER, numpy int64), which
# reach from 1677-09-21 to 2262-04-11. A client's time outside that range is refused as a TimeError
# (a 400 naming the field) here, once for every dialect, instead of overflowing later in SQL or numpy.
MIN_NS, MAX_NS = -(2**63), 2**63 - 1


class TimeError(ValueError):
    """A time that cannot be read; the message says what was wrong (without the field: callers add it)."""


# --- durations (config) ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0, "w": 604800.0,
}


def parse_duration(text: str | int | float) -> float:
    """Parse a Go-style duration (``200ms``, ``1h30m``) extended with ``d`` and ``w``, to seconds.

    A bare number is seconds, so ``retention: 3600`` means what it says.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 5s or 7d, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text!r}")
        return float(text)
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"expected a duration such as 5s or 7d, got {text!r}")
    return total


# --- zones and conversions ------------------------------------------------------------------------------

def zone(name: str | None) -> dt.tzinfo:
    """A project's zone by IANA name; an unknown name falls back to UTC rather than failing every query
    (the CLI validates names when a project is created)."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def to_ns(t: dt.datetime) -> int:
    """Exact integer nanoseconds since the epoch of an aware datetime (no float rounding)."""
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def from_ns(ns: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    """The aware datetime (microseconds; sub-microsecond digits dropped) of `ns` in zone `tz`."""
    return (_EPOCH + dt.timedelta(microseconds=ns // 1000)).astimezone(tz)


def iso(ns: int, tz: dt.tzinfo = UTC) -> str:
    """ISO 8601 in zone `tz` with its offset (UTC written with `Z`), microseconds only when non-zero."""
    text = from_ns(ns, tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_SLOT_NS = 900 * NS  # zone offsets change on quarter hours (checked per slot below, not assumed)


def iso_many(ns: "np.ndarray | list[int]", tz: dt.tzinfo = UTC) -> list[str]:
    """`[iso(t, tz) for t in ns]`, the same texts, with the zone asked once per quarter hour instead of once
    per instant and the wall clock formatted by numpy (a 1,441-bucket timeline: ~10x faster)."""
    arr = np.asarray(ns, dtype=np.int64)
    if arr.size == 0:
        return []
    slots, where = np.unique(arr // _SLOT_NS, return_inverse=True)
    offsets = np.empty(len(slots), np.int64)
    exact = np.zeros(len(slots), bool)  # the offset changes inside the slot: format its instants one by one
    for i, slot in enumerate(slots.tolist()):
        first, last = _offset_seconds(slot * _SLOT_NS, tz), _offset_seconds((slot + 1) * _SLOT_NS - 1, tz)
        offsets[i] = first
        exact[i] = first != last or first % 60 != 0
    offset = offsets[where]
    micro = (arr // 1000) % 1_000_000
    wall = np.datetime_as_string(((arr // 1000 - micro) // 1_000_000 + offset).astype("datetime64[s]"), unit="s")
    out = []
    for i, (text, off, us, one_by_one) in enumerate(zip(wall.tolist(), offset.tolist(), micro.tolist(),
                                                       exact[where].tolist())):
        if one_by_one:
            out.append(iso(int(arr[i]), tz))
            continue
        if us:
            text += f".{us:06d}"
        if off == 0:
            out.append(text + "Z")
        else:
            sign, hm = ("-", -off) if off < 0 else ("+", off)
            out.append(f"{text}{sign}{hm // 3600:02d}:{hm % 3600 // 60:02d}")
    return out


def _offset_seconds(ns: int, tz: dt.tzinfo) -> int:
    off = from_ns(ns, tz).utcoffset()
    return int(off.total_seconds()) if off else 0


def iso_utc(ns: int, digits: int = 6) -> str:
    """ISO 8601 UTC with exactly `digits` (1-9) fraction digits and a Z (PostHog tracing's span times)."""
    secs, frac = divmod(ns, NS)
    return f"{_utc_seconds(secs)}.{str(frac).zfill(9)[:digits]}Z"


@lru_cache(maxsize=4096)
def _utc_seconds(secs: int) -> str:  # spans of a page share their seconds; formatting dominates rendering
    return (_EPOCH + dt.timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")


# --- instants --------------------------------------------------------------------------------------------

_ISO_NS = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})[.,](\d{1,9})(Z|z|[+-]\d{2}(?::?\d{2})?)?$")
_DATE_UNPADDED = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")  # PostHog's strptime("%Y-%m-%d") fallback


def parse_iso(text: str, default_tz: dt.tzinfo = UTC) -> int | None:
    """ISO 8601 → nanoseconds (all nine fraction digits kept), or None when `text` is not ISO 8601.
    A datetime without an offset, or a bare date (its midnight), is read in `default_tz`."""
    text = text.strip()
    frac = 0
    m = _ISO_NS.match(text)
    try:
        if m:  # more digits than datetime holds: parse the seconds, keep the fraction as an integer
            parsed = dt.datetime.fromisoformat(m.group(1) + (m.group(3) or "").upper())
            frac = int(m.group(2).ljust(9, "0"))
        elif (d := _DATE_UNPADDED.match(text)) is not None:
            parsed = dt.datetime(int(d.group(1)), int(d.group(2)), int(d.group(3)))
        else:
            parsed = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz)
    try:
        return to_ns(parsed) + frac
    except OverflowError:
        return None


_RELATIVE = re.compile(r"^-?(\d{1,9})?([smhdwqyM])(Start|End)?$")
_FIXED_NS = {"s": NS, "M": 60 * NS, "h": 3600 * NS}
_START_OF_DAY = {"hour": 0, "minute": 0, "second": 0, "microsecond": 0}
_END_OF_DAY = {"hour": 23, "minute": 59, "second": 59, "microsecond": 999_999}


def _calendar_delta(unit: str, n: int, position: str | None) -> relativedelta:
    """PostHog's `get_delta_mapping_for`, with the time-of-day truncation of `m`/`y` (module docstring)."""
    if unit == "d":
        extra = _START_OF_DAY if position == "Start" else _END_OF_DAY if position == "End" else {}
        return relativedelta(days=n, **extra)
    if unit == "w":
        return relativedelta(weeks=n)
    if unit == "q":
        return relativedelta(weeks=13 * n)
    if unit == "m":
        if position == "Start":
            return relativedelta(months=n, day=1, **_START_OF_DAY)
        if position == "End":
            return relativedelta(months=n, day=31, **_END_OF_DAY)
        return relativedelta(months=n)
    # y
    if position == "Start":
        return relativedelta(years=n, month=1, day=1, **_START_OF_DAY)
    if position == "End":
        return relativedelta(years=n, day=31, **_END_OF_DAY)
    return relativedelta(years=n)


def parse_relative(text: str, tz: dt.tzinfo, now_ns: int) -> int | None:
    """A PostHog relative date (module docstring) → nanoseconds, or None when `text` is not one.
    Raises TimeError when it is one but lands outside the representable range."""
    m = _RELATIVE.match(text.strip())
    if m is None or (m.group(1) is None and m.group(3) is None):
        return None
    n, unit, position = int(m.group(1) or 0), m.group(2), m.group(3)
    try:
        if unit in _FIXED_NS:
            ns = now_ns - n * _FIXED_NS[unit]
            if unit != "h" or position is None:
                return ns
            local = from_ns(ns, tz)
            local = local.replace(minute=0, second=0, microsecond=0) if position == "Start" \
                else local.replace(minute=59, second=59, microsecond=999_999)
            return to_ns(local)
        local = from_ns(now_ns, tz) - _calendar_delta(unit, n, position)
        # Without a suffix the result keeps now's sub-microsecond digits, as the fixed units do.
        return to_ns(local) + (now_ns % 1000 if position is None or unit in "wq" else 0)
    except (OverflowError, ValueError) as e:
        raise TimeError(f"{text!r} is out of range") from e


def check_range(ns: int, value: object) -> int:
    """`ns` when otelite can store it (MIN_NS..MAX_NS, years 1677 to 2262), else TimeError."""
    if not MIN_NS <= ns <= MAX_NS:
        raise TimeError(f"{value!r} is outside the times otelite can store (1677-09-21 to 2262-04-11 UTC)")
    return ns


def parse_time(value: object, tz: dt.tzinfo, now_ns: int, *, naive_tz: dt.tzinfo | None = None) -> int:
    """`now`, a PostHog relative date or an ISO 8601 datetime → nanoseconds since the epoch. Relative
    dates are computed in `tz` (the project's zone); a datetime without an offset is read in `naive_tz`,
    by default `tz` too. A time outside MIN_NS..MAX_NS is a TimeError, like an unreadable one."""
    if not isinstance(value, str):
        raise TimeError(f"expected an ISO datetime or a relative date such as -1h, got {value!r}")
    text = value.strip()
    if text.lower() == "now":
        return now_ns
    relative = parse_relative(text, tz, now_ns)
    if relative is not None:
        return check_range(relative, value)
    ns = parse_iso(text, tz if naive_tz is None else naive_tz)
    if ns is None:
        raise TimeError(f"{value!r} is neither an ISO datetime nor a relative date (-30M minutes, -6h, -7d, "
                        f"-2w, -3m months, -1y, -1dStart)")
    return check_range(ns, value)
