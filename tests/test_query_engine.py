"""The neutral metrics engine (collector/query) on a real store: rows go in through the writer, queries run
on a read connection with the store's point cache. Expected numbers are computed here with numpy or by
hand, independently of the engine's code."""

from __future__ import annotations

import datetime as dt
import string
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from otelite.collector.query.engine import evaluate, prepare
from otelite.collector.query.grid import CalendarGrid, FixedGrid
from otelite.collector.query.model import (Aggregation, BoundsMismatch, GroupKey, Query, TooManyBuckets,
                                           UnsupportedAggregation)
from otelite.collector.store.metrics import DISTRIBUTION, SET, LabelFilter, SeriesSelection
from otelite.collector.store.regex import RegexError
from otelite.collector.times import NS, to_ns
from store_rows import CUMULATIVE, DELTA, batch, open_store, write

MIN = 60 * NS
T0 = to_ns(dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc))  # a whole hour


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path)
    yield s
    s.close()


def run(store, name: str, agg: Aggregation, start: int = T0, end: int = T0 + 10 * MIN, grid=None, group_by=(),
        filters=(), metric_type=None, **kw):
    conn = store.reader()
    try:
        q = Query(SeriesSelection(1, name, metric_type, tuple(filters)), start, end, grid or FixedGrid(MIN), agg,
                  tuple(GroupKey(*g) if isinstance(g, tuple) else GroupKey(g) for g in group_by), **kw)
        return evaluate(conn, store.point_cache, q)
    finally:
        conn.close()


def by_bucket(result, labels: dict | None = None) -> dict[int, float]:
    """{bucket start ns: value} of the series with `labels` (the only one when None)."""
    series = [s for s in result.series if labels is None or s.labels == labels]
    assert len(series) == 1, [s.labels for s in result.series]
    s = series[0]
    return dict(zip(s.starts(result.edges).tolist(), s.values.tolist()))


# --- distributions: exact percentiles ------------------------------------------------------------------------

def _distribution(store, rng, name="lat", hosts=("a", "b", "c"), n=900):
    times = T0 + rng.integers(0, 10 * MIN, n)
    values = rng.lognormal(3, 1, n).round(6)
    host = rng.choice(list(hosts), n)
    write(store, batch(1, name, DISTRIBUTION, [(int(t), float(v), {"host": str(h)})
                                               for t, v, h in zip(times, values, host)]))
    return times, values, host


def test_percentiles_over_raw_values_match_numpy(store):
    rng = np.random.default_rng(11)
    times, values, host = _distribution(store, rng)
    bucket = (times - T0) // MIN
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999):
        got = by_bucket(run(store, "lat", Aggregation("quantile", q=q)))
        want = {T0 + m * MIN: float(np.percentile(values[bucket == m], 100 * q)) for m in range(10)}
        assert got.keys() == want.keys()
        for t in want:
            assert got[t] == pytest.approx(want[t], rel=1e-9, abs=1e-12), (q, t)
    # Per group, and narrowed by an RE2 filter.
    result = run(store, "lat", Aggregation("quantile", q=0.9), group_by=["host"],
                 filters=[LabelFilter.matches("host", "^[ab]$")])
    assert sorted(s.labels["host"] for s in result.series) == ["a", "b"]
    for h in "ab":
        got = by_bucket(result, {"host": h})
        for m in range(10):
            sel = (bucket == m) & (host == h)
            assert got[T0 + m * MIN] == pytest.approx(np.percentile(values[sel], 90), rel=1e-9)


def test_pooled_and_two_stage_reductions_match_numpy(store):
    rng = np.random.default_rng(12)
    times, values, host = _distribution(store, rng)
    bucket = (times - T0) // MIN
    pooled = {"sum": np.sum, "avg": np.mean, "min": np.min, "max": np.max, "count": len}
    for fn, ref in pooled.items():
        got = by_bucket(run(store, "lat", Aggregation(fn)))
        for m in range(10):
            assert got[T0 + m * MIN] == pytest.approx(float(ref(values[bucket == m])), rel=1e-12), fn
    # last: the reading with the latest time in the bucket, whichever series it is in.
    got = by_bucket(run(store, "lat", Aggregation("last")))
    for m in range(10):
        sel = np.flatnonzero(bucket == m)
        assert got[T0 + m * MIN] == values[sel[np.argmax(times[sel])]]
    # Two stages: each host's median, then the max across hosts.
    got = by_bucket(run(store, "lat", Aggregation("quantile", q=0.5, across="max")))
    for m in range(10):
        per_host = [np.percentile(values[(bucket == m) & (host == h)], 50) for h in "abc"]
        assert got[T0 + m * MIN] == pytest.approx(max(per_host), rel=1e-12)


# --- sets: distinct counts --------------------------------------------------------------------------------------

def _members(rng, n: int) -> list[str]:
    letters = np.array(list(string.ascii_lowercase[:8]))
    return ["".join(rng.choice(letters, 2)) for _ in range(n)]  # 64 possible members: many repeats


def test_distinct_count_of_set_members(store):
    rng = np.random.default_rng(13)
    n = 600
    times = T0 + rng.integers(0, 10 * MIN, n)
    members = _members(rng, n)
    region = rng.choice(["eu", "us"], n)
    members[0] = "42"  # a member that reads as a number stays text, distinct from 42.0
    write(store, batch(1, "users", SET, [(int(t), m, {"region": str(r)}) for t, m, r in zip(times, members, region)]))
    bucket = (times - T0) // MIN
    mem = np.array(members, dtype=object)

    def expected(sel):
        return {T0 + m * MIN: float(len(set(mem[sel & (bucket == m)]))) for m in range(10)
                if (sel & (bucket == m)).any()}

    assert by_bucket(run(store, "users", Aggregation("distinct"))) == expected(np.ones(n, bool))
    result = run(store, "users", Aggregation("distinct"), group_by=["region"])
    for r in ("eu", "us"):
        assert by_bucket(result, {"region": r}) == expected(region == r)
    # The whole range as one bucket: distinct members across series.
    whole = run(store, "users", Aggregation("distinct"), grid=FixedGrid(10 * MIN))
    assert by_bucket(whole) == {T0: float(len(set(members)))}
    # More rows later (the cache reads only the new rows and renumbers their members): still exact.
    later = T0 + rng.integers(0, 10 * MIN, 200)
    more = _members(rng, 200) + ["new-member"]
    write(store, batch(1, "users", SET, [(int(t), m, {"region": "eu"}) for t, m in zip(later, more)]
                       + [(T0 + 5, "new-member", {"region": "us"})]))
    everything = set(members) | set(more)
    assert by_bucket(run(store, "users", Aggregation("distinct"), grid=FixedGrid(10 * MIN))) == \
        {T0: float(len(everything))}


# --- increases from OTel start times -------------------------------------------------------------------------

def test_a_restarted_counter_counts_from_its_start_time(store):
    s1 = T0 - 30 * MIN  # the first process started well before the range and its look-back
    s2 = T0 + 2 * MIN + 10 * NS  # it restarted: new start time
    s3 = T0 + 3 * MIN + 20 * NS  # and again; the value after this restart is above the one before it
    points = [(T0 - MIN, 100, {}, s1), (T0 + 30 * NS, 110, {}, s1), (T0 + MIN + 30 * NS, 130, {}, s1),
              (T0 + 2 * MIN + 40 * NS, 7, {}, s2), (T0 + 3 * MIN + 10 * NS, 9, {}, s2),
              (T0 + 3 * MIN + 50 * NS, 25, {}, s3)]
    write(store, batch(1, "requests", "sum", points, temporality=CUMULATIVE, monotonic=True))
    inc = by_bucket(run(store, "requests", Aggregation("increase"), end=T0 + 5 * MIN))
    # minute 0: 110 - 100; minute 1: 20; minute 2: the first reading of the new start counts whole (7);
    # minute 3: 2, then 25 from its start (a drop test alone would have seen +16).
    assert inc == {T0: 10.0, T0 + MIN: 20.0, T0 + 2 * MIN: 7.0, T0 + 3 * MIN: 27.0}
    rate = by_bucket(run(store, "requests", Aggregation("rate"), end=T0 + 5 * MIN))
    assert rate == pytest.approx({t: v / 60 for t, v in inc.items()})


def test_first_reading_counts_only_when_its_start_lies_in_the_points_read(store):
    fresh = T0 + 3 * MIN  # an app that started during the range
    old = T0 - 3 * 3600 * NS  # one that started long before; its earlier readings are not read
    write(store, batch(1, "c", "sum", [(T0 + 3 * MIN + 30 * NS, 12, {"app": "fresh"}, fresh),
                                       (T0 + 4 * MIN + 30 * NS, 15, {"app": "fresh"}, fresh),
                                       (T0 + 3 * MIN + 30 * NS, 5000, {"app": "old"}, old),
                                       (T0 + 4 * MIN + 30 * NS, 5004, {"app": "old"}, old),
                                       # unknown start (start = time): the first reading is a baseline
                                       (T0 + 3 * MIN + 30 * NS, 70, {"app": "unknown"}, T0 + 3 * MIN + 30 * NS),
                                       (T0 + 4 * MIN + 30 * NS, 71, {"app": "unknown"}, T0 + 3 * MIN + 30 * NS)],
                       temporality=CUMULATIVE, monotonic=True))
    result = run(store, "c", Aggregation("increase"), group_by=["app"])
    assert by_bucket(result, {"app": "fresh"}) == {T0 + 3 * MIN: 12.0, T0 + 4 * MIN: 3.0}
    assert by_bucket(result, {"app": "old"}) == {T0 + 4 * MIN: 4.0}
    assert by_bucket(result, {"app": "unknown"}) == {T0 + 4 * MIN: 1.0}
    # Delta points are their own increases whatever their start.
    write(store, batch(1, "d", "sum", [(T0 + 10 * NS, 3, {}, T0), (T0 + 50 * NS, 4, {}, T0 + 10 * NS)],
                       temporality=DELTA, monotonic=True))
    assert by_bucket(run(store, "d", Aggregation("increase"))) == {T0: 7.0}


def test_a_short_lived_histogram_has_a_quantile(store):
    """One cumulative export of an app that ran for less than a bucket: its buckets count from its start."""
    bounds = [1.0, 2.0, 5.0]
    write(store, batch(1, "h", "histogram", [(T0 + 40 * NS, (bounds, [2, 6, 3, 0]), {"app": "short"}, T0 + 5 * NS),
                                             (T0 + 50 * NS, (bounds, [9, 9, 9, 9]), {"app": "old"}, T0 - 86400 * NS)],
                       temporality=CUMULATIVE))
    result = run(store, "h", Aggregation("histogram_quantile", q=0.5), group_by=["app"])
    # rank 5.5 of 11 lies in (1, 2] holding 6 after 2: 1 + (5.5 - 2) / 6.
    assert by_bucket(result, {"app": "short"}) == pytest.approx({T0: 1 + 3.5 / 6})
    assert [s.labels for s in result.series] == [{"app": "short"}]  # the old app: no earlier reading read


def test_observation_sum_count_and_mean_of_histograms(store):
    """observations / observation_sum: what each bucket's observations add up to, from the points' count
    and sum; a fall in count is a reset, a fall in sum alone is negative observations, not a reset."""
    b = [0.0]
    x = [(T0 - 30 * NS, (b, [1, 0], 5.0)), (T0 + 20 * NS, (b, [2, 1], 2.0)),  # 2 obs summing -3
         (T0 + MIN + 5 * NS, (b, [1, 0], 4.0))]  # count fell: a reset, 1 obs of 4
    y = [(T0 - 30 * NS, (b, [0, 0], 0.0)), (T0 + 40 * NS, (b, [0, 4], 40.0))]
    write(store, batch(1, "obs", "histogram", [(t, v, {"h": "x"}) for t, v in x] +
                       [(t, v, {"h": "y"}) for t, v in y], temporality=CUMULATIVE))
    assert by_bucket(run(store, "obs", Aggregation("observations", across="sum"), end=T0 + 2 * MIN)) == \
        {T0: 6.0, T0 + MIN: 1.0}
    assert by_bucket(run(store, "obs", Aggregation("observation_sum", across="sum"), end=T0 + 2 * MIN)) == \
        {T0: 37.0, T0 + MIN: 4.0}
    mean = run(store, "obs", Aggregation("observation_mean"), end=T0 + 2 * MIN)
    assert by_bucket(mean) == pytest.approx({T0: 37 / 6, T0 + MIN: 4.0})  # pooled, not a mean of means
    per_host = run(store, "obs", Aggregation("observation_mean"), end=T0 + 2 * MIN, group_by=["h"])
    assert by_bucket(per_host, {"h": "x"}) == pytest.approx({T0: -1.5, T0 + MIN: 4.0})
    write(store, batch(1, "gg", "gauge", [(T0, 1.0, {})]))
    with pytest.raises(UnsupportedAggregation):
        run(store, "gg", Aggregation("observations", across="sum"))


# --- grids, errors -----------------------------------------------------------------------------------------------

def test_calendar_buckets_in_a_zone(store):
    paris = ZoneInfo("Europe/Paris")
    days = [dt.datetime(2025, 3, d, h, tzinfo=paris) for d in (29, 30, 31) for h in (0, 23)]
    write(store, batch(1, "signups", "sum", [(to_ns(d), 1, {}) for d in days], temporality=DELTA))
    grid = CalendarGrid(1, "d", paris)
    got = by_bucket(run(store, "signups", Aggregation("sum"), start=to_ns(days[0]), end=to_ns(days[-1]) + 1,
                        grid=grid))
    assert got == {to_ns(dt.datetime(2025, 3, d, tzinfo=paris)): 2.0 for d in (29, 30, 31)}


def test_errors_are_typed(store):
    write(store, batch(1, "g", "gauge", [(T0, 1.0, {})]),
          batch(1, "hx", "histogram", [(T0, ([1.0], [1, 1]), {"k": "1"}), (T0, ([2.0], [1, 1]), {"k": "2"})],
                temporality=DELTA))
    with pytest.raises(UnsupportedAggregation):
        run(store, "g", Aggregation("histogram_quantile", q=0.5))
    with pytest.raises(BoundsMismatch):
        run(store, "hx", Aggregation("histogram_quantile", q=0.5))
    with pytest.raises(TooManyBuckets):
        run(store, "g", Aggregation("sum"), grid=FixedGrid(NS), max_buckets=100)
    with pytest.raises(RegexError):
        LabelFilter.matches("k", r"(a)\1")
    # A metric that does not exist: no type, no series; filters that match nothing: the type, no series.
    assert run(store, "nope", Aggregation("sum")).metric_type is None
    none = run(store, "g", Aggregation("sum"), filters=[LabelFilter.equals("k", ["x"])])
    assert none.metric_type == "gauge" and none.series == []


def test_prepare_once_group_many_ways(store):
    write(store, batch(1, "m", "gauge", [(T0 + 5 * NS, float(i), {"shard": str(i % 3), "zone": str(i % 2)})
                                         for i in range(6)]))
    conn = store.reader()
    try:
        from otelite.collector.query.engine import group
        q = Query(SeriesSelection(1, "m"), T0, T0 + MIN, FixedGrid(MIN), Aggregation("last", across="sum"))
        prepared = prepare(conn, store.point_cache, q)
        by_shard = group(conn, prepared, (GroupKey("shard"),))
        by_zone = group(conn, prepared, (GroupKey("zone"),), limit=1)
    finally:
        conn.close()
    assert {s.labels["shard"]: s.values.tolist() for s in by_shard.series} == {"0": [3.0], "1": [5.0], "2": [7.0]}
    assert [s.labels for s in by_zone.series] == [{"zone": "0"}]  # the group with the most series (tie: by label)


def test_combine_codes_groups_like_label_tuples():
    """combine_codes (label codes per key → groups) against grouping the label texts as tuples in Python,
    numbered by first appearance; a missing label and a literal "" are the same label."""
    from otelite.collector.query.engine import combine_codes
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, keys = int(rng.integers(0, 40)), int(rng.integers(1, 4))
        coded = []
        for _k in range(keys):
            values = [f"v{i}" for i in range(int(rng.integers(1, 5)))] + ([""] if rng.random() < 0.3 else [])
            rng.shuffle(values)
            coded.append((rng.integers(-1, len(values), n), values))
        names = [f"k{i}" for i in range(keys)]
        group, labels = combine_codes(coded, names)
        texts = [tuple(vals[c] if c >= 0 else "" for c, vals in ((int(codes[i]), vals) for codes, vals in coded))
                 for i in range(n)]
        index: dict[tuple, int] = {}
        want = [index.setdefault(t, len(index)) for t in texts]
        assert group.tolist() == want
        assert labels == [dict(zip(names, t)) for t in index]


def test_series_labels_codes_and_key_counts():
    """SeriesLabels (pure): the auto scope takes the point attribute, else the resource's; service_name
    falls back to service.name where the series has no label of that name; counts over a mask."""
    from otelite.collector.store.metrics import LabelRow, SeriesLabels
    p = lambda *xs: np.array(xs, np.int64)  # noqa: E731
    labels = SeriesLabels([
        LabelRow("region", "point", "eu", p(0)), LabelRow("region", "point", "us", p(1)),
        LabelRow("region", "resource", "ap", p(0, 1, 2)),
        LabelRow("service.name", "resource", "worker", p(0, 1, 3)), LabelRow("service.name", "resource", "cron", p(2)),
        LabelRow("service_name", "point", "own", p(3)),
    ], 5)
    codes, values = labels.codes("region")
    assert [values[c] if c >= 0 else None for c in codes] == ["eu", "us", "ap", None, None]
    codes, values = labels.codes("region", "resource")
    assert [values[c] if c >= 0 else None for c in codes] == ["ap", "ap", "ap", None, None]
    codes, values = labels.codes("service_name")
    assert [values[c] if c >= 0 else None for c in codes] == ["worker", "worker", "cron", "own", None]
    assert labels.key_counts() == [("region", 3, 3), ("service.name", 4, 2), ("service_name", 4, 3)]
    assert labels.key_counts(np.array([True, True, False, False, False])) == [
        ("region", 2, 2), ("service.name", 2, 1), ("service_name", 2, 1)]
    assert SeriesLabels([], 3).key_counts() == [] and SeriesLabels([], 3).codes("x")[0].tolist() == [-1, -1, -1]
