"""Metric points in chunks (issue 16): the payload format, the compactor's head passes and merges,
retention of chunked points, and reads that are the same whichever layout holds a point.

Real SQLite files and the real writer; the data is the legacy fixture's generator (every metric type:
gauges with ints, doubles, NaN and no-value points, cumulative and delta sums and histograms with a
changing bucket layout, exponential histograms, summaries, exemplars, Flux distributions and sets).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from otelite.collector.normalize.otlp import metrics_to_batch
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.query.engine import evaluate
from otelite.collector.query.grid import FixedGrid
from otelite.collector.query.model import Aggregation, Query
from otelite.collector.store import chunks, rollups
from otelite.collector.store.compactor import CLOSE_AFTER_NS, FINAL_LEVEL, TARGET_POINTS, Compactor, expire_metrics
from otelite.collector.store.db import connect_reader, connect_writer
from otelite.collector.store.metrics import (SeriesSelection, live_series_states, metric_catalog, recent_observations,
                                             select_series)
from otelite.collector.store.points import PointCache, ReadTransaction, decode, narrow_dtype, narrowed, point_rows
from otelite.collector.store.store import Store
from otelite.exporters.sqlite.config import SqliteExporterConfig

sys.path.insert(0, str(Path(__file__).parent / "testdata"))
import make_legacy_store as legacy  # noqa: E402  (the fixture's generator: the same data, written by this code)

HOUR = 3600 * 10**9
METRICS = [("legacy.load", "gauge"), ("legacy.requests", "sum"), ("legacy.bytes", "sum"),
           ("legacy.latency", "histogram"), ("legacy.delta_latency", "histogram"),
           ("legacy.sizes", "exponential_histogram"), ("legacy.rpc", "summary"), ("legacy.dist", "distribution"),
           ("legacy.visitors", "set")]
POINT_SQL = ("SELECT project_id, series_id, start_ns, time_ns, value, count, sum, min, max, flags, buckets, exemplars "
             "FROM metric_points")


HEAD_ONLY = {"direct_min_points": 10**9}  # every point goes to the head first (the compactor's input)


def open_store(path: Path, **compaction) -> Store:
    """A store whose points go to the head unless `direct_min_points` says otherwise (appender.py)."""
    compaction = {**HEAD_ONLY, **compaction}
    cfg = SqliteExporterConfig(path=str(path))
    cfg.retention.traces = cfg.retention.metrics = 0  # the fixture's timestamps are fixed
    for k, v in compaction.items():
        setattr(cfg.compaction, k, v)
    store = Store(cfg, BatchProcessorConfig())
    store.start()
    return store


def write_fixture_data(store: Store, steps: range = range(40), shift_ns: int = 0, wait_each: bool = False) -> None:
    """The fixture's requests; `wait_each`: one commit per request (else the writer groups them)."""
    futures = []
    for step in steps:
        b = metrics_to_batch(legacy.metric_request(step, legacy.random.Random(step)), 1)
        flux = legacy.flux_batch(step)
        for batch in (b, flux):
            if shift_ns:
                batch.points = [p[:3] + (p[3] + shift_ns,) + p[4:] for p in batch.points]
            futures.append(store.writer.submit(batch))
            if wait_each:
                futures[-1].result(timeout=30)
    for f in futures:
        f.result(timeout=30)


def compact_everything(path: Path, now_ns: int) -> Compactor:
    """Run the compactor on the (closed) store's file until it has nothing left to do, then build the
    closed hours' rollups."""
    conn = connect_writer(str(path))
    comp = Compactor(head_max_age=0, head_max_points=100_000)
    comp.start(conn)
    while comp.step(conn, now_ns):
        pass
    rollups.build_due(conn, now_ns, CLOSE_AFTER_NS, TARGET_POINTS)  # (the store builds them on a thread)
    conn.close()
    return comp


def snapshot(path: Path) -> dict:
    """Every way points are read, with nothing cached: what must not change when points move."""
    conn = connect_reader(str(path))
    cache = PointCache(0)
    out = {}
    for name, mtype in METRICS:
        with ReadTransaction(conn):
            series = select_series(conn, SeriesSelection(1, name, mtype))
            p = cache.points(conn, series, 0, 1 << 62)
            out[name, mtype] = {
                "rows": point_rows(conn, series.ids.tolist()),
                "points": {f: _plain(getattr(p, f)) for f in ("series_id", "time", "value", "counter", "start", "counts",
                                                              "bounds", "bounds_id", "q_level", "q_value", "scale",
                                                              "zero_count", "pos_offset", "pos_len", "neg_offset",
                                                              "neg_len", "total")},
                "members": [p.members[int(c)] for c in p.value] if p.kind == "set" else None,
                "ragged": [p.pos_flat[s:s + n].tolist() for s, n in zip(p.pos_start, p.pos_len)]
                if p.kind == "exponential_histogram" else None,
            }
    out["catalog"] = metric_catalog(conn, 1, with_point_counts=True)
    out["live"] = sorted(live_series_states(conn, 1, 0))
    conn.close()
    return out


def _plain(x):
    if isinstance(x, np.ndarray):
        return np.where(np.isnan(x), -1e300, x).tolist() if x.dtype.kind == "f" else x.tolist()
    return x


@pytest.fixture
def written(tmp_path) -> Path:
    path = tmp_path / "c.db"
    store = open_store(path)
    write_fixture_data(store)
    store.close()
    return path


def test_payload_round_trip_is_exact_for_every_metric_type(written):
    conn = sqlite3.connect(written)
    for name, mtype in METRICS:
        ids = [r[0] for r in conn.execute("SELECT id FROM metric_series WHERE name = ? AND type = ?", (name, mtype))]
        rows = conn.execute(POINT_SQL + f" WHERE series_id IN ({','.join('?' * len(ids))}) ORDER BY id",
                            ids).fetchall()
        assert rows
        block = chunks.block_from_rows(mtype, rows).sorted()
        back = chunks.decode(chunks.encode(block))
        expected = sorted(rows, key=lambda r: (r[1], r[3]))  # stable: equal times keep their order
        assert back.rows(1) == expected, name
        # The read columns derived at compaction equal what a query derives from SQL (points.decode).
        kind = back.points.kind
        sql_rows = conn.execute(
            f"SELECT series_id, time_ns, start_ns, {decode.__globals__['_COLUMNS'][kind]} FROM metric_points WHERE "
            f"series_id IN ({','.join('?' * len(ids))}) AND {decode.__globals__['_READING'].get(kind, '(flags & 1) = 0')} "
            "ORDER BY id", ids).fetchall()
        from_sql = decode(kind, sql_rows).sorted()
        from_chunk = back.points.take(back.points.valid)
        for f in ("series_id", "time", "value", "counter", "start", "counts", "bounds", "q_level", "q_value", "scale",
                  "zero_count", "pos_offset", "pos_len", "neg_offset", "neg_len", "total"):
            assert _plain(getattr(from_sql, f)) == _plain(getattr(from_chunk, f)), (name, f)
    conn.close()


def test_reads_are_the_same_before_and_after_compaction(written):
    before = snapshot(written)
    comp = compact_everything(written, legacy.T0 + 10 * HOUR)
    assert comp.compacted_points == 840
    conn = sqlite3.connect(written)
    assert conn.execute("SELECT count(*) FROM metric_points").fetchone() == (0,)
    # One chunk per metric and hour (the data spans 10 minutes of one hour).
    assert conn.execute("SELECT count(*), sum(n), count(DISTINCT name || type) FROM metric_chunks").fetchone() == (
        9, 840, 9)
    conn.close()
    assert snapshot(written) == before


@pytest.mark.parametrize("direct_min", [1, 3])
def test_points_packed_at_commit_read_as_those_moved_from_the_head(tmp_path, written, direct_min):
    # appender.py: a commit's points of one metric and hour (at least direct_min) go straight into a chunk;
    # every read must be the same as for the same data written to the head and compacted. The fixture has
    # what SQLite stores differently from the Python value (NaN doubles become NULL) and every metric type.
    path = tmp_path / "direct.db"
    store = open_store(path, direct_min_points=direct_min)
    write_fixture_data(store, wait_each=True)  # small commits: with 3, some groups are smaller, some not
    store.close()
    conn = sqlite3.connect(path)
    in_head = conn.execute("SELECT count(*) FROM metric_points").fetchone()[0]
    in_chunks = conn.execute("SELECT coalesce(sum(n), 0) FROM metric_chunks").fetchone()[0]
    conn.close()
    assert in_head + in_chunks == 840
    assert in_chunks > 0 and (in_head == 0) == (direct_min == 1)
    compact_everything(written, legacy.T0 + 10 * HOUR)
    expected = snapshot(written)
    assert snapshot(path) == expected
    compact_everything(path, legacy.T0 + 10 * HOUR)  # merged into one chunk per metric: still the same
    assert snapshot(path) == expected


def test_the_engine_answers_the_same_from_chunks(written):
    def answers():
        conn = connect_reader(str(written))
        cache = PointCache()
        out = []
        for name, fn in (("legacy.requests", "rate"), ("legacy.latency", "histogram_quantile"),
                         ("legacy.load", "avg"), ("legacy.visitors", "distinct"), ("legacy.dist", "quantile")):
            q = Query(SeriesSelection(1, name), legacy.T0, legacy.T0 + HOUR, FixedGrid(60 * 10**9),
                      Aggregation(fn, q=0.9 if "quantile" in fn else None, across="sum" if fn != "quantile" else None))
            for _ in range(2):  # cold, then from the cache
                r = evaluate(conn, cache, q)
                out.append([(s.labels, _plain(s.buckets), _plain(s.values)) for s in r.series])
        conn.close()
        return out

    before = answers()
    compact_everything(written, legacy.T0 + 10 * HOUR)
    assert answers() == before


def test_passes_and_merges_keep_every_point_once(tmp_path):
    # The fixture's data moved to the current hour, so that the hour is still open for every writer.
    hour = time.time_ns() // HOUR * HOUR
    shift = hour - legacy.T0
    path = tmp_path / "m.db"
    for k in range(20):  # 20 compaction passes over the same hour: level-0 chunks, then merges
        store = open_store(path)
        write_fixture_data(store, range(2 * k, 2 * k + 2), shift_ns=shift)
        store.close()
        compact_everything(path, hour + 30 * 60 * 10**9)
    conn = sqlite3.connect(path)
    levels = dict(conn.execute("SELECT level, count(*) FROM metric_chunks GROUP BY level"))
    assert levels == {0: 9 * 4, 1: 9 * 2}, levels  # 8 level-0 chunks make a level-1 chunk
    conn.close()
    reference = tmp_path / "r.db"
    store = open_store(reference)
    write_fixture_data(store, shift_ns=shift)
    store.close()
    expected = snapshot(reference)
    assert snapshot(path) == expected
    # Once the hour is closed, its chunks become one per metric.
    compact_everything(path, hour + 3 * HOUR)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), min(level) FROM metric_chunks").fetchone() == (9, FINAL_LEVEL)
    conn.close()
    assert snapshot(path) == expected


def _read_all(conn, cache: PointCache) -> dict:
    out = {}
    for name, mtype in METRICS:
        with ReadTransaction(conn):
            p = cache.points(conn, select_series(conn, SeriesSelection(1, name, mtype)), 0, 1 << 62)
        out[name, mtype] = {f: _plain(getattr(p, f)) for f in ("series_id", "time", "value", "counter", "start",
                                                               "counts", "bounds_id", "q_value", "total", "seq")}
        out[name, mtype]["members"] = [p.members[int(c)] for c in p.value] if p.kind == "set" else None
    return out


@pytest.mark.parametrize("direct_min", [10**9, 3])
def test_a_warm_cache_reads_what_arrived_and_moved_since(tmp_path, direct_min):
    # points.py: a cached metric is brought up to date from head rows past its mark and from the points of
    # newer chunks that came from such rows; here some of the new rows have moved (a partial head pass,
    # then merges) and some are still in the head when the warm cache looks again. With direct_min 3, some
    # points go straight into chunks at their commit (appender.py), others to the head.
    hour = time.time_ns() // HOUR * HOUR
    shift = hour - legacy.T0
    path = tmp_path / "w.db"
    reader = None
    warm = PointCache()
    in_head = []
    for k in range(6):
        store = open_store(path, direct_min_points=direct_min)
        write_fixture_data(store, range(6 * k, 6 * k + 6), shift_ns=shift, wait_each=direct_min < 10**9)
        store.close()
        conn = connect_writer(str(path))
        comp = Compactor(head_max_age=0, head_max_points=100_000, pass_rows=90)
        comp.start(conn)
        for _ in range((0, 1, 2, 0, 2, 1)[k]):  # a head pass of part of the new rows, or nothing
            comp.step(conn, hour + 30 * 60 * 10**9)
        if k == 4:
            # And merges: this test's own, for how many the store's writer makes depends on whether it found
            # idle time between commits (on a busy machine it made none, and this test saw no merge).
            conn.execute("BEGIN IMMEDIATE")
            for (ids,) in conn.execute("SELECT group_concat(id) FROM (SELECT * FROM metric_chunks WHERE level = 0 "
                                       "ORDER BY seq, id) GROUP BY project_id, name, type, block_start "
                                       "HAVING count(*) > 1").fetchall():
                Compactor.merge_chunks(conn, [int(i) for i in ids.split(",")], 1)
            conn.execute("COMMIT")
        conn.close()
        reader = reader or connect_reader(str(path))
        assert _read_all(reader, warm) == _read_all(reader, PointCache(0)), k
        conn = sqlite3.connect(path)
        in_head.append(conn.execute("SELECT count(*) FROM metric_points").fetchone()[0])
        conn.close()
    assert any(in_head)  # some points were still in the head when the warm cache looked
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM metric_chunks WHERE level > 0").fetchone()[0] > 0  # and merged
    conn.close()
    compact_everything(path, hour + 3 * HOUR)  # every point moved: the warm cache reads nothing new twice
    assert _read_all(reader, warm) == _read_all(reader, PointCache(0))
    reader.close()


def test_points_of_many_hours_and_late_arrivals(tmp_path):
    path = tmp_path / "h.db"
    store = open_store(path)
    write_fixture_data(store, range(0, 20))
    write_fixture_data(store, range(0, 20), shift_ns=2 * HOUR)  # two hours later
    store.close()
    compact_everything(path, legacy.T0 + 5 * HOUR)
    store = open_store(path)
    write_fixture_data(store, range(20, 40))  # late points for the first, closed hour
    store.close()
    compact_everything(path, legacy.T0 + 5 * HOUR)
    conn = sqlite3.connect(path)
    per_hour = conn.execute("SELECT block_start, count(*), sum(n) FROM metric_chunks GROUP BY block_start").fetchall()
    assert [(b - legacy.T0 // HOUR * HOUR, c) for b, c, _ in per_hour] == [(0, 9), (2 * HOUR, 9)]
    conn.close()
    reference = tmp_path / "r.db"
    store = open_store(reference)
    write_fixture_data(store, range(0, 20))
    write_fixture_data(store, range(0, 20), shift_ns=2 * HOUR)
    write_fixture_data(store, range(20, 40))
    store.close()
    assert snapshot(path)["catalog"] == snapshot(reference)["catalog"]
    for key, value in snapshot(reference).items():
        if key not in ("catalog", "live"):
            # Rows are the same; the order among equal times may differ only across the two runs' writes.
            assert sorted(map(repr, snapshot(path)[key]["rows"])) == sorted(map(repr, value["rows"])), key


def test_retention_hides_expired_chunk_points_exactly(tmp_path):
    path = tmp_path / "r.db"
    store = open_store(path)
    write_fixture_data(store)  # steps 15 s apart: T0 .. T0 + 585 s
    store.close()
    compact_everything(path, legacy.T0 + 10 * HOUR)
    before = snapshot(path)
    cutoff = legacy.T0 + 300 * 10**9
    conn = connect_writer(str(path))
    conn.execute("BEGIN IMMEDIATE")
    assert not expire_metrics(conn, cutoff, 5000)
    conn.execute("COMMIT")
    # The chunks straddle the cutoff: they stay, their expired points are hidden and not counted.
    assert conn.execute("SELECT count(*) FROM metric_chunks").fetchone() == (9,)
    conn.close()
    after = snapshot(path)
    for key in before:
        if key in ("catalog", "live"):
            continue
        assert after[key]["rows"] == [r for r in before[key]["rows"] if r[3] >= cutoff], key
    counts = {(m.name, m.type): m.point_count for m in after["catalog"]}
    assert counts == {k: len(v["rows"]) for k, v in after.items() if k not in ("catalog", "live")}
    assert sum(counts.values()) < 840
    assert after["live"] == before["live"]  # the scrape's state is not history
    conn = connect_writer(str(path))
    conn.execute("BEGIN IMMEDIATE")
    expire_metrics(conn, legacy.T0 + HOUR, 5000)  # everything expired: whole chunks go
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM metric_chunks").fetchone() == (0,)
    conn.close()


def test_a_reader_keeps_its_snapshot_while_points_move(written):
    reader = connect_reader(str(written))
    cache = PointCache(0)
    with ReadTransaction(reader):
        series = select_series(reader, SeriesSelection(1, "legacy.load"))
        first = cache.points(reader, series, 0, 1 << 62)
        compact_everything(written, legacy.T0 + 10 * HOUR)  # commits while the reader's snapshot is open
        again = cache.points(reader, series, 0, 1 << 62)
    assert len(first) == len(again) == 196  # 5 series x 40 steps, minus the 4 points with no value
    with ReadTransaction(reader):
        after = cache.points(reader, series, 0, 1 << 62)
    assert _plain(after.value) == _plain(first.value)
    reader.close()


def test_last_seen_is_exact_though_metric_series_lags(tmp_path):
    path = tmp_path / "s.db"
    store = open_store(path)
    write_fixture_data(store, range(0, 2))  # one commit: new series, points at T0 and T0 + 15 s
    write_fixture_data(store, range(2, 4))  # another: T0 + 30 s and T0 + 45 s
    store.close()
    conn = sqlite3.connect(path)
    newest = dict(conn.execute("SELECT s.name, max(p.time_ns) FROM metric_points p JOIN metric_series s "
                               "ON s.id = p.series_id GROUP BY s.name"))
    stored = dict(conn.execute("SELECT name, max(last_seen_ns) FROM metric_series GROUP BY name"))
    conn.close()
    # The writer wrote last_seen_ns with each new series and not again within LAST_SEEN_LAG_NS ...
    assert stored["legacy.load"] == legacy.T0 and newest["legacy.load"] == legacy.T0 + 45 * 10**9
    # ... while the catalog, the names and the scrape's liveness read the exact newest time.
    reader = connect_reader(str(path))
    assert {m.name: m.last_seen_ns for m in metric_catalog(reader, 1)} == newest
    live = {r[0] for r in live_series_states(reader, 1, legacy.T0 + 45 * 10**9)}
    assert len(live) == 17  # every series has a point at T0 + 45 s
    assert live_series_states(reader, 1, legacy.T0 + 46 * 10**9) == []
    reader.close()


def test_set_members_stay_text_and_distributions_keep_their_totals_through_compaction(written):
    conn = connect_reader(str(written))
    with ReadTransaction(conn):
        ids = select_series(conn, SeriesSelection(1, "legacy.visitors", "set")).ids.tolist()
        dist = select_series(conn, SeriesSelection(1, "legacy.dist", "distribution")).ids.tolist()
        members_before = recent_observations(conn, ids, legacy.T0)
        observed_before = recent_observations(conn, dist, legacy.T0)
    conn.close()
    compact_everything(written, legacy.T0 + 10 * HOUR)
    conn = connect_reader(str(written))
    with ReadTransaction(conn):
        rows = point_rows(conn, ids)
        members = recent_observations(conn, ids, legacy.T0)
        observed = recent_observations(conn, dist, legacy.T0)
        state = conn.execute("SELECT count, sum, min, max FROM metric_series_state WHERE series_id = ?",
                             (dist[0],)).fetchone()
    conn.close()
    # "42" is a member, not a number: it comes back as the TEXT it was written as.
    assert {type(r[4]) for r in rows} == {str} and "42" in {r[4] for r in rows}
    assert {k: sorted(v) for k, v in members.items()} == {k: sorted(v) for k, v in members_before.items()}
    assert {k: sorted(map(repr, v)) for k, v in observed.items()} == {
        k: sorted(map(repr, v)) for k, v in observed_before.items()}
    values = observed[dist[0]]
    assert state == (len(values), sum(values), min(values), max(values))


@pytest.mark.parametrize("direct_min", [10**9, 1])
def test_tally_write_order_and_asserts_survive_compaction_and_an_emptied_head(tmp_path, direct_min):
    """Trifle's tally: every track/assert is a row, applied in write order (the head rowid). The compactor
    empties the head between the writes below, so rowids must keep growing past the moved ones."""
    from otelite.api.trifle.request import Write
    from otelite.api.trifle.rows import write_rows
    from otelite.collector.query.grid import CalendarGrid
    from otelite.collector.query.model import GroupKey
    path = tmp_path / "t.db"
    t0 = legacy.T0
    rng = np.random.default_rng(16)
    ops = []
    for round_ in range(4):
        store = open_store(path, direct_min_points=direct_min)  # 1: every write its own chunk
        for _ in range(60):
            t = t0 + int(rng.integers(0, 3 * 3600)) * 10**9
            op = "assert" if rng.random() < 0.2 else "track"
            ops.append((t, op, float(rng.integers(-5, 20))))
            store.writer.submit(write_rows(1, Write("k", t, {"x": ops[-1][2]}, op, False))).result(timeout=10)
        store.close()
        if round_ < 3:
            compact_everything(path, t0 + 10 * HOUR)  # the head is empty after this
            conn = sqlite3.connect(path)
            assert conn.execute("SELECT count(*) FROM metric_points").fetchone() == (0,)
            conn.close()

    def replay(grid) -> dict[int, float]:
        buckets: dict[int, float] = {}
        for t, op, v in ops:
            b = grid.floor(t)
            buckets[b] = v if op == "assert" else buckets.get(b, 0.0) + v
        return buckets

    def tallies() -> dict:
        conn = connect_reader(str(path))
        out = {}
        for grid in (CalendarGrid(1, "h"), CalendarGrid(7, "m"), CalendarGrid(1, "d")):
            q = Query(SeriesSelection(1, "k"), t0 - 2 * HOUR, t0 + 30 * HOUR, grid, Aggregation("tally"),
                      group_by=(GroupKey("path", "attribute"),))
            r = evaluate(conn, PointCache(0), q)
            (series,) = r.series
            out[grid] = {b: v for b, v in zip(series.starts(r.edges).tolist(), series.values.tolist())
                         if v == v}
            assert out[grid] == pytest.approx(replay(grid)), grid
        state = conn.execute("SELECT st.value FROM metric_series_state st JOIN metric_series s "
                             "ON s.id = st.series_id WHERE s.name = 'k'").fetchone()[0]
        conn.close()
        return out, state

    mixed = tallies()  # three rounds in chunks, the last in the head
    compact_everything(path, t0 + 10 * HOUR)
    assert tallies() == mixed  # all in chunks (merged across rounds)
    total = 0.0
    for _, op, v in ops:
        total = v if op == "assert" else total + v
    assert mixed[1] == total  # the scrape's running total folds every write in order


_H = '{"bounds":[1,2],"counts":'  # one layout of two bounds: three counts a point


@pytest.mark.parametrize("texts, fast_path", [
    (['{"bounds":[1.0,2.5],"counts":[1,2,3]}', '{"bounds":[1.00,2.5],"counts":[0,0,7]}',  # several layouts
      '{"bounds":[5],"counts":[4,1]}', '{"bounds":[1.0,2.5],"counts":[2,2,2]}'], True),
    (['{"bounds":[1.0],"counts":[1,2]}', None], False),  # a point without buckets
    (['{"bounds":[1.0],"counts":[1,2],"x":1}', '{"bounds":[1.0],"counts":[1,2]}'], False),  # a key after counts
    (['{"counts":[1,2],"bounds":[1.0]}'], False),  # another order
    (['{"bounds":[1.0],"counts":[1,2]}', '{"bounds":[2.0],"x":[3],"counts":[4,5]}'], False),
    (['{"bounds":[],"counts":[9]}', '[1,2]'], False),
    # One layout, the writer's usual commit: the counts of all points parsed as one flat list.
    ([_H + '[1,2,3]}', _H + '[0,0,7]}', _H + '[9007199254740993,-1,0]}'], True),  # past 2**53: rounded alike
    ([_H + '[1, 2 ,3]}', _H + '["4",true,null]}'], True),  # what JSON allows where numbers go
    # ... but a row of another length (4 + 2 numbers would pass for two rows of 3), an empty one, a list
    # in a row, or a key after the counts is read per point.
    ([_H + '[1,2]}', _H + '[3,4,5,6]}'], True),
    ([_H + '[1,2,3]}', _H + '[]}'], True),
    (['{"bounds":[],"counts":[]}'], True),
    ([_H + '[1,2,3],"x":[4,5,6]}', _H + '[7,8,9]}'], False),
])
def test_the_fast_bucket_parse_equals_the_general_one(monkeypatch, texts, fast_path):
    # chunks._histogram_buckets parses the normalizers' bucket JSON without json.loads per point; whatever
    # the text, the derived columns must be the general parse's.
    rows = [(1, 7, 0, 1000 + i, None, 3, 1.5, None, None, 0, t, None) for i, t in enumerate(texts)]
    assert (chunks._histogram_buckets(tuple(texts)) is not None) == fast_path
    fast = chunks.block_from_rows("histogram", rows, list(range(1, len(rows) + 1)))
    monkeypatch.setattr(chunks, "_histogram_buckets", lambda texts, bucket_counts=None: None)
    general = chunks.block_from_rows("histogram", rows, list(range(1, len(rows) + 1)))
    assert fast.points.bounds == general.points.bounds
    assert fast.points.bounds_id.tolist() == general.points.bounds_id.tolist()
    assert fast.points.bounds_id.dtype == general.points.bounds_id.dtype
    assert _plain(fast.points.counts) == _plain(general.points.counts)


def _histogram_request(layouts: list[tuple[list[float], list[list[int]]]], t0: int = 10**18):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add(name="g")
    for k, (bounds, rows) in enumerate(layouts):
        hist = sm.metrics.add(name=f"h{k}")
        hist.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        for i, counts in enumerate(rows):
            attrs = [common_pb2.KeyValue(key="i", value=common_pb2.AnyValue(int_value=i))]
            gauge.gauge.data_points.add(attributes=attrs, time_unix_nano=t0 + i, as_double=0.5)
            hist.histogram.data_points.add(attributes=attrs, time_unix_nano=t0 + i, explicit_bounds=bounds,
                                           bucket_counts=counts, count=sum(counts))
    return req


def test_the_walks_bucket_counts_are_its_texts_and_pack_the_same_chunk():
    # records.WriteBatch.bucket_counts: the OTLP walk gives each histogram point's counts as int64 bytes,
    # which packing reads instead of the JSON. They must be the text's numbers, for the right point after
    # batches are merged, and the chunk packed from them must be the one packed from the texts alone.
    import json
    from otelite.collector.store.writer import _merge
    big = (1 << 63) - 1
    layouts = [([0.5, 1.0], [[1, 2, 3], [0, 0, 0], [big - 2, 1, 1]]),
               ([], [[7], [9007199254740993]]),  # past 2**53: the same double either way
               ([1.0, 2.0, 3.0], [[], [1, 1, 1, 1]])]  # no buckets at all in one point
    a = metrics_to_batch(_histogram_request(layouts), 1)
    b = metrics_to_batch(_histogram_request(layouts[:1]), 1)
    for batch in (a, b, _merge([b, a])):
        histograms = [i for i, p in enumerate(batch.points) if p[10] is not None]
        assert sorted(batch.bucket_counts) == histograms  # every histogram point, and nothing else
        for i in histograms:
            counts = json.loads(batch.points[i][10])["counts"]
            assert np.frombuffer(batch.bucket_counts[i], np.int64).tolist() == counts
    for k in range(3):
        idx = [i for i, p in enumerate(a.points) if p[10] is not None and p[1] in
               {r[0] for r in a.series.values() if r[2] == f"h{k}"}]
        cols = chunks.stored_columns([a.points[i] for i in idx])
        with_counts = chunks.block_from_columns("histogram", cols, idx, [a.bucket_counts[i] for i in idx])
        parsed = chunks.block_from_columns("histogram", cols, idx)
        assert chunks.encode(with_counts.sorted()) == chunks.encode(parsed.sorted())
        assert _plain(with_counts.points.counts) == _plain(parsed.points.counts)
    # Bytes that do not fit the layout (another width, a point without them) are not used.
    texts = tuple(_H + row for row in ('[1,2,3]}', '[4,5,6]}'))
    three = np.array([1, 2, 3], np.int64).tobytes()
    for given in ([three, None], [three, three[:16]]):
        assert _plain(chunks._histogram_buckets(texts, given)[2]) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_points_whose_batch_lacks_their_series_rows_are_packed_under_their_metric(tmp_path):
    # appender.py asks the database for the series of points whose batch carries no row for them (here
    # the writer's cache is empty too: a new process). They go under their metric; a point of a series no
    # one stored keeps its project under no metric name, as the compactor's head pass does.
    path = tmp_path / "s.db"
    t0 = (time.time_ns() // HOUR - 1) * HOUR
    layout = [([0.5, 1.0], [[1, 2, 3], [4, 5, 6]])]  # gauge "g" and histogram "h0", two series each
    store = open_store(path, direct_min_points=1)
    store.writer.submit(metrics_to_batch(_histogram_request(layout, t0), 1)).result(10)
    store.close()
    later = metrics_to_batch(_histogram_request(layout, t0 + 60 * 10**9), 1)
    known = set(later.series)
    later.series = {}
    later.points.append((1, 12345, 0, t0 + 61 * 10**9, 2.5, None, None, None, None, 0, None, None))
    store = open_store(path, direct_min_points=1)
    store.writer.submit(later).result(10)
    store.close()
    conn = sqlite3.connect(path)
    counts = dict(conn.execute("SELECT name, sum(n) FROM metric_chunks GROUP BY name"))
    assert counts == {"g": 4, "h0": 4, "": 1}
    assert conn.execute("SELECT count(*) FROM metric_points").fetchone() == (0,)
    newest = dict(conn.execute("SELECT series_id, time_ns FROM metric_series_state"))
    assert len(known) == 4 and {newest[sid] for sid in known} == {t0 + 60 * 10**9, t0 + 60 * 10**9 + 1}
    conn.close()


@pytest.mark.parametrize("case", ["known", "a series without a row", "a float time"])
def test_a_commits_points_are_grouped_by_metric_and_hour_in_arrival_order(case):
    # appender._groups sorts the points by (metric number, hour) in numpy; the groups must be what a plain
    # loop gives: (project, name, type, hour) keys, indexes in arrival order, hours floored before 1970 too.
    import random
    from otelite.collector.store.appender import _groups
    from otelite.collector.store.series_cache import SeriesCache
    rng = random.Random(11)
    metrics = [(1, "a", "gauge"), (1, "b", "sum"), (2, "a", "gauge"), (1, "a", "sum")]
    rows = {sid: (sid, *metrics[sid % 4][:2], metrics[sid % 4][2], "", "", 2, 0, 1, 1, "{}", 0, 0)
            for sid in range(1, 40)}
    infos_of = SeriesCache().update(rows)
    hours = [-2 * HOUR - 5, -1, 0, 7 * HOUR + 3, 9 * HOUR]
    points = [(rows[sid][1], sid, 0, rng.choice(hours) + rng.randrange(HOUR // 2), 1.0, None, None, None, None,
               0, None, None) for sid in (rng.randrange(1, 40) for _ in range(600))]
    if case == "a series without a row":
        points[17] = (3, 999, 0, 5, 1.0) + points[17][5:]
    if case == "a float time":
        points[5] = points[5][:3] + (float(points[5][3]),) + points[5][4:]
    expected: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        info, t = infos_of.get(p[1]), p[3]
        key = (info[0], info[1], info[2], t - t % HOUR) if info is not None else (p[0], "", "", t - t % HOUR)
        expected.setdefault(key, []).append(i)
    got = _groups(points, [infos_of.get(p[1]) for p in points])
    assert got == expected
    assert all(type(k[3]) is type(points[v[0]][3]) for k, v in got.items())


@pytest.mark.parametrize("span_ns", [10**9, 1 << 61])  # the one-key sort, and lexsort when it cannot fit
def test_parts_sorted_by_series_then_time_keep_arrival_order_among_equal_points(span_ns):
    # points._sorted_parts: parts (chunks, the head) each sorted by (series, time), overlapping in time for
    # some series (points that arrived out of order); the result is sorted by (series, time) and points of
    # one series and time keep the order of their parts, as np.lexsort over the concatenation gives.
    from otelite.collector.store.points import Points, _sorted_parts
    rng = np.random.default_rng(5)
    parts = []
    for k in range(6):
        n = int(rng.integers(50, 400))
        sid = rng.integers(0, 12, n).astype(np.int64) * 1000 + 7
        t = rng.integers(0, 40, n).astype(np.int64) * (span_ns // 40) + k % 2  # many equal times
        order = np.lexsort((t, sid))
        sid, t = sid[order], t[order]
        tag = np.arange(n, dtype=np.float64) + 1000 * k  # tells every point apart
        parts.append(Points("number", sid, t, np.ones(n, bool), tag, tag, np.zeros(n, np.int64)))
    got = _sorted_parts(parts, "number")
    sid = np.concatenate([p.series_id for p in parts])
    t = np.concatenate([p.time for p in parts])
    tag = np.concatenate([p.value for p in parts])
    expected = np.lexsort((t, sid))
    assert got.value.tolist() == tag[expected].tolist()


def test_concatenation_gathered_in_an_order_is_the_concatenation_taken_in_it(written):
    # points.concat_all(parts, rows=...): each column gathered right after it is concatenated (one column
    # alive at a time) gives what taking the rows of the whole concatenation gives, for every kind of
    # point (set members, histogram bounds and exponential histograms' flat buckets merged as before);
    # so does consume=True, which drops each part's column once gathered.
    from otelite.collector.store.points import Points, concat_all
    from dataclasses import fields
    store = open_store(written)  # a second pass of the fixture, shifted: more than one chunk a metric
    write_fixture_data(store, range(40, 50), shift_ns=2 * HOUR)
    store.close()
    compact_everything(written, legacy.T0 + 10 * HOUR)
    conn = connect_reader(str(written))
    rng = np.random.default_rng(3)
    for name, mtype in METRICS:
        parts = [chunks.decode(payload, exact=False).points for (payload,) in conn.execute(
            "SELECT payload FROM metric_chunks WHERE project_id = 1 AND name = ? AND type = ? ORDER BY id",
            (name, mtype))]
        assert len(parts) > 1, name
        n = sum(len(p) for p in parts)
        for rows in (rng.permutation(n), np.sort(rng.choice(n, n // 3, replace=False)), rng.random(n) < 0.5):
            want = concat_all(parts, parts[0].kind).take(rows)
            handed_over = [replace(p) for p in parts]  # (shallow copies: `parts` keeps its columns)
            for got in (concat_all(parts, parts[0].kind, rows=rows),
                        concat_all(handed_over, parts[0].kind, rows=rows, consume=True)):
                for f in fields(Points):
                    a, b = getattr(got, f.name), getattr(want, f.name)
                    assert type(a) is type(b), (name, f.name)
                    if isinstance(a, np.ndarray):
                        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (name, f.name)
                    else:
                        assert a == b, (name, f.name)
                if got.kind in ("number", "tally", "set"):  # one column for both, as take() keeps it
                    assert (got.value is got.counter) == (want.value is want.counter), name
            # consumed: the parts handed over lost their columns as they were gathered
            assert all(p.series_id is None and p.time is None for p in handed_over), name
    conn.close()


def test_a_metric_hour_with_head_points_stays_in_the_head_until_they_move(tmp_path):
    # appender.py: points of one series and timestamp are read chunks first, then head; so while an hour of
    # a metric has points in the head, even a large group of that hour goes to the head. Another hour of
    # the same metric is packed at once. The reads equal those of the same data all through the head.
    from store_rows import batch, write

    def points(hour: int, n: int, value: float) -> list[tuple]:
        return [(legacy.T0 + hour * HOUR + (i % 5) * 10**9, value + i, {"host": f"h{i % 4}"}) for i in range(n)]

    writes = [batch(1, "m", "gauge", points(0, 3, 0.0)),      # small: head
              batch(1, "m", "gauge", points(0, 40, 100.0)),   # large, but its hour has head points: head
              batch(1, "m", "gauge", points(1, 40, 200.0))]   # large, another hour: a chunk at once
    path, reference = tmp_path / "a.db", tmp_path / "ref.db"
    for p, direct_min in ((path, 10), (reference, 10**9)):
        store = open_store(p, direct_min_points=direct_min)
        write(store, *writes)
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM metric_points").fetchone() == (43,)
    assert conn.execute("SELECT block_start - ?, n FROM metric_chunks", (legacy.T0,)).fetchall() == [(HOUR, 40)]
    conn.close()

    def reads(p: Path) -> list:
        c = connect_reader(str(p))
        with ReadTransaction(c):
            series = select_series(c, SeriesSelection(1, "m", "gauge"))
            out = [point_rows(c, series.ids.tolist()), _plain(PointCache(0).points(c, series, 0, 1 << 62).value)]
        c.close()
        return out

    assert reads(path) == reads(reference)
    compact_everything(path, legacy.T0 + 10 * HOUR)
    assert reads(path) == reads(reference)


@pytest.mark.parametrize("counts", [
    [[0.0, 1.0, 255.0]], [[0.0, 256.0, 3.0]], [[70000.0, 1.0, 0.0]], [[float(2**32 - 1), 0.0, 5.0]],  # narrowed
    [[float(2**32), 1.0, 2.0]], [[0.5, 1.0, 2.0]], [[-1.0, 1.0, 2.0]], [[-0.0, 1.0, 2.0]],  # kept as float64
    [[float("nan"), 1.0, 2.0]], [[float("inf"), 1.0, 2.0]],
])
def test_bucket_counts_round_trip_bit_for_bit(counts):
    # chunks._Writer.counts stores whole-number counts in a narrower type; whatever they are, decoding
    # gives back the very float64 values (bit for bit: -0.0 and NaN included).
    n = len(counts)
    p = chunks.Points("histogram", np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n, bool),
                      np.zeros(n), np.zeros(n), np.zeros(n, np.int64), total=np.zeros(n))
    p.bounds, p.bounds_id, p.counts = ((1.0, 2.0),), np.zeros(n, np.int32), np.array(counts, np.float64)
    zero = chunks.Exact(np.zeros(n, np.uint8))
    block = chunks.PointBlock(p, np.zeros(n, np.int64), {k: zero for k in chunks.EXACT_COLUMNS}, np.arange(n))
    payload = chunks.encode(block)
    narrowed = counts[0][0] in (0.0, 70000.0, float(2**32 - 1)) and not np.signbit(counts[0][0])
    assert (chunks._Reader(payload).header["arrays"]["counts"]["codec"] == "narrow") == narrowed
    back = chunks.decode(payload)
    assert back.points.counts.dtype == np.float64
    assert back.points.counts.tobytes() == p.counts.tobytes()
    # A query's decode keeps narrow-coded counts narrow (the point cache holds them so); same numbers.
    quick = chunks.decode(payload, exact=False).points.counts
    assert (quick.dtype.kind == "u") == narrowed
    assert np.array_equal(quick.astype(np.float64), p.counts, equal_nan=True)


@pytest.mark.parametrize("values,codec", [
    (['{"bounds":[1.0],"counts":[1,2]}', None, '{"a":"q\\"uote\\\\"}', ""], "joined"),  # quotes, escapes, empty
    (["é", None, "日本語 ✓", "\U0001F600", "plain"], "joined"),  # UTF-8 of 2, 3 and 4 bytes
    ([None, None, "only one"], "joined"),
    (["text", b"\x00\xffblob", None], "zlib"),  # a blob: the JSON list, as every column was before `joined`
])
def test_text_columns_round_trip_exactly(values, codec):
    # chunks._Writer.texts: an exact column's texts back to back with their lengths; a column holding a blob
    # keeps the JSON list. Either way decoding gives back every value and None where there was none.
    n = len(values)
    p = chunks.Points("number", np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n, bool),
                      np.zeros(n), np.zeros(n), np.zeros(n, np.int64))
    zero = chunks.Exact(np.zeros(n, np.uint8))
    exact = {k: zero for k in chunks.EXACT_COLUMNS}
    exact["buckets"] = chunks.Exact.from_values(values)
    payload = chunks.encode(chunks.PointBlock(p, np.zeros(n, np.int64), exact, np.arange(n)))
    assert chunks._Reader(payload).header["arrays"]["buckets.objs"]["codec"] == codec
    back = chunks.decode(payload).exact["buckets"].values()
    assert back == values and [type(v) for v in back] == [type(v) for v in values]


I64 = np.iinfo(np.int64)


@pytest.mark.parametrize("ints,codec,stored", [
    ([0, 1, 255], "offset", "|u1"), ([-5, 250], "offset", "|u1"), ([256, 0, 3], "offset", "<u2"),
    ([70_000, 1, 0], "offset", "<u4"), ([I64.min, I64.min + 2**32 - 1], "offset", "<u4"),
    ([I64.max - 3, I64.max], "offset", "|u1"), ([0, 2**32], "raw", None), ([I64.min, I64.max], "raw", None),
    ([7, 7, 7], "const", None),
])
def test_integer_columns_round_trip_in_the_narrowest_type(ints, codec, stored):
    # chunks._Writer.offsets stores int64 columns (an exact column's integers, flags, head rowids) as
    # distances from their smallest, narrowed; int64's extremes included, the same numbers come back.
    n = len(ints)
    p = chunks.Points("number", np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n, bool),
                      np.zeros(n), np.zeros(n), np.zeros(n, np.int64))
    ints = np.array(ints, np.int64)
    value = chunks.Exact(np.full(n, chunks.INTEGER, np.uint8))
    value.ints = ints
    zero = chunks.Exact(np.zeros(n, np.uint8))
    exact = {k: value if k == "value" else zero for k in chunks.EXACT_COLUMNS}
    flags = np.where(np.arange(n) % 2 == 1, rollups.PLAIN_FIRST, 0).astype(np.int64)
    block = chunks.PointBlock(p, flags, exact, np.arange(n))
    payload = chunks.encode(block)
    arrays = chunks._Reader(payload).header["arrays"]
    assert arrays["value.ints"]["codec"] == codec and arrays["value.ints"].get("stored") == stored
    assert arrays["flags"]["codec"] == "offset" and arrays["flags"]["stored"] == "<u2"
    back = chunks.decode(payload)
    assert back.exact["value"].ints.dtype == np.int64 and back.exact["value"].ints.tolist() == ints.tolist()
    assert back.flags.dtype == np.int64 and back.flags.tolist() == flags.tolist()


@pytest.mark.parametrize("values,dtype", [
    ([0.0, 255.0], np.uint8), ([256.0, 1.0], np.uint16), ([65536.0], np.uint32), ([float(2**32 - 1)], np.uint32),
    ([float(2**32)], None), ([0.5], None), ([-1.0], None), ([-0.0], None), ([float("nan")], None),
    ([float("inf")], None), ([], None)])
def test_narrow_dtype_holds_every_count_exactly_or_declines(values, dtype):
    a = np.array(values, np.float64)
    got = narrow_dtype(a)
    assert got == (np.dtype(dtype) if dtype else None)
    back = narrowed(a)
    assert back.tobytes() == a.tobytes() if dtype is None else np.array_equal(back.astype(np.float64), a)


def test_histogram_counts_stay_narrow_in_the_cache_and_quantiles_do_not_change(written):
    """Head rows and chunks alike: the cache holds whole-number bucket counts as unsigned integers, and
    the engine's histogram cells are what float64 counts give."""
    from otelite.collector.query.reduce import series_cells
    conn = connect_reader(str(written))
    edges = np.arange(legacy.T0, legacy.T0 + HOUR + 1, 60 * 10**9, dtype=np.int64)
    agg = Aggregation("histogram_quantile", q=0.9, across="sum")

    def cells(pts, series):
        sidx = np.searchsorted(series.ids, pts.series_id)
        b = np.searchsorted(edges, pts.time, side="right") - 1
        b[(pts.time < edges[0]) | (pts.time >= edges[-1])] = -1
        return series_cells(pts, sidx, b, agg, series.temporality, series.monotonic, edges, int(edges[0]))

    for stage in ("head", "chunks"):
        with ReadTransaction(conn):
            series = select_series(conn, SeriesSelection(1, "legacy.latency"))
            pts = PointCache().points(conn, series, legacy.T0 - HOUR, legacy.T0 + HOUR)
        assert len(pts) and pts.counts.dtype.kind == "u", stage
        wide = cells(replace(pts, counts=pts.counts.astype(np.float64)), series)
        narrow = cells(pts, series)
        # Cells of counts of at most 16 bits are int32 (reduce._cell_dtype), the same numbers as float64's.
        want = np.int32 if pts.counts.dtype.itemsize <= 2 else np.float64
        assert narrow.vec.dtype == want and wide.vec.dtype == np.float64, stage
        assert np.array_equal(narrow.vec, wide.vec), stage
        compact_everything(written, legacy.T0 + 10 * HOUR)
    conn.close()


def test_counts_of_chunks_written_before_the_narrow_codec_are_narrowed_for_queries():
    n = 3
    p = chunks.Points("histogram", np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n, bool),
                      np.zeros(n), np.zeros(n), np.zeros(n, np.int64), total=np.zeros(n))
    p.bounds, p.bounds_id = ((1.0, 2.0),), np.zeros(n, np.int32)
    p.counts = np.array([[0.0, 1.0, 2.0], [3.0, 300.0, 5.0], [6.0, 7.0, 8.0]])
    zero = chunks.Exact(np.zeros(n, np.uint8))
    block = chunks.PointBlock(p, np.zeros(n, np.int64), {k: zero for k in chunks.EXACT_COLUMNS}, np.arange(n))
    original = chunks._Writer.counts
    try:  # the writer as it was: counts stored as plain float64
        chunks._Writer.counts = chunks._Writer.array
        payload = chunks.encode(block)
    finally:
        chunks._Writer.counts = original
    assert chunks._Reader(payload).header["arrays"]["counts"]["codec"] != "narrow"
    quick = chunks.decode(payload, exact=False).points.counts
    assert quick.dtype == np.uint16 and np.array_equal(quick, p.counts)
    assert chunks.decode(payload).points.counts.dtype == np.float64
