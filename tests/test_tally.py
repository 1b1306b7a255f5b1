"""The `tally` metric type (collector/store/metrics.py) in a real store: the engine's `tally` aggregation,
the point cache's write order, and the series state the Prometheus scrape reads.

The expected numbers come from replaying the writes by hand the way Trifle stores them: one value per
(granularity, bucket), a track incrementing it and an assert overwriting it, in the order written.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3

import numpy as np
import pytest

from otelite.api.trifle.request import Write
from otelite.api.trifle.rows import write_rows
from otelite.collector.query.engine import evaluate
from otelite.collector.query.grid import CalendarGrid
from otelite.collector.query.model import Aggregation, GroupKey, Query
from otelite.collector.store.metrics import SeriesSelection
from otelite.collector.times import NS, UTC, to_ns
from store_rows import open_store, write

T0 = to_ns(dt.datetime(2026, 1, 24, 10, 0, tzinfo=UTC))
MIN = 60 * NS


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path)
    yield s
    s.close()


def _write(store, key: str, at_ns: int, values: dict, operation: str = "track") -> None:
    write(store, write_rows(1, Write(key, at_ns, values, operation, False)))


def _tally(store, key: str, grid, start: int, end: int, across: str | None = None) -> dict[str, dict[int, float]]:
    """{path: {bucket start: value}}."""
    conn = store.reader()
    try:
        q = Query(SeriesSelection(1, key), start, end, grid, Aggregation("tally", across=across),
                  group_by=(GroupKey("path", "attribute"),))
        result = evaluate(conn, store.point_cache, q)
    finally:
        conn.close()
    return {s.labels["path"]: dict(zip(s.starts(result.edges).tolist(), s.values.tolist())) for s in result.series}


def _replay(ops: list[tuple[int, str, float]], grid) -> dict[int, float]:
    """Trifle's storage: per bucket, track increments and assert overwrites, in the order given."""
    buckets: dict[int, float] = {}
    for t, op, v in ops:
        b = grid.floor(t)
        buckets[b] = v if op == "assert" else buckets.get(b, 0) + v
    return buckets


def test_track_adds_and_assert_replaces_only_its_leaves_at_every_granularity(store):
    _write(store, "k", T0 + 5 * MIN, {"count": 2, "other": 7})
    _write(store, "k", T0 + 50 * MIN, {"count": 3})
    _write(store, "k", T0 + 20 * MIN, {"count": 10}, "assert")  # written after, though earlier in time
    _write(store, "k", T0 + 40 * MIN, {"count": 1})
    hour = CalendarGrid(1, "h")
    got = _tally(store, "k", hour, T0, T0 + 3600 * NS)
    # The assert overwrote count in its hour (2 + 3 gone), the track after it adds; `other` is untouched.
    assert got == {"count": {T0: 11.0}, "other": {T0: 7.0}}
    # In 30-minute buckets the assert lands in the first and leaves the second alone (3 + 1 = 4).
    got = _tally(store, "k", CalendarGrid(30, "m"), T0, T0 + 3600 * NS)
    assert got["count"] == {T0: 10.0, T0 + 30 * MIN: 4.0}


def test_random_writes_match_trifles_per_granularity_storage(store):
    rng = random.Random(5)
    ops = []
    for _ in range(400):
        t = T0 + rng.randrange(0, 3 * 86400) * NS
        op = "assert" if rng.random() < 0.15 else "track"
        v = float(rng.randint(-5, 20))
        ops.append((t, op, v))
    # Written in batches, so several ops share a commit (and an executemany): order must still hold.
    for i in range(0, len(ops), 7):
        batches = [write_rows(1, Write("r", t, {"x": v}, op, False)) for t, op, v in ops[i:i + 7]]
        futures = [store.writer.submit(b) for b in batches]
        for f in futures:
            f.result(timeout=10)
    for grid in (CalendarGrid(1, "h"), CalendarGrid(33, "m"), CalendarGrid(6, "h"), CalendarGrid(1, "d"),
                 CalendarGrid(1, "w")):
        got = _tally(store, "r", grid, T0 - 8 * 86400 * NS, T0 + 9 * 86400 * NS)["x"]
        assert got == pytest.approx(_replay(ops, grid)), grid


def test_write_order_survives_the_point_cache_loading_in_steps(store):
    grid = CalendarGrid(1, "d")
    day = grid.floor(T0)
    end = grid.bucket_end(T0)
    _write(store, "c", T0, {"v": 5})
    assert _tally(store, "c", grid, day, end)["v"] == {day: 5.0}  # cached now
    _write(store, "c", T0 + MIN, {"v": 100}, "assert")
    _write(store, "c", T0 - MIN, {"v": 1})  # earlier time, later write: after the assert
    assert _tally(store, "c", grid, day, end)["v"] == {day: 101.0}  # read incrementally by the cache
    store.point_cache.clear()
    assert _tally(store, "c", grid, day, end)["v"] == {day: 101.0}  # and from scratch


def test_tally_per_series_then_across(store):
    _write(store, "m", T0, {"a": 1, "b": 2})
    _write(store, "m", T0 + MIN, {"a": 5}, "assert")
    conn = store.reader()
    try:
        q = Query(SeriesSelection(1, "m"), T0, T0 + 3600 * NS, CalendarGrid(1, "h"),
                  Aggregation("tally", across="sum"))
        result = evaluate(conn, store.point_cache, q)
    finally:
        conn.close()
    assert [s.values.tolist() for s in result.series] == [[7.0]]  # a: 5, b: 2


def test_tally_of_another_type_is_a_sum(store):
    from store_rows import batch
    write(store, batch(1, "g", "gauge", [(T0, 2.0, {}), (T0 + MIN, 3.0, {})]))
    conn = store.reader()
    try:
        q = Query(SeriesSelection(1, "g"), T0, T0 + 3600 * NS, CalendarGrid(1, "h"), Aggregation("tally"))
        result = evaluate(conn, store.point_cache, q)
    finally:
        conn.close()
    assert result.series[0].values.tolist() == [5.0]


def test_series_state_folds_in_write_order(store):
    _write(store, "s", T0, {"n": 4})
    _write(store, "s", T0 + MIN, {"n": 1})
    _write(store, "s", T0 - MIN, {"n": 10}, "assert")  # replaces the total although earlier in time
    _write(store, "s", T0 - 2 * MIN, {"n": 2})
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute(
            "SELECT st.value, st.time_ns FROM metric_series_state st JOIN metric_series s ON s.id = st.series_id "
            "WHERE s.name = 's'").fetchall()
    assert rows == [(12, T0 + MIN)]


def test_tally_rows_are_loaded_with_write_order_and_set_marks(store):
    _write(store, "p", T0, {"v": 1})
    _write(store, "p", T0, {"v": 2}, "assert")
    conn = store.reader()
    try:
        from otelite.collector.store.metrics import select_series
        from otelite.collector.store.points import ReadTransaction
        with ReadTransaction(conn):
            series = select_series(conn, SeriesSelection(1, "p"))
            pts = store.point_cache.points(conn, series, T0 - 1, T0 + 1)
    finally:
        conn.close()
    assert pts.kind == "tally"
    assert pts.sets.tolist() == [False, True] and bool(np.all(np.diff(pts.seq) > 0))
