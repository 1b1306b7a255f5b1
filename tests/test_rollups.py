"""Metric rollups (collector/store/rollups.py, issue 16): a query that reads an hour's rollup answers
exactly what it answers from every point of the hour.

Real SQLite files, the real writer and compactor, OTLP requests through the normalizer. The data has what
makes increases hard: counter resets, restarts (a later start time), a start time that changes without a
restart, producers that send no start time, equal timestamps, NaN, fractional values, an up-down counter,
histogram resets, a NaN sum and a change of bucket bounds, exponential histograms, delta series; the queries cover
grids the quarter-hour cells fit (15 min, 30 min, hours, days, a +05:45 zone) and grids they do not (7 min,
a shifted origin), look-backs on and off the cell grid, late points and the head.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2

from otelite.collector.normalize.otlp import metrics_to_batch
from otelite.collector.query import engine, reduce
from otelite.collector.query.engine import evaluate
from otelite.collector.query.grid import CalendarGrid, FixedGrid
from otelite.collector.query.model import Aggregation, GroupKey, Query, QueryError
from otelite.collector.store import rollups
from otelite.collector.store.chunks import concat_blocks, decode
from otelite.collector.store.compactor import CLOSE_AFTER_NS, TARGET_POINTS, expire_metrics
from otelite.collector.store.db import connect_reader, connect_writer
from otelite.collector.query.reduce import series_cells
from otelite.collector.store.metrics import LabelFilter, SeriesSelection, SeriesSet
from otelite.collector.store import points as points_module
from otelite.collector.store.points import PointCache, Points

sys.path.insert(0, str(Path(__file__).parent))
from test_chunks import compact_everything, open_store  # noqa: E402  (the chunk tests' real-store helpers)

sys.path.insert(0, str(Path(__file__).parent / "testdata"))
from make_legacy_store import CUMULATIVE, DELTA, kvs  # noqa: E402

S = 10**9
MIN = 60 * S
HOUR = 3600 * S
T0 = 1_700_002_800 * S  # a whole hour (UTC)
STEPS = 330  # about 3.8 hours of readings, 41-53 s apart
CLOSED = T0 + 10 * HOUR  # "now" for the compactor: every written hour is closed


def when(k: int) -> int:
    return T0 + k * 41 * S + (k * 7919 % 13) * S


def _request_with_counter() -> tuple[ExportMetricsServiceRequest, object, object]:
    """A request of one resource and scope, with the monotonic cumulative sum r.requests (no points yet)."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(kvs({"service.name": "rollup"}))
    sm = rm.scope_metrics.add(scope=common_pb2.InstrumentationScope(name="meter"))
    requests = sm.metrics.add(name="r.requests")
    requests.sum.aggregation_temporality = CUMULATIVE
    requests.sum.is_monotonic = True
    return req, sm, requests


def request(k: int) -> ExportMetricsServiceRequest:
    t = when(k)
    req, sm, requests = _request_with_counter()
    # /a: a drop (reset) at 50, a restart (start after the previous reading) at 120.
    a_start = T0 if k < 120 else when(119) + S
    a_value = k * 3 if k < 50 else (k - 50) * 2 if k < 120 else k - 120
    requests.sum.data_points.add(start_time_unix_nano=a_start, time_unix_nano=t, as_int=a_value,
                                 attributes=kvs({"route": "/a"}))
    # /b: no start time at all, fractional (dyadic: sums are exact in any order) values, a drop at 200;
    # every flag bit OTel leaves undefined set (a client's own: stored as sent, not rollups.PLAIN_FIRST).
    requests.sum.data_points.add(time_unix_nano=t, as_double=(k if k < 200 else k - 200) * 0.75,
                                 attributes=kvs({"route": "/b"}), flags=0xFFFFFFFE)
    # /c: the start moves at 80 without passing the previous reading; equal times at 90; NaN at 150.
    c_start = T0 if k < 80 else T0 + 30 * S
    c = requests.sum.data_points.add(start_time_unix_nano=c_start, time_unix_nano=t, as_double=k * 5.0,
                                     attributes=kvs({"route": "/c"}))
    if k == 150:
        c.as_double = float("nan")
    if k == 90:
        requests.sum.data_points.add(start_time_unix_nano=c_start, time_unix_nano=t, as_double=k * 5.0 - 20,
                                     attributes=kvs({"route": "/c"}))
    queue = sm.metrics.add(name="r.queue")  # an up-down counter: its drops are not resets
    queue.sum.aggregation_temporality = CUMULATIVE
    queue.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, as_int=(k * 37 % 23) - 11)
    latency = sm.metrics.add(name="r.latency")
    latency.histogram.aggregation_temporality = CUMULATIVE
    for route, reset_at in (("/a", 100), ("/b", 10**9)):
        n = k if k < reset_at else k - reset_at
        counts = [n, 2 * n, n // 3, 1 if n else 0]
        latency.histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, count=sum(counts),
                                          sum=sum(counts) * 0.25 if (k, route) != (60, "/b") else float("nan"),
                                          explicit_bounds=[0.1, 0.5, 1.0], bucket_counts=counts,
                                          attributes=kvs({"route": route}))
    relayout = sm.metrics.add(name="r.relayout")  # its bounds change at 170
    relayout.histogram.aggregation_temporality = CUMULATIVE
    counts = [k, k, 1]
    relayout.histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, count=sum(counts),
                                       sum=float(k), explicit_bounds=[1.0, 2.0] if k < 170 else [1.0, 3.0],
                                       bucket_counts=counts)
    sizes = sm.metrics.add(name="r.sizes")
    sizes.exponential_histogram.aggregation_temporality = CUMULATIVE
    n = k if k < 140 else k - 140
    dp = sizes.exponential_histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, count=2 * n + 1,
                                                     sum=n * 2.5, scale=1, zero_count=1)
    dp.positive.offset = 2
    dp.positive.bucket_counts.extend([n, n])
    delta = sm.metrics.add(name="r.bytes")
    delta.sum.aggregation_temporality = DELTA
    # (a start time that stays and values that only grow: only the delta rule keeps every reading)
    delta.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, as_int=k + k % 7)
    return req


def late_request(k: int) -> ExportMetricsServiceRequest:
    """A reading of r.requests /a a second after step k's, of 1: a reset there and a jump back after it."""
    req, _, requests = _request_with_counter()
    requests.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=when(k) + S, as_int=1,
                                 attributes=kvs({"route": "/a"}))
    return req


def write(store, steps) -> None:
    for f in [store.writer.submit(metrics_to_batch(request(k), 1)) for k in steps]:
        f.result(timeout=30)


@pytest.fixture(scope="module")
def rolled(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rollups") / "r.db"
    store = open_store(path)
    write(store, range(STEPS))
    store.close()
    compact_everything(path, CLOSED)
    return path


CASES = [("r.requests", "rate", None), ("r.requests", "increase", None), ("r.queue", "increase", None),
         ("r.latency", "histogram_quantile", 0.9), ("r.latency", "observations", None),
         ("r.latency", "observation_sum", None), ("r.latency", "observation_mean", None),
         ("r.relayout", "histogram_quantile", 0.5), ("r.sizes", "histogram_quantile", 0.75),
         ("r.sizes", "observation_mean", None), ("r.bytes", "increase", None)]
PLUS_0545 = dt.timezone(dt.timedelta(hours=5, minutes=45))
GRIDS = [  # (grid, start, end, look-back)
    (FixedGrid(15 * MIN), T0 + 20 * MIN, T0 + 3 * HOUR + 50 * MIN, None),
    (FixedGrid(HOUR), T0 + HOUR, T0 + 3 * HOUR, None),
    (FixedGrid(30 * MIN), T0 + 7 * MIN, T0 + 4 * HOUR, 5 * MIN),  # a look-back off the cell grid
    (FixedGrid(HOUR, PLUS_0545), T0, T0 + 4 * HOUR, 2 * HOUR),
    (CalendarGrid(1, "d"), T0, T0 + 4 * HOUR, None),
    (FixedGrid(7 * MIN), T0 + 30 * MIN, T0 + 3 * HOUR, None),  # cells straddle buckets: no hour is rolled
    (FixedGrid(15 * MIN, origin_ns=5 * MIN), T0, T0 + 4 * HOUR, None),
    (FixedGrid(15 * MIN), T0 + 75 * MIN, T0 + 2 * HOUR + 22 * MIN, 15 * MIN),  # ends inside an hour
    # No look-back, from inside a rolled hour: its first readings from the start on are the baselines,
    # whatever came before them (rollups.PLAIN_FIRST: that hour keeps its plain firsts).
    (FixedGrid(15 * MIN), T0 + 75 * MIN, T0 + 3 * HOUR + 45 * MIN, 0),
]


def answer(conn, query: Query, use_rollups: bool, monkeypatch) -> object:
    with monkeypatch.context() as m:
        if not use_rollups:
            m.setattr(rollups, "applies", lambda fn, series: False)
        try:
            r = evaluate(conn, PointCache(), query)
        except QueryError as e:
            return type(e).__name__
    return [(s.labels, s.buckets.tolist(), np.where(np.isnan(s.values), -1.0, s.values).tolist()) for s in r.series]


def queries(grids=GRIDS, groupings=((), (GroupKey("route"),))):
    for name, fn, q in CASES:
        for grid, start, end, lookback in grids:
            across = "sum" if fn in ("rate", "increase", "histogram_quantile") else None
            for group_by in groupings:
                yield Query(SeriesSelection(1, name), start, end, grid, Aggregation(fn, q=q, across=across),
                            group_by=group_by, lookback_ns=lookback)


def read_sizes(conn, monkeypatch) -> list[tuple[int, int]]:
    """(readings the engine read with rollups, without) for each query."""
    sizes: list[tuple[int, int]] = []
    real = rollups.parts

    def spy(conn_, cache, series, lo, hi, edges):
        earlier, newest, key = real(conn_, cache, series, lo, hi, edges)
        sizes.append((len(earlier) + len(newest), len(PointCache().points(conn_, series, lo, hi))))
        return earlier, newest, key

    monkeypatch.setattr(engine.rollups, "parts", spy)
    return sizes


def test_every_query_answers_the_same_with_and_without_rollups(rolled, monkeypatch):
    conn = connect_reader(str(rolled))
    assert conn.execute("SELECT count(*) FROM metric_rollups").fetchone()[0] >= 4 * 4  # 4 metrics, 4 hours
    compared = errors = 0
    for query in queries():
        expected = answer(conn, query, False, monkeypatch)
        assert answer(conn, query, True, monkeypatch) == expected, query
        compared += 1
        errors += isinstance(expected, str)
    assert compared == len(CASES) * len(GRIDS) * 2
    assert 0 < errors < compared // 4  # r.relayout's mixed bounds, whichever way it is read


def test_a_query_ending_anywhere_in_a_quarter_hour_answers_as_from_every_reading(rolled, monkeypatch):
    """The quarter hour holding a query's end is read raw and collapsed to its readings before the end
    (rollups.collapsed) when that part of it lies in one bucket, and kept whole when a bucket edge cuts it
    (a grid off the quarter hours, buckets of 7 minutes): every end, minute by minute, answers as from
    every reading."""
    conn = connect_reader(str(rolled))
    grids = [FixedGrid(15 * MIN), FixedGrid(HOUR), FixedGrid(7 * MIN), FixedGrid(15 * MIN, origin_ns=5 * MIN),
             CalendarGrid(1, "d")]
    compared = 0
    for minute in range(121, 180, 4):  # the third hour, its quarter hours cut at many places
        end = T0 + minute * MIN + 17 * S
        for grid in grids:
            for name, fn, q in CASES:
                query = Query(SeriesSelection(1, name), T0 + 45 * MIN, end, grid,
                              Aggregation(fn, q=q, across="sum" if fn != "observation_mean" else None))
                assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch), \
                    (minute, grid, name, fn)
                compared += 1
    assert compared == 15 * len(grids) * len(CASES)


def test_one_cache_for_every_query_answers_as_a_fresh_one(rolled, monkeypatch):
    """The rolled part's cells are kept in the cache per grid, function, look-back and series (engine.py):
    every query asked twice, in between every other one, on one cache answers as with a cache of its own;
    and a repeated query finds its cells kept."""
    conn = connect_reader(str(rolled))
    shared = PointCache()
    # Fewer series of the same metric, and as many other ones: other cells each time.
    asked = list(queries()) + [
        dataclasses.replace(q, selection=SeriesSelection(1, q.selection.name, filters=(LabelFilter.equals("route", [r]),)))
        for r in ("/a", "/b") for q in queries()]
    expected = {}
    for query in asked:
        expected[query] = answer(conn, query, True, monkeypatch)
    kept = []
    real = shared.derived

    def derived(key, build):
        built = []
        value = real(key, lambda: built.append(1) or build())
        if key[0] == "cells":
            kept.append(not built)
        return value

    monkeypatch.setattr(shared, "derived", derived)
    rounds = []
    for _ in range(2):
        kept.clear()
        for query in asked:
            assert answer_with(conn, shared, query) == expected[query], query
        rounds.append(list(kept))
    # Built in the first round only (a grouping of the same cells finds them), all found in the second.
    assert False in rounds[0] and True in rounds[0] and rounds[1] and all(rounds[1])


def answer_with(conn, cache: PointCache, query: Query) -> object:
    try:
        r = evaluate(conn, cache, query)
    except QueryError as e:
        return type(e).__name__
    return [(s.labels, s.buckets.tolist(), np.where(np.isnan(s.values), -1.0, s.values).tolist()) for s in r.series]


def test_aligned_queries_read_fewer_readings_and_others_read_all(rolled, monkeypatch):
    conn = connect_reader(str(rolled))
    sizes = read_sizes(conn, monkeypatch)
    for grid, start, end, lookback in GRIDS:
        sizes.clear()
        evaluate(conn, PointCache(), Query(SeriesSelection(1, "r.latency"), start, end, grid,
                                           Aggregation("histogram_quantile", q=0.5, across="sum"), lookback_ns=lookback))
        (read, everything), = sizes
        if grid in (FixedGrid(7 * MIN), FixedGrid(15 * MIN, origin_ns=5 * MIN)):
            assert read == everything
        else:
            assert read < everything / 2, grid
    sizes.clear()  # a delta series in the selection: every reading (a delta reading is its own increase)
    evaluate(conn, PointCache(), Query(SeriesSelection(1, "r.bytes"), T0, T0 + 4 * HOUR, FixedGrid(HOUR),
                                       Aggregation("increase", across="sum")))
    assert sizes == []


def test_the_hour_holding_the_end_is_read_from_its_rollup_up_to_the_quarter_hour_of_the_end(rolled, monkeypatch):
    """A query that ends inside a rolled hour (a window ending now, or at the newest data) reads that
    hour's rollup up to the quarter hour holding its end, and only that quarter hour's readings raw, of
    which it keeps each series' first and last before the end (none after it is read): with the answer
    it gives from every reading, wherever in the hour the end falls."""
    conn = connect_reader(str(rolled))
    seen = []
    real = rollups.parts

    def spy(conn_, cache, series, lo, hi, edges):
        earlier, newest, key = real(conn_, cache, series, lo, hi, edges)
        seen.append((earlier, newest))
        return earlier, newest, key

    hour = T0 + 2 * HOUR
    for offset in (5 * MIN, 15 * MIN, 22 * MIN, 50 * MIN, HOUR - S):
        end = hour + offset
        quarter = end - end % (15 * MIN)  # (T0 is a whole hour: quarter hours of UTC)
        for name, fn, q in (("r.latency", "histogram_quantile", 0.9), ("r.requests", "rate", None),
                            ("r.sizes", "observation_mean", None)):
            query = Query(SeriesSelection(1, name), T0 + 30 * MIN, end, FixedGrid(15 * MIN),
                          Aggregation(fn, q=q, across="sum" if fn != "observation_mean" else None),
                          group_by=(GroupKey("route"),))
            expected = answer(conn, query, False, monkeypatch)
            seen.clear()
            loads = []
            with monkeypatch.context() as m:
                m.setattr(engine.rollups, "parts", spy)
                m.setattr(points_module, "_chunk_parts", lambda conn_, series, since, *a, **k:
                          loads.append(since) or real_chunk_parts(conn_, series, since, *a, **k))
                assert answer(conn, query, True, monkeypatch) == expected, (offset, fn)
            (earlier, newest), = seen
            # The trailing stretch is loaded from where the rollups stop, not from the start of its hour.
            assert loads[-1:] == ([quarter] if end != quarter else []), (offset, fn)
            raw = PointCache().points(conn, select_metric(conn, name), quarter, end)
            # (the end in the hour's first quarter: nothing of that hour is rolled; on a quarter hour: the
            # rollup answers the whole of it)
            assert (len(earlier) and earlier.time.max() < quarter) or offset < 15 * MIN, (offset, fn)
            # (and both readings of a pair that is not plain: r.requests resets)
            assert _first_and_last(raw) <= _readings(newest) <= _readings(raw), (offset, fn)
            assert (len(newest) == 0) == (end == quarter), (offset, fn)
            if name == "r.latency":
                assert _readings(newest) == _first_and_last(raw) and len(newest) < max(len(raw), 1), (offset, fn)


def _readings(p) -> set[tuple[int, int]]:
    return set(zip(p.series_id.tolist(), p.time.tolist()))


def _first_and_last(p) -> set[tuple[int, int]]:
    """(series, time) of each series' first and last reading in `p` (sorted by series and time)."""
    if not len(p):
        return set()
    change = np.flatnonzero(p.series_id[1:] != p.series_id[:-1])
    ends = np.concatenate(([0], change, change + 1, [len(p) - 1]))
    return set(zip(p.series_id[ends].tolist(), p.time[ends].tolist()))


real_chunk_parts = points_module._chunk_parts


def select_metric(conn, name: str) -> SeriesSet:
    from otelite.collector.store.metrics import select_series
    return select_series(conn, SeriesSelection(1, name))


def test_a_rollup_keeps_the_readings_increases_need(rolled):
    conn = connect_reader(str(rolled))
    rows = conn.execute("SELECT name, block_start, n, payload FROM metric_rollups WHERE name = 'r.requests' "
                        "ORDER BY block_start").fetchall()
    assert [b - T0 for _, b, _, _ in rows] == [0, HOUR, 2 * HOUR, 3 * HOUR]
    kept = {}
    for _, block_start, n, payload in rows:
        p = decode(payload, exact=False).points
        assert len(p) == n and (p.time // HOUR * HOUR == block_start).all()
        for sid, t in zip(p.series_id.tolist(), p.time.tolist()):
            kept.setdefault(sid, []).append(t)
    by_route = dict(conn.execute(
        "SELECT json_extract(attributes, '$.route'), id FROM metric_series WHERE name = 'r.requests'").fetchall())
    a = set(kept[by_route["/a"]])
    assert {when(49), when(50), when(119), when(120)} <= a  # both readings around the reset and the restart
    c = kept[by_route["/c"]]
    assert {when(79), when(80), when(149), when(150), when(151)} <= set(c)  # a start change; NaN's neighbours
    assert c.count(when(90)) == 2  # the drop between two readings of one time
    delta = conn.execute("SELECT sum(n) FROM metric_rollups WHERE name = 'r.bytes'").fetchone()[0]
    assert delta == STEPS  # a delta series keeps every reading
    cells = {(t - T0) // (15 * MIN) for t in a}
    quarters = (when(STEPS - 1) - T0) // (15 * MIN) + 1
    # Each quarter's first and last, and the pairs' other readings: around the reset and the restart, and
    # the second reading (the first one's start is its own time, so not known: reduce._restarts).
    assert cells == set(range(quarters)) and len(a) <= 2 * quarters + 5


def test_a_rollup_marks_its_plain_firsts_and_a_query_leaves_them_out_of_the_hours_after_its_start(rolled):
    """rollups.PLAIN_FIRST: the first reading of a quarter hour that is not its last, not in a pair that is
    not plain and not the first of its series in the hour. A query leaves them out of the hours that start
    at or after its look-back start (their predecessors are read); the hour holding that start keeps them.
    (That the answers stay those of every reading: the tests above.)"""
    conn = connect_reader(str(rolled))
    series = select_metric(conn, "r.requests")
    route_a = dict(conn.execute("SELECT json_extract(attributes, '$.route'), id FROM metric_series "
                                "WHERE name = 'r.requests'").fetchall())["/a"]
    odd = {when(k) for k in (0, 1, 49, 50, 119, 120)}  # the unknown start, the reset, the restart
    hours, flagged_by_hour, total = [], {}, 0
    for block_start, payload in conn.execute("SELECT block_start, payload FROM metric_rollups "
                                             "WHERE name = 'r.requests' ORDER BY block_start"):
        block = decode(payload, exact=False)
        p = block.points
        flagged = (block.flags & rollups.PLAIN_FIRST) != 0
        times = p.time[p.series_id == route_a].tolist()
        cells = [(t - T0) // (15 * MIN) for t in times]
        expected = [0 < i < len(times) - 1 and cells[i - 1] < cells[i] == cells[i + 1] and times[i] not in odd
                    for i in range(len(times))]
        assert flagged[p.series_id == route_a].tolist() == expected, block_start
        assert sum(expected) >= 2
        hours.append(block_start)
        flagged_by_hour[block_start] = set(zip(p.series_id[flagged].tolist(), p.time[flagged].tolist()))
        total += len(p)
    every_flagged = set().union(*flagged_by_hour.values())
    read = rollups._read_rolled(conn, series, hours, T0, T0 + 4 * HOUR)
    assert len(read) == total - len(every_flagged) and not _readings(read) & every_flagged
    lo = T0 + 5 * MIN  # inside the first hour
    read = _readings(rollups._read_rolled(conn, series, hours, lo, T0 + 4 * HOUR))
    first_hour = {r for r in flagged_by_hour[T0] if r[1] >= lo}
    assert first_hour and first_hour <= read and not read & (every_flagged - flagged_by_hour[T0])


def test_plain_firsts_are_first_but_not_last_of_their_quarter_hour_and_never_of_a_delta_series():
    minutes = [1, 5, 20, 31, 40, 50, 61, 2, 16, 17]  # series 1: quarter hours 0 0 1 2 2 3 4; series 2: 0 1 1
    sid = np.array([1] * 7 + [2] * 3, np.int64)
    t = T0 + np.array(minutes, np.int64) * MIN
    counter = np.array([1.0, 2, 3, 4, 5, 6, 7, 1, 2, 3])
    p = Points("number", sid, t, np.ones(10, bool), counter, counter, np.full(10, T0 - S))
    keep, plain_first = rollups._kept_and_plain_firsts(p, None, np.zeros(0, np.int64))
    assert keep.all()  # (each reading here is the first or the last of its quarter hour)
    # Series 1: 31 (20, alone in its quarter hour, is its last too); series 2: 16 (2 is its series' first).
    assert np.flatnonzero(plain_first).tolist() == [3, 8]
    counter[3] = 0.5  # a reset at 31: the pair (20, 31) is not plain
    assert np.flatnonzero(rollups._kept_and_plain_firsts(p, None, np.zeros(0, np.int64))[1]).tolist() == [8]
    assert np.flatnonzero(rollups._kept_and_plain_firsts(p, None, np.array([2]))[1]).tolist() == []


def test_late_points_and_head_points_make_an_hour_read_in_full_until_rebuilt(tmp_path, monkeypatch):
    path = tmp_path / "late.db"
    store = open_store(path)
    write(store, range(0, STEPS, 2))
    store.close()
    compact_everything(path, CLOSED)
    query = Query(SeriesSelection(1, "r.requests"), T0, T0 + 4 * HOUR, FixedGrid(HOUR),
                  Aggregation("increase", across="sum"), group_by=(GroupKey("route"),))
    before = answer(connect_reader(str(path)), query, False, monkeypatch)
    store = open_store(path, head_max_age=3600.0)  # every point to the head, and it stays there
    for f in [store.writer.submit(metrics_to_batch(late_request(k), 1)) for k in range(10, 40, 7)]:
        f.result(timeout=30)  # late points for the first hour, each a reset
    store.close()
    conn = connect_reader(str(path))
    assert conn.execute("SELECT count(*) FROM metric_points").fetchone() == (5,)
    sizes = read_sizes(conn, monkeypatch)
    in_head = answer(conn, query, True, monkeypatch)
    assert in_head == answer(conn, query, False, monkeypatch) != before
    conn.close()
    writer = connect_writer(str(path))
    writer.execute("BEGIN IMMEDIATE")  # the late points become a chunk; the rollup is not rebuilt yet
    from otelite.collector.store.compactor import Compactor
    comp = Compactor(head_max_age=0, head_max_points=100_000)
    comp.start(writer)
    writer.execute("COMMIT")
    assert comp.step(writer, CLOSED)  # one head pass
    assert writer.execute("SELECT count(*) FROM metric_points").fetchone() == (0,)
    writer.close()
    conn = connect_reader(str(path))
    assert answer(conn, query, True, monkeypatch) == in_head
    conn.close()
    compact_everything(path, CLOSED)  # merged and rebuilt
    conn = connect_reader(str(path))
    sizes.clear()
    assert answer(conn, query, True, monkeypatch) == in_head
    assert sizes[0][0] < sizes[0][1] / 2


def test_the_compactor_builds_closed_hours_only_and_retention_removes_them(tmp_path, monkeypatch):
    path = tmp_path / "c.db"
    store = open_store(path)
    write(store, range(STEPS))
    store.close()
    compact_everything(path, T0 + 3 * HOUR + 5 * MIN)  # hours 0-1 closed; hour 2 ended 5 min ago; 3 open
    conn = connect_writer(str(path))
    hours = {b - T0 for (b,) in conn.execute("SELECT DISTINCT block_start FROM metric_rollups")}
    assert hours == {0, HOUR}
    types = {t for (t,) in conn.execute("SELECT DISTINCT type FROM metric_rollups")}
    assert types == {"sum", "histogram", "exponential_histogram"}
    conn.close()
    conn = connect_reader(str(path))  # the hours without one are collapsed as read: the same answers
    for query in queries():
        assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch), query
    conn.close()
    compact_everything(path, CLOSED)
    conn = connect_writer(str(path))
    assert {b - T0 for (b,) in conn.execute("SELECT DISTINCT block_start FROM metric_rollups")} == {
        0, HOUR, 2 * HOUR, 3 * HOUR}
    conn.execute("BEGIN IMMEDIATE")
    expire_metrics(conn, T0 + 2 * HOUR + 30 * MIN, 5000)
    conn.execute("COMMIT")
    assert {b - T0 for (b,) in conn.execute("SELECT DISTINCT block_start FROM metric_rollups")} == {
        2 * HOUR, 3 * HOUR}
    conn.close()


def test_a_query_across_the_retention_cutoff_answers_as_without_rollups(rolled, tmp_path, monkeypatch):
    path = tmp_path / "cut.db"
    path.write_bytes(rolled.read_bytes())
    conn = connect_writer(str(path))
    conn.execute("BEGIN IMMEDIATE")
    expire_metrics(conn, T0 + HOUR + 20 * MIN, 0)  # the cutoff inside the second hour: its rollup stays
    conn.execute("COMMIT")
    conn.close()
    conn = connect_reader(str(path))
    for query in queries():
        assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch), query


def test_a_running_store_builds_the_rollups_of_closed_hours_off_the_writer_thread(tmp_path, monkeypatch):
    path = tmp_path / "live.db"
    store = open_store(path, direct_min_points=1)  # (each commit's points straight into a chunk)
    builder = store.writer.rollups
    builder.IDLE_S = 0.1  # look again soon while the compactor is still merging the closed hours
    builder.wake()  # (its first look would be IDLE_S after the start)
    write(store, range(STEPS))
    conn = connect_reader(str(path))

    def current() -> int:  # rollups built from the chunks their hour has now (a write may have made one stale)
        return conn.execute(
            "SELECT count(*) FROM metric_rollups AS r WHERE (r.chunks, r.max_chunk_id) = (SELECT count(*), max(id) "
            "FROM metric_chunks AS c WHERE c.name = r.name AND c.type = r.type AND c.block_start = r.block_start)"
        ).fetchone()[0]

    deadline = time.monotonic() + 60
    while current() < 6 * 4 and time.monotonic() < deadline:  # 6 counter and histogram metrics, 4 hours
        time.sleep(0.1)
    store.close()
    assert current() == conn.execute("SELECT count(*) FROM metric_rollups").fetchone()[0] == 6 * 4
    sizes = read_sizes(conn, monkeypatch)
    for query in queries():
        assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch), query
    assert any(read < everything / 2 for read, everything in sizes)


def test_a_rollup_of_many_chunks_whose_readings_interleave_answers_the_same(tmp_path, monkeypatch):
    path = tmp_path / "interleaved.db"
    store = open_store(path, direct_min_points=1)  # each commit's points become a chunk of their own
    monkeypatch.setattr(store.writer.compactor, "due", lambda: False)  # and are not merged
    steps = 170  # two hours and then some (a commit each takes a while)
    for k in [*range(0, steps, 2), *range(1, steps, 2)]:  # the odd steps later: chunks overlap in time
        store.writer.submit(metrics_to_batch(request(k), 1)).result(timeout=30)  # (a commit each)
    store.close()
    conn = connect_writer(str(path))
    conn.execute("DELETE FROM metric_rollups")  # (the store's own builder may have run: built here instead)
    monkeypatch.setattr(rollups, "PIECE_POINTS", 100)  # the series in groups of about 100 readings each
    # Built before any merge (small_points 0: no hour waits for its chunks to be merged).
    assert rollups.build_due(conn, CLOSED, 0, 0) == 6 * 2
    per_hour = conn.execute("SELECT min(chunks) FROM metric_rollups").fetchone()[0]
    assert per_hour > 10
    # Each rollup holds, in query order, what `kept` picks from all of its hour's readings taken at once.
    delta_ids = np.array([i for (i,) in conn.execute("SELECT id FROM metric_series WHERE temporality = 1")])
    for name, mtype, block_start, payload in conn.execute(
            "SELECT name, type, block_start, payload FROM metric_rollups").fetchall():
        blocks = [decode(pl, exact=False) for (pl,) in conn.execute(
            "SELECT payload FROM metric_chunks WHERE name = ? AND type = ? AND block_start = ? ORDER BY seq, id",
            (name, mtype, block_start))]
        everything = concat_blocks(blocks).points
        order = rollups.read_order(everything)
        expected = everything.take(order[rollups.kept(everything, order, delta_ids)])
        got = decode(payload, exact=False).points
        for column in ("series_id", "time", "counter", "start"):
            assert np.array_equal(getattr(got, column), getattr(expected, column), equal_nan=True), (name, column)
    conn.close()
    conn = connect_reader(str(path))
    sizes = read_sizes(conn, monkeypatch)
    # (Each raw read decodes every commit's chunk: the aligned grids and one off the cells' grid, ungrouped.)
    for query in queries(grids=[GRIDS[0], GRIDS[1], GRIDS[2], GRIDS[4]], groupings=((),)):
        assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch), query
    assert any(read < everything / 2 for read, everything in sizes)


def _submit_write_on(writer, lock: threading.Lock):
    """The writer's submit_write, on a connection of the test: fn runs in its own transaction."""
    def submit_write(fn):
        done = concurrent.futures.Future()
        with lock:
            writer.execute("BEGIN IMMEDIATE")
            fn(writer)
            writer.execute("COMMIT")
        done.set_result(None)
        return done
    return submit_write


def test_the_builder_waits_while_ingest_is_busy(rolled, tmp_path):
    path = tmp_path / "busy.db"
    path.write_bytes(rolled.read_bytes())
    writer = connect_writer(str(path))
    writer.execute("DELETE FROM metric_rollups")
    lock = threading.Lock()
    submit_write = _submit_write_on(writer, lock)
    busy = threading.Event()
    busy.set()
    builder = rollups.RollupBuilder(str(path), submit_write, CLOSE_AFTER_NS, TARGET_POINTS, first_look_s=0.01,
                                    busy=busy.is_set)
    builder.BUSY_S = builder.IDLE_S = 0.05
    builder.start()
    try:
        time.sleep(0.5)
        assert builder.built == 0  # the queue is busy: nothing built
        busy.clear()
        deadline = time.monotonic() + 30
        while builder.built < 6 * 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        builder.close()
    assert builder.built == 6 * 4
    with lock:
        assert writer.execute("SELECT count(*) FROM metric_rollups").fetchone() == (6 * 4,)
    writer.close()


def test_an_hour_without_a_single_reading_has_an_empty_rollup(tmp_path, monkeypatch):
    """Points flagged "no recorded value" (what the Collector's Prometheus receiver sends for a stale
    series) are no readings: an hour of only those keeps nothing. Its rollup raised instead (a concat of
    no blocks), and the builder retried that hour, and no other, forever."""
    path = tmp_path / "no-readings.db"
    store = open_store(path)
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="r.empty")
    m.histogram.aggregation_temporality = CUMULATIVE
    for k in range(20):
        m.histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=T0 + k * MIN, flags=1)
    store.writer.submit(metrics_to_batch(req, 1)).result(timeout=30)
    store.close()
    compact_everything(path, CLOSED)  # (builds the closed hours' rollups: it raised here)
    conn = connect_reader(str(path))
    assert conn.execute("SELECT name, n FROM metric_rollups").fetchall() == [("r.empty", 0)]
    query = Query(SeriesSelection(1, "r.empty"), T0, T0 + HOUR, FixedGrid(15 * MIN),
                  Aggregation("histogram_quantile", q=0.5, across="sum"))
    assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch)


def test_an_hour_whose_rollup_cannot_be_built_does_not_hold_up_the_others(rolled, tmp_path, monkeypatch, caplog):
    """The builder takes the newest stale hour first: one that failed every time was taken every time,
    and no older hour was ever rolled. It is now left out, with its stamp, until its chunks change."""
    path = tmp_path / "failing.db"
    path.write_bytes(rolled.read_bytes())
    writer = connect_writer(str(path))
    writer.execute("DELETE FROM metric_rollups")
    newest = writer.execute("SELECT max(block_start) FROM metric_chunks").fetchone()[0]
    real_build = rollups.build

    def build(conn, hour):
        if hour[1] == "r.latency" and hour[3] == newest:
            raise ValueError("a bug on this hour's data")
        return real_build(conn, hour)

    monkeypatch.setattr(rollups, "build", build)
    builder = rollups.RollupBuilder(str(path), _submit_write_on(writer, threading.Lock()), CLOSE_AFTER_NS, TARGET_POINTS, first_look_s=0.01)
    builder.IDLE_S = builder.PAUSE = 0.01
    builder.start()
    try:
        deadline = time.monotonic() + 30
        while builder.built < 6 * 4 - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # (and nothing more comes)
    finally:
        builder.close()
    assert builder.built == 6 * 4 - 1
    assert writer.execute("SELECT count(*) FROM metric_rollups WHERE name = 'r.latency' AND block_start = ?",
                          (newest,)).fetchone() == (0,)
    assert sum("cannot be built" in r.getMessage() for r in caplog.records) == 1  # tried once, not again and again
    writer.close()


def test_two_parts_give_the_cells_of_one_whole_to_the_last_bit():
    # 1/86400 + 4/86400 is not 5/86400 in floating point: a rate must add the parts' increases, then divide.
    series = SeriesSet(1, "r", "sum", np.array([7]), np.array([2], np.int8), np.array([True]))
    edges = np.array([0, 86400 * S])

    def points(times, values):
        t = np.array(times, np.int64) * S
        v = np.array(values, np.float64)
        return Points("number", np.full(t.size, 7), t, np.ones(t.size, bool), v, v, np.full(t.size, 1))

    earlier, newest = points([10, 20], [0, 1]), points([30, 40], [5, 5])
    whole = points([10, 20, 30, 40], [0, 1, 5, 5])
    for fn in ("rate", "increase"):
        agg = Aggregation(fn, across="sum")
        two = engine._two_part_cells(earlier, newest, series, edges, agg, 0)
        one = series_cells(whole, np.zeros(4, np.int64), np.zeros(4, np.int64), agg, series.temporality,
                           series.monotonic, edges, 0)
        assert two.value.tolist() == one.value.tolist() and two.b.tolist() == one.b.tolist(), fn



@settings(max_examples=200, deadline=None)
@given(st.data())
def test_two_parts_of_histogram_cells_combine_as_one_whole(data):
    """reduce.added_cells keeps the newest hours' histogram cells as a part of their own, not copied in among
    the day's: per group and bucket they give the counts, and the quantiles, of the cells of one whole. With
    cumulative and delta series, resets, cells on both sides of the parts' boundary, series in no group."""
    n_series = data.draw(st.integers(1, 4))
    delta = data.draw(st.lists(st.booleans(), min_size=n_series, max_size=n_series))
    rows = []
    for sid in range(1, n_series + 1):
        t, counts = T0, np.zeros(3)
        for _ in range(data.draw(st.integers(1, 12))):
            t += data.draw(st.sampled_from([1, 60, 400, 900, 1500])) * S
            step = np.array(data.draw(st.lists(st.integers(0, 5), min_size=3, max_size=3)), float)
            reset = data.draw(st.sampled_from([False] * 6 + [True]))
            counts = step if delta[sid - 1] or reset else counts + step
            rows.append((sid, t, counts.copy()))
    sid = np.array([r[0] for r in rows], np.int64)
    t = np.array([r[1] for r in rows], np.int64)
    counts = np.array([r[2] for r in rows])
    total = counts.sum(axis=1)

    def points(keep: np.ndarray) -> Points:
        return Points("histogram", sid[keep], t[keep], np.ones(int(keep.sum()), bool), total[keep], total[keep],
                      np.full(int(keep.sum()), T0 - S), bounds_id=np.zeros(int(keep.sum()), np.int32),
                      bounds=((1.0, 2.0),), counts=counts[keep], total=total[keep])

    split = T0 + data.draw(st.integers(0, 3 * 3600)) * S
    edges = T0 + np.arange(0, 4 * HOUR + 1, 20 * MIN, dtype=np.int64)
    series = SeriesSet(1, "h", "histogram", np.arange(1, n_series + 1),
                       np.array([1 if d else 2 for d in delta], np.int8), np.ones(n_series, bool))
    group = np.array(data.draw(st.lists(st.integers(-1, 1), min_size=n_series, max_size=n_series)), np.int64)
    agg = Aggregation("histogram_quantile", q=data.draw(st.sampled_from([0.5, 0.9])))
    nb = len(edges) - 1
    two = engine._two_part_cells(points(t < split), points(t >= split), series, edges, agg, T0)
    whole, sidx = engine._selected(points(np.ones(t.size, bool)), series)
    one = series_cells(whole, sidx, reduce.bucket_of(whole.time, edges), agg, series.temporality,
                       series.monotonic, edges, T0)
    for a, b in zip(reduce.combine(two, group, agg, nb), reduce.combine(one, group, agg, nb)):
        np.testing.assert_array_equal(a, b)

@st.composite
def _histories(draw):
    """Up to three cumulative series over two hours: readings 1 s to 20 min apart (some at one time), whole
    values that mostly grow, with resets, start times that change, unknown starts and NaNs."""
    series = []
    for sid in range(1, draw(st.integers(1, 3)) + 1):
        t, value, start = T0 + draw(st.integers(0, 20 * 60)) * S, 0.0, T0 - S
        for _ in range(draw(st.integers(1, 60))):
            t += draw(st.sampled_from([0, 1, 30, 45, 170, 400, 900, 1200])) * S
            if t >= T0 + 2 * HOUR:
                break
            event = draw(st.sampled_from(["grow"] * 12 + ["same", "reset", "restart", "unknown", "nan"]))
            if event == "reset":
                value = float(draw(st.integers(0, 3)))
            elif event == "restart":
                start, value = t - S, 0.0
            elif event != "same":
                value += draw(st.integers(1, 9))
            series.append((sid, t, float("nan") if event == "nan" else value, 0 if event == "unknown" else start))
    sid, t, v, start = (np.array(c) for c in zip(*sorted(series, key=lambda r: (r[0], r[1]))))
    return Points("number", sid.astype(np.int64), t.astype(np.int64), np.ones(sid.size, bool), v, v,
                  start.astype(np.int64))


@settings(max_examples=300, deadline=None)
@given(_histories(), st.sampled_from([0, 15, 45, 60]), st.sampled_from([0, 15, 60]),
       st.sampled_from([15, 30, 60]), st.sampled_from(["increase", "rate"]))
def test_any_history_gives_every_reading_s_increases_without_its_rolled_plain_firsts(p, lo_min, lookback_min,
                                                                                    step_min, fn):
    """rollups.PLAIN_FIRST on generated data: the two hours rolled as the builder keeps and marks them, read
    as `_read_rolled` reads them for a query from `lo` (marks dropped in hours starting at or after it),
    give the engine's cells of every reading from `lo` on, for grids of whole quarter hours."""
    lo = T0 + lo_min * MIN
    edges = lo + lookback_min * MIN + np.arange(0, 2 * HOUR + 1, step_min * MIN, dtype=np.int64)
    rolled = []
    for hour in (T0, T0 + HOUR):
        mine = p.take((p.time >= hour) & (p.time < hour + HOUR))
        keep, plain_first = rollups._kept_and_plain_firsts(mine, None, np.zeros(0, np.int64))
        read = keep & (mine.time >= lo) & ~(plain_first & (hour >= lo))
        rolled.append(mine.take(read))
    every = p.take(p.time >= lo)
    series = SeriesSet(1, "r", "sum", np.array([1, 2, 3]), np.full(3, 2, np.int8), np.ones(3, bool))

    def cells(pts: Points):
        pts = points_module._sorted_parts([pts], "number") if len(pts) else pts
        sidx = np.searchsorted(series.ids, pts.series_id)
        b = np.where(pts.time < edges[0], -1, (pts.time - edges[0]) // (edges[1] - edges[0]))
        c = series_cells(pts, sidx, b, Aggregation(fn), series.temporality, series.monotonic, edges, lo)
        return c.sidx.tolist(), c.b.tolist(), np.where(np.isnan(c.value), -1.0, c.value).tolist()

    assert cells(points_module._sorted_parts(rolled, "number")) == cells(every)


# --- chunk rollups: the hours no hourly rollup answers yet ------------------------------------------------

def _merged_request(steps) -> ExportMetricsServiceRequest:
    """The requests of `steps` as one: one commit, so one chunk per metric and hour."""
    req = ExportMetricsServiceRequest()
    for k in steps:
        req.MergeFrom(request(k))
    return req


def chunk_store(path: Path, monkeypatch, *commits, head=()) -> None:
    """A store whose every commit (a list of steps) becomes one chunk per metric and hour, never merged,
    every chunk with its chunk rollup, no hourly rollup; `head`: steps whose points stay in the head."""
    store = open_store(path, direct_min_points=1)
    monkeypatch.setattr(store.writer.compactor, "due", lambda: False)
    for steps in commits:
        store.writer.submit(metrics_to_batch(_merged_request(steps), 1)).result(timeout=30)
    store.close()
    if head:
        store = open_store(path, head_max_age=3600.0)
        store.writer.submit(metrics_to_batch(_merged_request(head), 1)).result(timeout=30)
        store.close()
    conn = connect_writer(str(path))
    conn.execute("DELETE FROM metric_rollups")
    with monkeypatch.context() as m:
        m.setattr(rollups, "CHUNK_HOURS", 10**6)  # the fixture's hours are years old
        rolled_types = "('sum', 'histogram', 'exponential_histogram')"
        assert rollups.build_due_chunks(conn, CLOSED, 1) == conn.execute(
            f"SELECT count(*) FROM metric_chunks WHERE type IN {rolled_types}").fetchone()[0]
        assert rollups.build_due_chunks(conn, CLOSED, 1) == 0  # (each is built once)
    conn.close()


def how_read(monkeypatch) -> list[str]:
    """What the queries read the hours no hourly rollup answers from: "chunk rollups" for every query that
    read at least one, "cache" for every one that read them raw through the cache."""
    seen: list[str] = []
    real_payload, real_points = rollups._chunk_payload_points, PointCache.points

    def payload(conn, sql, chunk_id):
        if "metric_chunk_rollups" in sql:
            seen.append("chunk rollup")
        return real_payload(conn, sql, chunk_id)

    def points(self, conn, series, t_from, t_to, *, margin=True):
        seen.append("cache")
        return real_points(self, conn, series, t_from, t_to, margin=margin)

    monkeypatch.setattr(rollups, "_chunk_payload_points", payload)
    monkeypatch.setattr(PointCache, "points", points)
    return seen


def test_a_chunk_rollup_keeps_what_kept_picks_from_its_chunk_in_query_order(tmp_path, monkeypatch):
    path = tmp_path / "chunk-rollups.db"
    chunk_store(path, monkeypatch, range(0, 200))
    conn = connect_reader(str(path))
    delta_ids = np.array([i for (i,) in conn.execute("SELECT id FROM metric_series WHERE temporality = 1")])
    rows = conn.execute("SELECT c.name, c.payload, r.payload, r.n, r.block_start = c.block_start FROM metric_chunks "
                        "AS c JOIN metric_chunk_rollups AS r ON r.chunk_id = c.id").fetchall()
    assert len(rows) == 6 * 3  # 6 counter and distribution metrics, 3 hours
    for name, chunk, rolled, n, same_hour in rows:
        everything = decode(chunk, exact=False).points
        order = rollups.read_order(everything)
        expected = everything.take(order[rollups.kept(everything, order, delta_ids)])
        got = decode(rolled, exact=False).points
        assert same_hour and len(got) == n
        for column in ("series_id", "time", "counter", "start"):
            assert np.array_equal(getattr(got, column), getattr(expected, column), equal_nan=True), column
        # (A delta series keeps every reading, and so does the up-down counter, whose every drop is a pair
        # that is not plain.)
        assert len(got) < len(everything) / 2 if name in ("r.latency", "r.sizes") else len(got) <= len(everything)


@pytest.mark.parametrize("commits, head, read_from", [
    # One chunk per metric and hour: read from their rollups wherever the cells are whole.
    ([range(0, STEPS)], (), "chunk rollups"),
    # Chunks one after the other in time, and head points after them: rollups and raw head together.
    ([range(0, 100), range(100, 230)], range(230, STEPS), "chunk rollups"),
    # Two chunks of an hour whose readings interleave (the odd steps came later): read raw.
    ([range(0, STEPS, 2), range(1, STEPS, 2)], (), "cache"),
    # Head points among a chunk's readings: read raw.
    ([range(0, STEPS, 2)], range(1, 101, 2), "cache"),
])
def test_chunk_rollups_answer_every_query_as_every_reading(tmp_path, monkeypatch, commits, head, read_from):
    path = tmp_path / "chunk-rollups.db"
    chunk_store(path, monkeypatch, *commits, head=head)
    conn = connect_reader(str(path))
    fell_back = []
    for query in queries():
        expected = answer(conn, query, False, monkeypatch)
        with monkeypatch.context() as m:
            seen = how_read(m)
            assert answer(conn, query, True, monkeypatch) == expected, query
        if query.grid not in (FixedGrid(7 * MIN), FixedGrid(15 * MIN, origin_ns=5 * MIN)) \
                and query.selection.name != "r.bytes":  # (cells that straddle buckets; a delta series)
            # (Interleaved: the chunk rollups are read, found to leave out a reading another part has
            # between theirs, and everything is read through the cache.)
            assert "chunk rollup" in seen, query
            fell_back.append("cache" in seen)
        else:
            assert "chunk rollup" not in seen
    if read_from == "chunk rollups":
        assert not any(fell_back)
    else:  # (a window that starts after the head points among them reads the chunk rollups alone)
        assert sum(fell_back) > len(fell_back) * 3 / 4


def test_a_window_ending_inside_a_chunk_reads_that_chunk_raw(tmp_path, monkeypatch):
    """A chunk that holds readings from the query's end on is not answered by its rollup (its last
    reading of a cell may lie after the end): every end, minute by minute, answers as from every reading."""
    path = tmp_path / "chunk-rollups.db"
    chunk_store(path, monkeypatch, range(0, 100), range(100, 200), range(200, STEPS))
    conn = connect_reader(str(path))
    for minute in range(61, 240, 7):
        end = T0 + minute * MIN + 17 * S
        for grid in (FixedGrid(15 * MIN), FixedGrid(HOUR), FixedGrid(7 * MIN)):
            for name, fn, q in CASES:
                query = Query(SeriesSelection(1, name), T0 + 45 * MIN, end, grid,
                              Aggregation(fn, q=q, across="sum" if fn != "observation_mean" else None))
                assert answer(conn, query, True, monkeypatch) == answer(conn, query, False, monkeypatch), \
                    (minute, grid, name, fn)


def test_merges_take_their_chunks_rollups_with_them_and_old_hours_are_dropped(tmp_path, monkeypatch):
    path = tmp_path / "chunk-rollups.db"
    chunk_store(path, monkeypatch, range(0, 100), range(100, 200))
    conn = connect_writer(str(path))
    before = conn.execute("SELECT count(*) FROM metric_chunk_rollups").fetchone()[0]
    ids = [i for (i,) in conn.execute("SELECT id FROM metric_chunks WHERE name = 'r.latency' AND block_start = ?",
                                      (T0 + HOUR,))]
    assert len(ids) == 2
    conn.execute("BEGIN IMMEDIATE")
    from otelite.collector.store.compactor import Compactor
    merged = Compactor.merge_chunks(conn, ids, 1)
    conn.execute("COMMIT")
    assert conn.execute(f"SELECT count(*) FROM metric_chunk_rollups WHERE chunk_id IN ({ids[0]}, {ids[1]}, {merged})"
                        ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM metric_chunk_rollups").fetchone() == (before - 2,)
    # A rollup built from a chunk that is merged away before it is stored is not stored.
    with monkeypatch.context() as m:
        m.setattr(rollups, "CHUNK_HOURS", 10**6)
        row = rollups.build_chunk(conn, merged)
        assert rollups.build_chunk(conn, ids[0]) is None  # (gone)
        other = conn.execute("SELECT id FROM metric_chunks WHERE name = 'r.requests' AND block_start = ?",
                             (T0,)).fetchone()[0]
        stale = rollups.build_chunk(conn, other)
        conn.execute("DELETE FROM metric_chunk_rollups WHERE chunk_id = ?", (other,))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM metric_chunks WHERE id = ?", (other,))
        rollups.store_chunk(conn, stale, CLOSED)
        rollups.store_chunk(conn, row, CLOSED)
        conn.execute("COMMIT")
        assert conn.execute("SELECT chunk_id FROM metric_chunk_rollups WHERE chunk_id IN (?, ?)",
                            (other, merged)).fetchall() == [(merged,)]
    # Rows of hours older than the chunk rollups' window go when the next one is stored.
    conn.execute("BEGIN IMMEDIATE")
    rollups.store_chunk(conn, row, T0 + (rollups.CHUNK_HOURS + 2) * HOUR)
    conn.execute("COMMIT")
    assert conn.execute("SELECT min(block_start) FROM metric_chunk_rollups").fetchone() == (T0 + HOUR,)
    conn.close()


def test_a_running_store_builds_the_rollups_of_the_open_hours_large_chunks(tmp_path, monkeypatch):
    """Live, with the current time: the builder gives the large chunks of the open hour and the hour
    before a rollup each, and none to small chunks or older hours."""
    path = tmp_path / "live.db"
    store = open_store(path, direct_min_points=1)
    monkeypatch.setattr(store.writer.compactor, "due", lambda: False)
    builder = store.writer.rollups
    builder.IDLE_S = 0.05
    builder._small_points = 50  # (the fixture's chunks are small: chunks of 50 points and more are large)
    now = time.time_ns()
    shift = now - now % HOUR - T0 - 2 * HOUR  # step 0 two hours before the open one
    for steps in (range(0, 120), range(120, 160), range(160, 250)):
        b = metrics_to_batch(_merged_request(steps), 1)
        b.points = [p[:3] + (p[3] + shift,) + p[4:] for p in b.points]
        store.writer.submit(b).result(timeout=30)
    builder.wake()
    conn = connect_reader(str(path))
    wanted = conn.execute("SELECT count(*) FROM metric_chunks WHERE n >= 50 AND block_start >= ? "
                          "AND type IN ('sum', 'histogram', 'exponential_histogram')",
                          (now - now % HOUR - HOUR,)).fetchone()[0]
    assert wanted >= 6
    deadline = time.monotonic() + 30
    while builder.chunks_built < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # (and nothing more comes)
    store.close()
    assert builder.chunks_built == wanted
    assert conn.execute("SELECT count(*) FROM metric_chunk_rollups AS r JOIN metric_chunks AS c ON c.id = r.chunk_id "
                        "WHERE c.n >= 50 AND c.block_start >= ?", (now - now % HOUR - HOUR,)).fetchone() == (wanted,)


@settings(max_examples=300, deadline=None)
@given(_histories(), st.data(), st.sampled_from([15, 30, 60]), st.sampled_from(["increase", "rate"]))
def test_any_history_in_any_chunks_gives_every_reading_s_increases_from_their_rollups(p, data, step_min, fn):
    """Chunk rollups on generated data: the readings cut into chunks, by time (as a server that got them
    in order writes them) or at random (out of order), some of them read from their rollups, the rest raw,
    joined (`joined_if_exact`) and collapsed as a query does: when the join is taken, the engine's cells
    are those of every reading; cut by time, it is always taken."""
    lo, hi = T0, T0 + 2 * HOUR
    edges = lo + np.arange(0, 2 * HOUR + 1, step_min * MIN, dtype=np.int64)
    k = data.draw(st.integers(1, 4))
    by_time = data.draw(st.booleans())
    if by_time:
        cuts = sorted(data.draw(st.lists(st.integers(0, 2 * 3600), min_size=k - 1, max_size=k - 1)))
        chunk = np.searchsorted(np.array(cuts, np.int64) * S + T0, p.time, "right")
    else:
        chunk = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=len(p), max_size=len(p))), np.int64)
    arrival = np.array(data.draw(st.permutations(range(len(p)))), np.int64)
    use = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
    chunks = []  # each sorted by series and time, readings at one time in the order they came (chunks.py)
    for c in range(k):
        mine = p.take(arrival[chunk[arrival] == c])
        chunks.append(mine.take(rollups.read_order(mine)))
    parts = []
    for c, mine in enumerate(chunks):
        if use[c]:
            order = rollups.read_order(mine)
            mine = mine.take(order[rollups.kept(mine, order, np.zeros(0, np.int64))])
        parts.append(mine)
    series = SeriesSet(1, "r", "sum", np.array([1, 2, 3]), np.full(3, 2, np.int8), np.ones(3, bool))

    def cells(pts: Points):
        sidx = np.searchsorted(series.ids, pts.series_id)
        b = np.where(pts.time < edges[0], -1, (pts.time - edges[0]) // (edges[1] - edges[0]))
        c = series_cells(pts, sidx, b, Aggregation(fn), series.temporality, series.monotonic, edges, lo)
        return c.sidx.tolist(), c.b.tolist(), np.where(np.isnan(c.value), -1.0, c.value).tolist()

    joined = rollups.joined_if_exact(parts, use, "number")
    if by_time:
        assert joined is not None
    if joined is not None:
        # (Every reading as the raw chunks are read: readings at one time in the order they came.)
        every = points_module._sorted_parts(chunks, "number")
        assert cells(rollups.collapsed(joined, lo, hi, edges)) == cells(every)


def test_a_reading_of_another_chunk_among_a_chunk_rollup_s_readings_is_found_and_the_stretch_read_raw():
    """Chunk A has 10, 20, 30 of a counter in one quarter hour; chunk B, written later, the 15 that came
    between 20 and 30 (a reset: every reading gives 10 + 15 + 15 = 40). A's rollup keeps 10 and 30, and
    10, 15, 30 would give 20: the join says so instead of answering."""
    def pts(times, values):
        n = len(times)
        return Points("number", np.ones(n, np.int64), T0 + np.array(times, np.int64) * S, np.ones(n, bool),
                      np.array(values, float), np.array(values, float), np.full(n, T0 - S, np.int64))

    a, b = pts([60, 120, 240], [10.0, 20.0, 30.0]), pts([180], [15.0])
    order = rollups.read_order(a)
    a_rolled = a.take(order[rollups.kept(a, order, np.zeros(0, np.int64))])
    assert a_rolled.counter.tolist() == [10.0, 30.0]
    assert rollups.joined_if_exact([a_rolled, b], [True, False], "number") is None
    naive = points_module._sorted_parts([a_rolled, b], "number")
    every = points_module._sorted_parts([a, b], "number")
    edges = T0 + np.array([0, HOUR], np.int64)
    series = SeriesSet(1, "r", "sum", np.array([1]), np.full(1, 2, np.int8), np.ones(1, bool))

    def increase(p: Points) -> float:
        c = series_cells(p, np.zeros(len(p), np.int64), np.zeros(len(p), np.int64), Aggregation("increase"),
                         series.temporality, series.monotonic, edges, T0)
        return float(c.value.sum())

    assert (increase(every), increase(naive)) == (40.0, 20.0)
    # B's reading after A's last: one run each, joined.
    late = pts([300], [35.0])
    joined = rollups.joined_if_exact([a_rolled, late], [True, False], "number")
    assert joined is not None and increase(rollups.collapsed(joined, T0, T0 + HOUR, edges)) == increase(
        points_module._sorted_parts([a, late], "number")) == 25.0


def test_the_cache_forgets_the_parts_of_merged_chunks(tmp_path, monkeypatch):
    path = tmp_path / "chunk-rollups.db"
    chunk_store(path, monkeypatch, range(0, 100), range(100, 200))
    cache = PointCache()
    query = Query(SeriesSelection(1, "r.latency"), T0, T0 + 3 * HOUR, FixedGrid(15 * MIN),
                  Aggregation("histogram_quantile", q=0.9, across="sum"))
    conn = connect_reader(str(path))
    first = answer_with(conn, cache, query)

    def kept_chunk_ids() -> set[int]:
        return {k[4] for k in cache._entries if k[0] == "derived" and k[1] in ("chunk rollup", "chunk readings")}

    ids = [i for (i,) in conn.execute("SELECT id FROM metric_chunks WHERE name = 'r.latency' AND block_start = ?",
                                      (T0 + HOUR,))]
    assert len(ids) == 2 and set(ids) <= kept_chunk_ids()
    conn.close()
    writer = connect_writer(str(path))
    writer.execute("BEGIN IMMEDIATE")
    from otelite.collector.store.compactor import Compactor
    merged = Compactor.merge_chunks(writer, ids, 1)
    writer.execute("COMMIT")
    writer.close()
    conn = connect_reader(str(path))
    assert answer_with(conn, cache, query) == first == answer(conn, query, False, monkeypatch)
    assert not set(ids) & kept_chunk_ids() and merged in kept_chunk_ids()  # (read raw: it has no rollup yet)
