"""Bucket grids: where the buckets of a query start, fixed-width or calendar-aligned in a project's zone.

A grid answers `edges(start_ns, end_ns)`: the start of every bucket from the one holding `start_ns` up to
`end_ns`, plus the end of the last one, so `edges[i] <= t < edges[i + 1]` is bucket i and the last edge
is the first bucket boundary at or after `end_ns`. Bucket lengths may differ (a DST day has 23 or 25
hours, months differ); a rate divides by each bucket's own length.

- `FixedGrid(step_ns, zone)`: equal lengths, aligned to multiples of the step in local time at the start
  of the range (PostHog's sub-day intervals; Flux's `Ns|Nm|Nh|Nd` intervals with zone UTC).
- `CalendarGrid(count, unit, zone)`: Trifle's granularities `Ns Nm Nh Nd Nw Nmo Nq Ny` (trifle.md,
  "Granularity"): buckets are aligned in the zone from the start of the next-larger unit and re-floored
  at each of its boundaries: `Ns` within the minute (`7s`: :00 :07 … :56, then :00), `Nm` within the
  hour (`33m`: :00 and :33), `Nh` within the day, `Nd` by day of the year from 1 January, `Nw` in whole
  weeks from the year's first Monday (the days before it form a bucket starting 1 January), `Nmo` by
  month from January, `Nq` by quarter from January, `Ny` years floored to a multiple of N. Local wall
  times that do not exist (a spring-forward gap) start no bucket; a wall time that occurs twice (the
  repeated hour in autumn) starts two, one per offset.
  `CalendarGrid(1, "w", zone, iso_weeks=True)` is the plain Monday week that runs across New Year
  (PostHog's `week`); `CalendarGrid(1, "d", zone)` is the local day.
"""

from __future__ import annotations

import datetime as dt
import math
from abc import ABC, abstractmethod

import numpy as np

from otelite.collector.store import budget
from otelite.collector.times import NS, UTC, from_ns, to_ns

_DAY_S = 86400
_UNITS = ("s", "m", "h", "d", "w", "mo", "q", "y")
# Nominal length of one unit (seconds): what a look-back or an automatic choice plans with.
_NOMINAL_S = {"s": 1, "m": 60, "h": 3600, "d": _DAY_S, "w": 7 * _DAY_S, "mo": 2_629_746, "q": 7_889_238,
              "y": 31_556_952}
# Shortest length of one unit and of its parent (seconds), for an upper bound on bucket counts.
_SHORTEST_S = {"s": 1, "m": 60, "h": 3600, "d": 23 * 3600, "w": 7 * _DAY_S - 3600, "mo": 28 * _DAY_S - 3600,
               "q": 89 * _DAY_S - 3600, "y": 365 * _DAY_S - 3600}
_PARENT_SHORTEST_S = {"s": 60, "m": 3600, "h": 23 * 3600, "d": 365 * _DAY_S, "w": 365 * _DAY_S,
                      "mo": 365 * _DAY_S, "q": 365 * _DAY_S, "y": math.inf}
_EPOCH_DATE = dt.date(1970, 1, 1)


class Grid(ABC):
    """Where buckets start. Subclasses are immutable values."""

    @property
    @abstractmethod
    def nominal_ns(self) -> int:
        """A typical bucket length (a look-back for increases is at least this)."""

    @abstractmethod
    def edges(self, start_ns: int, end_ns: int) -> np.ndarray:
        """int64 bucket edges covering [start_ns, end_ns) (module docstring); at least two."""

    @abstractmethod
    def approx_buckets(self, start_ns: int, end_ns: int) -> int:
        """An upper bound on len(edges(start_ns, end_ns)) - 1, computed without building the grid."""

    def floor(self, ns: int) -> int:
        """The start of the bucket holding `ns`."""
        return int(self.edges(ns, ns + 1)[0])

    def bucket_end(self, ns: int) -> int:
        """The end of the bucket holding `ns` (the next bucket's start)."""
        return int(self.edges(ns, ns + 1)[1])


class FixedGrid(Grid):
    """Buckets of `step_ns`, starting at `origin_ns` + k·step in `zone`'s local time at the range start
    (so hours start at local whole hours in a half-hour zone); a DST change inside the range keeps the
    alignment of the range start. `origin_ns` (default the epoch) shifts the alignment, like TimescaleDB's
    `time_bucket(..., origin)`."""

    def __init__(self, step_ns: int, zone: dt.tzinfo = UTC, origin_ns: int = 0) -> None:
        if step_ns <= 0:
            raise ValueError("a bucket must be longer than zero")
        self.step_ns, self.zone, self.origin_ns = int(step_ns), zone, int(origin_ns)

    def __repr__(self) -> str:
        return f"FixedGrid({self.step_ns}, {self.zone}, origin_ns={self.origin_ns})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FixedGrid) and \
            (self.step_ns, self.zone, self.origin_ns) == (other.step_ns, other.zone, other.origin_ns)

    def __hash__(self) -> int:
        return hash((self.step_ns, str(self.zone), self.origin_ns))

    @property
    def nominal_ns(self) -> int:
        return self.step_ns

    def edges(self, start_ns: int, end_ns: int) -> np.ndarray:
        step = self.step_ns
        offset = from_ns(start_ns, self.zone).utcoffset()
        offset_ns = int(offset.total_seconds()) * NS if offset else 0
        local = start_ns + offset_ns - self.origin_ns
        first = local - (local % step) - offset_ns + self.origin_ns
        n = -(-(end_ns - first) // step)  # ceil
        return first + step * np.arange(max(n, 1) + 1, dtype=np.int64)

    def approx_buckets(self, start_ns: int, end_ns: int) -> int:
        return max(end_ns - start_ns, 0) // self.step_ns + 2


class CalendarGrid(Grid):
    """Trifle's calendar granularities in `zone` (module docstring)."""

    def __init__(self, count: int, unit: str, zone: dt.tzinfo = UTC, *, iso_weeks: bool = False) -> None:
        if unit not in _UNITS:
            raise ValueError(f"unknown calendar unit {unit!r}; expected one of {', '.join(_UNITS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"a bucket is at least one {unit}, got {count!r}")
        if iso_weeks and (unit, count) != ("w", 1):
            raise ValueError("iso_weeks applies to one-week buckets only")
        self.count, self.unit, self.zone, self.iso_weeks = count, unit, zone, iso_weeks

    def __repr__(self) -> str:
        return f"CalendarGrid({self.count}, {self.unit!r}, {self.zone}{', iso_weeks=True' if self.iso_weeks else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CalendarGrid) and \
            (self.count, self.unit, self.zone, self.iso_weeks) == (other.count, other.unit, other.zone, other.iso_weeks)

    def __hash__(self) -> int:
        return hash((self.count, self.unit, str(self.zone), self.iso_weeks))

    @property
    def nominal_ns(self) -> int:
        return self.count * _NOMINAL_S[self.unit] * NS

    def approx_buckets(self, start_ns: int, end_ns: int) -> int:
        span_s = max(end_ns - start_ns, 0) / NS
        n = span_s / (self.count * _SHORTEST_S[self.unit]) + span_s / _PARENT_SHORTEST_S[self.unit] + 3
        if self.unit in ("s", "m", "h"):  # the repeated hour of a DST change starts its buckets twice
            n += 3600 / (self.count * _NOMINAL_S[self.unit]) + 1
        return int(n) + 1

    def edges(self, start_ns: int, end_ns: int) -> np.ndarray:
        end_ns = max(end_ns, start_ns + 1)
        if self.unit in ("s", "m", "h"):
            return self._sub_day_edges(start_ns, end_ns)
        return self._date_edges(start_ns, end_ns)

    # -- units of a day or longer: bucket starts are local midnights of dates -------------------------------
    def _midnight(self, day: dt.date) -> int:
        # fold=0: where midnight does not exist (a DST change at midnight) the day starts at the first
        # instant after the gap, which is what this gives.
        return to_ns(dt.datetime.combine(day, dt.time(0), tzinfo=self.zone))

    def _floor_date(self, day: dt.date) -> dt.date:
        n, unit = self.count, self.unit
        if unit == "d":
            jan1 = dt.date(day.year, 1, 1)
            return jan1 + dt.timedelta(days=(day - jan1).days // n * n)
        if unit == "w":
            if self.iso_weeks:
                return day - dt.timedelta(days=day.weekday())
            jan1 = dt.date(day.year, 1, 1)
            monday = jan1 + dt.timedelta(days=(7 - jan1.weekday()) % 7)  # the year's first Monday
            if day < monday:
                return jan1
            return monday + dt.timedelta(days=(day - monday).days // (7 * n) * 7 * n)
        if unit == "mo":
            return dt.date(day.year, (day.month - 1) // n * n + 1, 1)
        if unit == "q":
            return dt.date(day.year, (day.month - 1) // 3 // n * n * 3 + 1, 1)
        return dt.date(max(day.year // n * n, 1), 1, 1)  # y

    def _next_date(self, start: dt.date) -> dt.date:
        """The bucket start after bucket start `start`: +N units, re-floored at the next 1 January."""
        n, unit = self.count, self.unit
        if unit == "y":
            return dt.date(start.year + n, 1, 1)
        next_year = dt.date(start.year + 1, 1, 1)
        if unit == "d":
            candidate = start + dt.timedelta(days=n)
        elif unit == "w":
            if self.iso_weeks:
                return start + dt.timedelta(days=7)
            jan1 = dt.date(start.year, 1, 1)
            if start == jan1 and jan1.weekday() != 0:  # the days before the first Monday
                candidate = jan1 + dt.timedelta(days=7 - jan1.weekday())
            else:
                candidate = start + dt.timedelta(days=7 * n)
        else:
            months = n if unit == "mo" else 3 * n
            index = start.month - 1 + months
            candidate = next_year if index >= 12 else dt.date(start.year, index + 1, 1)
        return min(candidate, next_year)

    def _date_edges(self, start_ns: int, end_ns: int) -> np.ndarray:
        day = from_ns(start_ns, self.zone).date()
        current = self._floor_date(day)
        edge = self._midnight(current)
        if edge > start_ns:  # `start_ns` lies before its local date's first instant (a gap at midnight)
            current = self._floor_date(day - dt.timedelta(days=1))
            edge = self._midnight(current)
        out = [edge]
        while edge < end_ns or len(out) < 2:
            current = self._next_date(current)
            edge = self._midnight(current)
            out.append(edge)
        return np.asarray(out, dtype=np.int64)

    # -- units shorter than a day: local wall-clock times within each local day --------------------------------
    def _day_pattern(self) -> np.ndarray:
        """Bucket starts within a day, in seconds after local midnight, re-floored at each parent unit."""
        n = self.count
        if self.unit == "h":
            return np.arange(0, 24, n, dtype=np.int64) * 3600
        if self.unit == "m":
            return (np.arange(24, dtype=np.int64)[:, None] * 3600
                    + np.arange(0, 60, n, dtype=np.int64)[None, :] * 60).ravel()
        return (np.arange(1440, dtype=np.int64)[:, None] * 60 + np.arange(0, 60, n, dtype=np.int64)[None, :]).ravel()

    def _offset_s(self, ns: int) -> int:
        off = from_ns(ns, self.zone).utcoffset()
        return int(off.total_seconds()) if off else 0

    def _day_starts(self, day: dt.date, pattern: np.ndarray) -> np.ndarray:
        """UTC ns of the day's local bucket starts (wall times that do not exist left out, repeated ones
        twice)."""
        wall = ((day - _EPOCH_DATE).days * _DAY_S + pattern)  # local wall clock, as seconds "since epoch"
        u0 = self._midnight(day) // NS
        u1 = self._midnight(day + dt.timedelta(days=1)) // NS
        before, after = self._offset_s(u0 * NS), self._offset_s(u1 * NS - NS)
        if before == after and u1 - u0 == _DAY_S:
            return (wall - before) * NS
        # One offset change inside the day (zones change at most once a day): find its instant, then a
        # wall time exists under the old offset before it and under the new one from it on.
        lo, hi = u0, u1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset_s(mid * NS) == before:
                lo = mid
            else:
                hi = mid
        change = hi
        old = wall - before
        new = wall - after
        starts = np.concatenate([old[old < change], new[new >= change]])
        return np.unique(starts) * NS

    def _sub_day_edges(self, start_ns: int, end_ns: int) -> np.ndarray:
        pattern = self._day_pattern()
        first_day = from_ns(start_ns, self.zone).date() - dt.timedelta(days=1)
        last_day = from_ns(end_ns, self.zone).date() + dt.timedelta(days=1)
        n_days = (last_day - first_day).days + 1
        fixed = self.zone.utcoffset(None)  # set for UTC and fixed offsets: every day alike, no DST
        if fixed is not None:
            # Vectorized: walking day by day costs ~150 µs a day, 15 s for a 100,000-day range (issue 10).
            first = (first_day - _EPOCH_DATE).days
            wall = (first + np.arange(n_days, dtype=np.int64))[:, None] * _DAY_S + pattern[None, :]
            starts = (wall.ravel() - int(fixed.total_seconds())) * NS
        else:
            chunks = []
            for i in range(n_days):
                if i % 1024 == 0:
                    budget.check()  # the read's deadline (collector/store/budget.py): a long range of days
                chunks.append(self._day_starts(first_day + dt.timedelta(days=i), pattern))
            starts = np.concatenate(chunks)
        i0 = max(int(np.searchsorted(starts, start_ns, side="right")) - 1, 0)
        i1 = int(np.searchsorted(starts, end_ns, side="left"))
        return starts[i0:max(i1, i0 + 1) + 1]
