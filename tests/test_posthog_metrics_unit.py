"""Pure parts of the PostHog metrics package (api/posthog/metrics/) and the engine pieces it relies on:
formula, relative times and interval grids, quantile interpolation, and the store's point cache on a real
SQLite file (the onset detector: test_changepoint.py)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from otelite.api.posthog.metrics import formula
from otelite.api.posthog.metrics.intervals import auto_interval, grid_for
from otelite.collector.query.reduce import prom_quantile, summary_quantile
from otelite.collector.store.compactor import expire_metrics
from otelite.collector.store.db import connect_reader, prepare_database
from otelite.collector.store.metrics import SeriesSelection, select_series
from otelite.collector.store.points import PointCache, ReadTransaction
from otelite.collector.times import NS, TimeError, iso, parse_time, to_ns

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 3, 30, 12, 0, 0, tzinfo=UTC)


# --- formula ------------------------------------------------------------------------------------------------

def test_formula_precedence_unary_and_division_by_zero():
    env = {"a": np.array([6.0, 0.0, 3.0]), "b": np.array([2.0, 5.0, 0.0])}
    ev = lambda text: formula.evaluate(formula.parse(text, {"a", "b"}), env).tolist()
    assert ev("a + b * 2") == [10.0, 10.0, 3.0]
    assert ev("(a + b) * 2") == [16.0, 10.0, 6.0]
    assert ev("-a - -b") == [-4.0, 5.0, -3.0]
    assert ev("a / b") == [3.0, 0.0, 0.0]  # 0/5 = 0, 3/0 → 0
    assert ev("b / a") == [2 / 6, 0.0, 0.0]  # 5/0 → 0
    assert ev("a - b - 1") == [3.0, -6.0, 2.0]  # left-associative
    assert ev("a / b / 0.5") == [6.0, 0.0, 0.0]
    assert ev("1e1 + .5") == 10.5  # constants only: a scalar, broadcast by the caller
    nan = formula.evaluate(formula.parse("a * b", {"a", "b"}), {"a": np.array([np.nan]), "b": np.array([1.0])})
    assert np.isnan(nan[0])


@pytest.mark.parametrize("text", ["", "a +", "(a", "a)", "a b", "a $ b", "c", "__import__('os')", "a ** b",
                                  "(" * 70 + "a" + ")" * 70])
def test_formula_rejects(text):
    with pytest.raises(formula.FormulaError):
        formula.parse(text, {"a", "b"})


# --- times and grid -----------------------------------------------------------------------------------------

def test_parse_time_relative_and_absolute():
    now = to_ns(NOW)
    t = lambda *args: to_ns(dt.datetime(*args, tzinfo=UTC))  # noqa: E731
    assert parse_time("-1h", UTC, now) == to_ns(NOW - dt.timedelta(hours=1))
    assert parse_time("-7d", UTC, now) == to_ns(NOW - dt.timedelta(days=7))
    assert parse_time("-15M", UTC, now) == to_ns(NOW - dt.timedelta(minutes=15))  # PostHog: M minutes, m months
    assert parse_time("-1m", UTC, now) == t(2025, 2, 28, 12)
    assert parse_time("-2w", UTC, now) == to_ns(NOW - dt.timedelta(weeks=2))
    assert parse_time("now", UTC, now) == now
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_time("2025-01-01T10:00:00", berlin, now) == t(2025, 1, 1, 9)
    assert parse_time("2025-01-01T10:00:00Z", berlin, now) == t(2025, 1, 1, 10)
    for bad in ("yesterday", "-1x", "", "2025-13-01"):
        with pytest.raises(TimeError):
            parse_time(bad, UTC, now)


def test_auto_interval_about_60_buckets():
    h = 3600 * NS
    assert auto_interval(h) == "minute"
    assert auto_interval(24 * h) == "minute_15"  # 96 buckets beat hour's 24 by ratio
    assert auto_interval(7 * 24 * h) == "hour_6"
    assert auto_interval(60 * NS) == "second"
    assert auto_interval(31 * 24 * h) == "day"


def grid(start_ns: int, end_ns: int, interval: str, tz) -> np.ndarray:
    return grid_for(interval, tz).edges(start_ns, end_ns)


def test_grid_snaps_down_and_follows_local_days():
    start = to_ns(dt.datetime(2025, 1, 1, 10, 7, 30, tzinfo=UTC))
    edges = grid(start, start + 10 * 60 * NS, "minute_5", UTC)
    assert [iso(int(e), UTC) for e in edges] == ["2025-01-01T10:05:00Z", "2025-01-01T10:10:00Z",
                                                  "2025-01-01T10:15:00Z", "2025-01-01T10:20:00Z"]
    # Europe/Berlin: local midnights, and the DST day (30 March 2025) is 23 hours long.
    berlin = ZoneInfo("Europe/Berlin")
    start = to_ns(dt.datetime(2025, 3, 29, 12, tzinfo=berlin))
    edges = grid(start, start + 2 * 86400 * NS, "day", berlin)
    assert [iso(int(e), berlin) for e in edges] == ["2025-03-29T00:00:00+01:00", "2025-03-30T00:00:00+01:00",
                                                     "2025-03-31T00:00:00+02:00", "2025-04-01T00:00:00+02:00"]
    assert np.diff(edges).tolist() == [24 * 3600 * NS, 23 * 3600 * NS, 24 * 3600 * NS]
    # Hours in a half-hour zone start at local whole hours.
    kolkata = ZoneInfo("Asia/Kolkata")
    edges = grid(to_ns(dt.datetime(2025, 1, 1, 10, 40, tzinfo=kolkata)), to_ns(dt.datetime(2025, 1, 1, 11, 5, tzinfo=kolkata)),
                 "hour", kolkata)
    assert iso(int(edges[0]), kolkata) == "2025-01-01T10:00:00+05:30"
    # Weeks start on Monday.
    edges = grid(to_ns(dt.datetime(2025, 1, 1, tzinfo=UTC)), to_ns(dt.datetime(2025, 1, 2, tzinfo=UTC)), "week", UTC)
    assert iso(int(edges[0]), UTC) == "2024-12-30T00:00:00Z"


# --- interpolation ------------------------------------------------------------------------------------------

def test_prom_quantile_matches_hand_computation():
    bounds = (1.0, 2.0, 5.0)
    counts = np.array([[2.0, 6.0, 3.0, 0.0],    # rank in the middle of (1, 2]
                       [0.0, 0.0, 0.0, 4.0],    # only overflow → the highest bound
                       [0.0, 0.0, 0.0, 0.0],    # no observations → NaN
                       [0.0, 4.0, 0.0, 4.0]])   # empty first bucket skipped
    out = prom_quantile(np.cumsum(counts, axis=1), bounds, 0.5)
    assert out[0] == pytest.approx(1 + (5.5 - 2) / 6)
    assert out[1] == 5.0
    assert np.isnan(out[2])
    assert out[3] == pytest.approx(2.0)  # rank 4 reaches the top of (1, 2]
    assert prom_quantile(np.cumsum(counts, axis=1), bounds, 0.1)[3] == pytest.approx(1 + 0.8 / 4)
    # A first bound at or below zero is returned as is (Prometheus).
    assert prom_quantile(np.array([[3.0, 3.0]]), (-1.0,), 0.5)[0] == -1.0


def test_summary_quantile_interpolates_and_clamps():
    levels = np.array([[0.5, 0.9, 0.99], [0.99, 0.5, np.nan]])
    values = np.array([[10.0, 20.0, 40.0], [8.0, 4.0, np.nan]])
    assert summary_quantile(levels, values, 0.9).tolist() == pytest.approx([20.0, 4 + 4 * 0.4 / 0.49])
    assert summary_quantile(levels, values, 0.1).tolist() == [10.0, 4.0]
    assert summary_quantile(levels, values, 0.999).tolist() == [40.0, 8.0]


# --- the point cache on a real SQLite file -----------------------------------------------------------------

def _insert(conn: sqlite3.Connection, sid: int, points: list[tuple[int, float]]) -> None:
    conn.execute("INSERT OR IGNORE INTO metric_series (id, project_id, name, type, temporality, is_monotonic, "
                 "resource_id, scope_id, attributes, first_seen_ns, last_seen_ns) VALUES (?, 1, 'm', 'gauge', 0, 0, 1, 1, ?, 0, 0)",
                 (sid, json.dumps({"k": str(sid)})))
    conn.executemany("INSERT INTO metric_points (project_id, series_id, time_ns, value) VALUES (1, ?, ?, ?)",
                     [(sid, t, v) for t, v in points])
    conn.commit()


def test_point_cache_reads_new_rows_and_drops_deleted_ones(tmp_path):
    path = str(tmp_path / "cache.db")
    prepare_database(path)
    writer = sqlite3.connect(path)
    _insert(writer, 7, [(100, 1.0), (200, 2.0)])
    reader = connect_reader(path)
    cache = PointCache()

    def load(t_from=0, t_to=10_000):
        with ReadTransaction(reader):
            series = select_series(reader, SeriesSelection(1, "m"))
            pts = cache.points(reader, series, t_from, t_to)
        return list(zip(pts.series_id.tolist(), pts.time.tolist(), pts.value.tolist()))

    assert load() == [(7, 100, 1.0), (7, 200, 2.0)]
    _insert(writer, 7, [(150, 1.5)])  # late, out of order
    _insert(writer, 8, [(120, 9.0)])  # a new series
    assert load() == [(7, 100, 1.0), (7, 150, 1.5), (7, 200, 2.0), (8, 120, 9.0)]
    assert load(t_from=140, t_to=200) == [(7, 150, 1.5)]
    expire_metrics(writer, 110, 1000)  # retention's step: its cutoff hides (7, 100), which it deletes
    writer.commit()
    assert writer.execute("SELECT count(*) FROM metric_points").fetchone() == (3,)
    assert load() == [(7, 150, 1.5), (7, 200, 2.0), (8, 120, 9.0)]
    writer.execute("DELETE FROM metric_points")  # everything gone, then rowids start over
    writer.commit()
    _insert(writer, 7, [(300, 3.0)])
    assert load() == [(7, 300, 3.0)]


def test_observation_mean_across_series_is_total_sum_over_total_count():
    """`avg` on histograms (issue 14 item 5): per (group, bucket) the sum of every observation over their
    number, whatever the order of the cells and with series left out of every group (group -1, as
    characterize's breakdowns do) — the weight branch of reduce.combine, merged by hand with the engine's
    sort-free reductions."""
    from otelite.collector.query.model import Aggregation
    from otelite.collector.query.reduce import Cells, combine

    # cells: (series, bucket, sum of observations, number of observations), deliberately out of order
    cells = [(2, 1, 30.0, 3.0), (0, 0, 10.0, 2.0), (1, 0, 5.0, 1.0), (0, 1, 0.0, 0.0), (3, 0, 99.0, 1.0),
             (1, 1, 8.0, 2.0)]
    sidx, b, total, number = (np.array(c) for c in zip(*cells))
    c = Cells(sidx.astype(np.int64), b.astype(np.int64), value=total, weight=number)
    group = np.array([0, 0, 1, -1])  # series 3 belongs to no group
    g, bucket, value = combine(c, group, Aggregation("observation_mean"), nb=2)
    got = {(int(x), int(y)): v for x, y, v in zip(g, bucket, value)}
    assert got[(0, 0)] == pytest.approx(15.0 / 3) and got[(0, 1)] == pytest.approx(8.0 / 2)
    assert got[(1, 1)] == pytest.approx(10.0) and (1, 0) not in got
    # every series in one group: the same totals, series 3 included
    g, bucket, value = combine(c, np.zeros(4, np.int64), Aggregation("observation_mean"), nb=2)
    got = {(int(x), int(y)): v for x, y, v in zip(g, bucket, value)}
    assert got == {(0, 0): pytest.approx(114.0 / 4), (0, 1): pytest.approx(38.0 / 5)}
    # a bucket whose cells recorded no observation has no mean
    lone = Cells(np.array([0]), np.array([0]), value=np.array([0.0]), weight=np.array([0.0]))
    assert np.isnan(combine(lone, np.zeros(1, np.int64), Aggregation("observation_mean"), nb=1)[2][0])
