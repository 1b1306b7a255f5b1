"""Bucket grids (collector/query/grid.py): Trifle's calendar granularities exactly as trifle.md says, in
UTC and in zones with DST, and fixed-width grids."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from otelite.collector.query.grid import CalendarGrid, FixedGrid
from otelite.collector.times import NS, UTC, iso, parse_iso, to_ns

PARIS = ZoneInfo("Europe/Paris")


def at(*args, tz=UTC) -> int:
    return to_ns(dt.datetime(*args, tzinfo=tz))


def starts(grid, start: int, end: int, tz=UTC) -> list[str]:
    """ISO bucket starts; the final edge (the end of the last bucket) as well."""
    return [iso(int(e), tz) for e in grid.edges(start, end)]


def test_33m_buckets_start_at_00_and_33_of_every_hour():
    g = CalendarGrid(33, "m")
    assert starts(g, at(2025, 1, 1, 10), at(2025, 1, 1, 12)) == [
        "2025-01-01T10:00:00Z", "2025-01-01T10:33:00Z", "2025-01-01T11:00:00Z", "2025-01-01T11:33:00Z",
        "2025-01-01T12:00:00Z"]
    assert g.floor(at(2025, 1, 1, 10, 59)) == at(2025, 1, 1, 10, 33)
    assert g.bucket_end(at(2025, 1, 1, 10, 40)) == at(2025, 1, 1, 11)


def test_seconds_within_the_minute_and_hours_within_the_day():
    assert starts(CalendarGrid(7, "s"), at(2025, 1, 1, 0, 0, 50), at(2025, 1, 1, 0, 1, 8)) == [
        "2025-01-01T00:00:49Z", "2025-01-01T00:00:56Z", "2025-01-01T00:01:00Z", "2025-01-01T00:01:07Z",
        "2025-01-01T00:01:14Z"]
    assert starts(CalendarGrid(5, "h"), at(2025, 1, 1, 16), at(2025, 1, 2, 6)) == [
        "2025-01-01T15:00:00Z", "2025-01-01T20:00:00Z", "2025-01-02T00:00:00Z", "2025-01-02T05:00:00Z",
        "2025-01-02T10:00:00Z"]


def test_weeks_across_new_year():
    # 2026 starts on a Thursday: 1-4 January form a bucket, then weeks from Monday 5 January.
    assert starts(CalendarGrid(1, "w"), at(2025, 12, 24), at(2026, 1, 13)) == [
        "2025-12-22T00:00:00Z", "2025-12-29T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z",
        "2026-01-12T00:00:00Z", "2026-01-19T00:00:00Z"]
    # 2w: counted from 2025's first Monday (6 January): 22 December is one; re-floored at New Year.
    assert starts(CalendarGrid(2, "w"), at(2025, 12, 23), at(2026, 1, 20)) == [
        "2025-12-22T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z",
        "2026-02-02T00:00:00Z"]
    # A year starting on Monday has no 1 January stub.
    assert CalendarGrid(1, "w").floor(at(2024, 1, 3)) == at(2024, 1, 1)
    # PostHog's week: Mondays, straight across New Year.
    assert starts(CalendarGrid(1, "w", iso_weeks=True), at(2025, 12, 30), at(2026, 1, 6)) == [
        "2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]


def test_days_months_quarters_years():
    # 10d: day of year floored to a multiple of 10 (27 December is day 361), re-floored at New Year.
    assert starts(CalendarGrid(10, "d"), at(2025, 12, 28), at(2026, 1, 12)) == [
        "2025-12-27T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z"]
    assert starts(CalendarGrid(5, "mo"), at(2025, 2, 10), at(2026, 2, 1)) == [
        "2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z", "2025-11-01T00:00:00Z", "2026-01-01T00:00:00Z",
        "2026-06-01T00:00:00Z"]
    assert starts(CalendarGrid(1, "q"), at(2025, 5, 10), at(2025, 12, 31)) == [
        "2025-04-01T00:00:00Z", "2025-07-01T00:00:00Z", "2025-10-01T00:00:00Z", "2026-01-01T00:00:00Z"]
    assert starts(CalendarGrid(2, "q"), at(2025, 8, 1), at(2026, 2, 1)) == [
        "2025-07-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-07-01T00:00:00Z"]
    assert starts(CalendarGrid(5, "q"), at(2025, 8, 1), at(2026, 2, 1)) == [
        "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"]
    assert starts(CalendarGrid(5, "y"), at(2023, 6, 1), at(2031, 1, 1)) == [
        "2020-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "2035-01-01T00:00:00Z"]


def test_an_offset_keeps_its_instant():
    # trifle.md: a track at 2026-02-24T20:30Z sent as +04:00 lands in the 02-24 bucket of a UTC project.
    t = parse_iso("2026-02-25T00:30:00+04:00")
    assert iso(CalendarGrid(1, "d").floor(t)) == "2026-02-24T00:00:00Z"


def test_dst_zone():
    hour = CalendarGrid(1, "h", PARIS)
    # Spring forward (30 March 2025, 02:00 → 03:00): no bucket starts at the missing 02:00.
    assert starts(hour, at(2025, 3, 30, 0, tz=PARIS), at(2025, 3, 30, 4, tz=PARIS), PARIS) == [
        "2025-03-30T00:00:00+01:00", "2025-03-30T01:00:00+01:00", "2025-03-30T03:00:00+02:00",
        "2025-03-30T04:00:00+02:00"]
    # Fall back (26 October 2025, 03:00 → 02:00): 02:00 starts two buckets, one per offset.
    assert starts(hour, at(2025, 10, 26, 1, tz=PARIS), at(2025, 10, 26, 3, tz=PARIS), PARIS) == [
        "2025-10-26T01:00:00+02:00", "2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00"]
    assert starts(CalendarGrid(30, "m", PARIS), at(2025, 3, 30, 1, tz=PARIS), at(2025, 3, 30, 3, 31, tz=PARIS),
                  PARIS) == ["2025-03-30T01:00:00+01:00", "2025-03-30T01:30:00+01:00", "2025-03-30T03:00:00+02:00",
                             "2025-03-30T03:30:00+02:00", "2025-03-30T04:00:00+02:00"]
    # Local days are 23 and 25 hours long across the changes.
    days = CalendarGrid(1, "d", PARIS).edges(at(2025, 3, 29, 12, tz=PARIS), at(2025, 3, 31, 1, tz=PARIS))
    assert np.diff(days).tolist() == [24 * 3600 * NS, 23 * 3600 * NS, 24 * 3600 * NS]
    days = CalendarGrid(1, "d", PARIS).edges(at(2025, 10, 26, 12, tz=PARIS), at(2025, 10, 26, 13, tz=PARIS))
    assert np.diff(days).tolist() == [25 * 3600 * NS]
    # A 1d bucket in Paris starts at local midnight, not at UTC midnight.
    assert iso(CalendarGrid(1, "d", PARIS).floor(at(2025, 6, 1, 23, 30)), PARIS) == "2025-06-02T00:00:00+02:00"
    # Months in a zone: local midnight of the 1st.
    assert starts(CalendarGrid(1, "mo", PARIS), at(2025, 3, 15), at(2025, 4, 15), PARIS) == [
        "2025-03-01T00:00:00+01:00", "2025-04-01T00:00:00+02:00", "2025-05-01T00:00:00+02:00"]


def test_half_hour_zone_hours():
    kolkata = ZoneInfo("Asia/Kolkata")
    for grid in (CalendarGrid(1, "h", kolkata), FixedGrid(3600 * NS, kolkata)):
        assert iso(grid.floor(at(2025, 1, 1, 10, 40, tz=kolkata)), kolkata) == "2025-01-01T10:00:00+05:30"


@pytest.mark.parametrize("grid", [CalendarGrid(7, "s", PARIS), CalendarGrid(33, "m", PARIS), CalendarGrid(5, "h", PARIS),
                                  CalendarGrid(10, "d", PARIS), CalendarGrid(1, "w", PARIS), CalendarGrid(3, "w"),
                                  CalendarGrid(5, "mo"), CalendarGrid(1, "q", PARIS), CalendarGrid(2, "y"),
                                  FixedGrid(300 * NS, PARIS)])
def test_edges_cover_the_range_and_the_bound_holds(grid):
    rng = np.random.default_rng(3)
    span = {"s": 600, "m": 86400, "h": 10 * 86400, "d": 400 * 86400, "w": 400 * 86400, "mo": 1500 * 86400,
            "q": 1500 * 86400, "y": 4000 * 86400}.get(getattr(grid, "unit", "m"), 86400)
    for _ in range(20):
        start = at(2025, 1, 1) + int(rng.integers(0, 365 * 86400)) * NS
        end = start + int(rng.integers(1, span)) * NS
        edges = grid.edges(start, end)
        assert edges[0] <= start < edges[1] and edges[-2] < end <= edges[-1]
        assert np.all(np.diff(edges) > 0)
        assert len(edges) - 1 <= grid.approx_buckets(start, end)
        # Every edge is a bucket start of its own: flooring it gives it back.
        for e in edges[:: max(len(edges) // 5, 1)]:
            assert grid.floor(int(e)) == int(e)


def test_fixed_grid_origin():
    assert starts(FixedGrid(7 * 60 * NS), at(2025, 1, 1, 0, 3), at(2025, 1, 1, 0, 10))[0] == iso(
        at(2025, 1, 1) - (at(2025, 1, 1) // NS % 420) * NS)  # epoch-aligned 7-minute buckets
    shifted = FixedGrid(7 * 60 * NS, origin_ns=at(2000, 1, 3))  # TimescaleDB's time_bucket origin
    edges = shifted.edges(at(2025, 1, 1, 0, 3), at(2025, 1, 1, 0, 10))
    assert all((int(e) - at(2000, 1, 3)) % (7 * 60 * NS) == 0 for e in edges)
    assert edges[0] <= at(2025, 1, 1, 0, 3) < edges[1]


def test_bad_grids_are_refused():
    for count, unit in ((0, "d"), (1, "x"), (-1, "h"), (1.5, "m")):
        with pytest.raises(ValueError):
            CalendarGrid(count, unit)
    with pytest.raises(ValueError):
        CalendarGrid(2, "w", iso_weeks=True)
    with pytest.raises(ValueError):
        FixedGrid(0)
