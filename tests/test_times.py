"""collector/times.py: ISO 8601 and PostHog's relative dates, as PostHog's `relative_date_parse` reads them
(its own test cases first), in a project's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from otelite.collector.times import NS, UTC, TimeError, iso, iso_utc, parse_iso, parse_time, to_ns

PARIS = ZoneInfo("Europe/Paris")


def at(*args, tz=UTC) -> int:
    return to_ns(dt.datetime(*args, tzinfo=tz))


def day(ns: int, tz=UTC) -> str:
    return iso(ns, tz)[:10]


# PostHog's posthog/test/test_utils.py (TestRelativeDateParse), frozen at 2020-01-31.
@pytest.mark.parametrize("text, expected", [
    ("dStart", "2020-01-31"), ("-1d", "2020-01-30"), ("-2d", "2020-01-29"),
    ("-1m", "2019-12-31"), ("-2m", "2019-11-30"),
    ("mStart", "2020-01-01"), ("-1mStart", "2019-12-01"), ("-2mStart", "2019-11-01"),
    ("-1mEnd", "2019-12-31"), ("-2mEnd", "2019-11-30"),
    ("-1y", "2019-01-31"), ("-2y", "2018-01-31"), ("yStart", "2020-01-01"), ("-1yStart", "2019-01-01"),
])
def test_posthogs_own_cases(text, expected):
    assert day(parse_time(text, UTC, at(2020, 1, 31))) == expected


def test_minutes_are_capital_m_and_months_small_m():
    now = at(2025, 5, 15, 12, 0, 0) + 123  # sub-second digits are kept by relative dates without a suffix
    assert parse_time("-30M", UTC, now) == now - 30 * 60 * NS
    assert parse_time("30M", UTC, now) == now - 30 * 60 * NS  # the minus is optional, as in PostHog
    assert parse_time("-3m", UTC, now) == at(2025, 2, 15, 12) + 123
    assert parse_time("-90s", UTC, now) == now - 90 * NS
    assert parse_time("-6h", UTC, now) == now - 6 * 3600 * NS
    assert parse_time("-2w", UTC, now) == now - 14 * 86400 * NS
    assert parse_time("-1q", UTC, now) == now - 13 * 7 * 86400 * NS  # a quarter is 13 weeks
    assert parse_time("-1y", UTC, now) == at(2024, 5, 15, 12) + 123
    assert parse_time("now", UTC, now) == parse_time(" NOW ", UTC, now) == now


def test_start_and_end_in_the_projects_zone():
    # 00:30 in Paris on 31 March 2025 is still 30 March in UTC, and 30 March was a 23-hour day (DST).
    now = at(2025, 3, 31, 0, 30, tz=PARIS)
    assert parse_time("-1dStart", PARIS, now) == at(2025, 3, 30, tz=PARIS) == at(2025, 3, 29, 23)
    assert parse_time("-1dStart", UTC, now) == at(2025, 3, 29)
    assert parse_time("dStart", PARIS, now) == at(2025, 3, 31, tz=PARIS)
    assert parse_time("-1dEnd", PARIS, now) == at(2025, 3, 30, 23, 59, 59, 999_999, tz=PARIS)
    assert parse_time("-1mStart", PARIS, now) == at(2025, 2, 1, tz=PARIS)  # the first of last month, 00:00
    assert parse_time("-1mEnd", PARIS, now) == at(2025, 2, 28, 23, 59, 59, 999_999, tz=PARIS)
    assert parse_time("yStart", PARIS, now) == at(2025, 1, 1, tz=PARIS)
    assert parse_time("-1yEnd", PARIS, now) == at(2024, 3, 31, 23, 59, 59, 999_999, tz=PARIS)  # PostHog: day 31 only
    kolkata = ZoneInfo("Asia/Kolkata")
    assert parse_time("-2hStart", kolkata, at(2025, 1, 1, 10, 40, tz=kolkata)) == at(2025, 1, 1, 8, tz=kolkata)
    assert parse_time("hEnd", kolkata, at(2025, 1, 1, 10, 40, tz=kolkata)) == \
        at(2025, 1, 1, 10, 59, 59, 999_999, tz=kolkata)
    # w and q ignore the suffix, as PostHog does.
    assert parse_time("-1wStart", PARIS, now) == parse_time("-1w", PARIS, now)


def test_calendar_units_follow_the_wall_clock_fixed_units_do_not():
    noon = at(2025, 3, 30, 12, tz=PARIS)  # the DST day: 23 hours long
    assert parse_time("-1d", PARIS, noon) == at(2025, 3, 29, 12, tz=PARIS) == noon - 23 * 3600 * NS
    assert parse_time("-24h", PARIS, noon) == noon - 24 * 3600 * NS
    assert parse_time("-1h", PARIS, at(2025, 3, 30, 3, 30, tz=PARIS)) == at(2025, 3, 30, 3, 30, tz=PARIS) - 3600 * NS


def test_iso_instants():
    assert parse_time("2023-11-14T22:13:20.000000007Z", UTC, 0) == at(2023, 11, 14, 22, 13, 20) + 7
    assert parse_time("2023-11-14T23:13:20+01:00", PARIS, 0) == at(2023, 11, 14, 22, 13, 20)
    assert parse_time("2023-11-14T23:13:20", PARIS, 0) == at(2023, 11, 14, 22, 13, 20)  # naive: the zone's
    assert parse_time("2023-11-14T23:13:20", PARIS, 0, naive_tz=UTC) == at(2023, 11, 14, 23, 13, 20)
    assert parse_time("2023-11-14", PARIS, 0) == at(2023, 11, 14, tz=PARIS)
    assert parse_time("2021-1-5", UTC, 0) == at(2021, 1, 5)  # PostHog's unpadded date fallback
    assert parse_iso("not a date") is None
    assert iso_utc(at(2023, 11, 14) + 7, 9) == "2023-11-14T00:00:00.000000007Z"


@pytest.mark.parametrize("text", ["yesterday", "-5H", "-h", "d", "-1x", "-5 m", "--1d", "", "12:00", "2023-13-01",
                                  5, None, True])
def test_rejected(text):
    with pytest.raises(TimeError):
        parse_time(text, UTC, at(2025, 1, 1))


def test_out_of_range_is_an_error_not_a_crash():
    with pytest.raises(TimeError, match="out of range"):
        parse_time("-999999999y", UTC, at(2025, 1, 1))


def test_iso_many_writes_what_iso_writes():
    """The vectorized form (Trifle's bucket lists) against iso() itself: random instants, sub-second
    digits, DST changes, half-hour and odd historical offsets (Monrovia's -00:44:30 before 1972)."""
    import random

    from otelite.collector.times import iso_many, zone
    rng = random.Random(3)
    around_dst = [1_774_746_000 * NS + k * 60 * NS for k in range(-200, 200)]  # Berlin, 29 March 2026
    for name in ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
                 "Europe/London", "Africa/Monrovia"):
        tz = zone(name)
        instants = [rng.randrange(-2 * 10**9, 4 * 10**9) * NS + rng.choice([0, rng.randrange(NS)])
                    for _ in range(1000)] + around_dst
        assert iso_many(instants, tz) == [iso(t, tz) for t in instants], name
    assert iso_many([], UTC) == []


@pytest.mark.parametrize("text", ["0338-01-01T02:02:00Z", "9999-12-31T00:00:00Z", "1677-01-01", "-500y"])
def test_times_a_nanosecond_int64_cannot_hold_are_errors(text):
    # The store keeps times as 64-bit nanoseconds (1677-09-21 to 2262-04-11); outside, SQLite overflowed.
    with pytest.raises(TimeError, match="outside the times otelite can store"):
        parse_time(text, UTC, at(2025, 1, 1))
    assert parse_time("2262-01-01", UTC, at(2025, 1, 1)) > 0 and parse_time("1678-01-01", UTC, at(2025, 1, 1)) < 0
