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


def _tally(store, key: str, grid, start: int, end: int, across: str | None = None,
           fn: str = "tally") -> dict[str, dict[int, float]]:
    """{path: {bucket start: value}}."""
    conn = store.reader()
    try:
        q = Query(SeriesSelection(1, key), start, end, grid, Aggregation(fn, across=across),
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
        assert got == _replay(ops, grid), grid  # whole numbers: exact, not approximately


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


def _replay_paths(ops: list[tuple[int, str, dict]], grid) -> dict[str, dict[int, float]]:
    """_replay per path: an op's leaves only (an assert leaves the other paths of its bucket alone)."""
    out: dict[str, dict[int, float]] = {}
    for t, op, leaves in ops:
        b = grid.floor(t)
        for path, v in leaves.items():
            buckets = out.setdefault(path, {})
            buckets[b] = v if op == "assert" else buckets.get(b, 0) + v
    return out


def test_tally_is_exact_on_every_path_of_the_engine(store):
    """After the engine's reductions were rewritten (issue 15: no sorts, tables indexed by key), a tally is
    still exact, whichever way the engine folds it: pooled per path (Trifle), per series then summed
    across (PostHog's `sum`), as an increase or a rate (PostHog's `increase`/`rate`), read from scratch and
    read again through the point cache after more writes. Some values of 2**40 and more make any lost
    or repeated point visible; every partial sum stays a whole number below 2**53, so exact is exact."""
    rng = random.Random(11)
    big = float(2**40)
    ops = []
    for i in range(600):
        t = T0 + rng.randrange(0, 2 * 86400) * NS
        op = "assert" if rng.random() < 0.1 else "track"
        leaves = {p: float(rng.choice((1, 3, 7, -2)) * (big if rng.random() < 0.02 else 1))
                  for p in rng.sample(("a", "b.c", "b.d", "e"), rng.randint(1, 3))}
        ops.append((t, op, leaves))
    grids = (CalendarGrid(1, "h"), CalendarGrid(33, "m"), CalendarGrid(1, "d"))
    start, end = T0 - 86400 * NS, T0 + 3 * 86400 * NS
    for upto in (300, 600):  # the second round reads the cache, then only the rows written since
        futures = [store.writer.submit(write_rows(1, Write("x", t, leaves, op, False)))
                   for t, op, leaves in ops[upto - 300:upto]]
        for f in futures:
            f.result(timeout=10)
        written = ops[:upto]
        for grid in grids:
            want = _replay_paths(written, grid)
            assert _tally(store, "x", grid, start, end) == want, grid
            # increase: the same values; rate: per second of each bucket.
            assert _tally(store, "x", grid, start, end, across="sum", fn="increase") == want, grid
            rate = _tally(store, "x", grid, start, end, across="sum", fn="rate")
            assert rate == {p: {b: v / ((grid.bucket_end(b) - b) / NS) for b, v in buckets.items()}
                            for p, buckets in want.items()}, grid
            # One value per bucket over every path: per series, then summed across them.
            conn = store.reader()
            try:
                q = Query(SeriesSelection(1, "x"), start, end, grid, Aggregation("tally", across="sum"))
                result = evaluate(conn, store.point_cache, q)
            finally:
                conn.close()
            total: dict[int, float] = {}
            for buckets in want.values():
                for b, v in buckets.items():
                    total[b] = total.get(b, 0) + v
            (series,) = result.series
            assert dict(zip(series.starts(result.edges).tolist(), series.values.tolist())) == total, grid
    store.point_cache.clear()
    assert _tally(store, "x", grids[0], start, end) == _replay_paths(ops, grids[0])
