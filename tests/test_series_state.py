"""metric_series_state: the latest state per series that the Prometheus scrape reads (series_state.py).

Real SQLite files and the real writer thread; OTLP requests built as protobuf and normalized by the same
code the receivers use. Exact values: delta sums and histograms must equal the sum of every delta.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from sqlite_utils import Database

from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.exporters.sqlite.config import SqliteExporterConfig
from otelite.collector.normalize.otlp import metrics_to_batch
from otelite.collector.store.db import prepare_database
from otelite.collector.store.migrations import MIGRATIONS, migrate
from otelite.collector.store.records import POINT_COLUMNS, SERIES_COLUMNS
from otelite.collector.store.series_state import STATE_COLUMNS, accumulate
from otelite.collector.store.writer import Writer

DELTA, CUMULATIVE = 1, 2
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def _attrs(**kv):
    return [common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in kv.items()]


def _request(metrics: list[metrics_pb2.Metric]) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource={"attributes": _attrs(**{"service.name": "svc"})},
        scope_metrics=[metrics_pb2.ScopeMetrics(scope={"name": "lib"}, metrics=metrics)])])


def _sum(name, temporality, points, monotonic=True):
    return metrics_pb2.Metric(name=name, sum=metrics_pb2.Sum(
        aggregation_temporality=temporality, is_monotonic=monotonic,
        data_points=[metrics_pb2.NumberDataPoint(start_time_unix_nano=s, time_unix_nano=t, attributes=_attrs(k="a"),
                                                 **({"as_double": v} if isinstance(v, float) else {"as_int": v}))
                     for s, t, v in points]))


def _gauge(name, points):
    return metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(data_points=[
        metrics_pb2.NumberDataPoint(time_unix_nano=t, as_double=v) for t, v in points]))


def _hist(name, temporality, points, bounds=(1.0, 10.0)):
    return metrics_pb2.Metric(name=name, histogram=metrics_pb2.Histogram(
        aggregation_temporality=temporality, data_points=[
            metrics_pb2.HistogramDataPoint(start_time_unix_nano=s, time_unix_nano=t, count=sum(counts),
                                           sum=total, min=lo, max=hi, explicit_bounds=b or bounds,
                                           bucket_counts=counts)
            for s, t, counts, total, lo, hi, *b in points]))


def _exp(name, temporality, points):
    return metrics_pb2.Metric(name=name, exponential_histogram=metrics_pb2.ExponentialHistogram(
        aggregation_temporality=temporality, data_points=[
            metrics_pb2.ExponentialHistogramDataPoint(
                start_time_unix_nano=T0, time_unix_nano=t, scale=scale, zero_count=zc,
                count=zc + sum(pos), sum=1.0,
                positive=metrics_pb2.ExponentialHistogramDataPoint.Buckets(offset=off, bucket_counts=pos))
            for t, scale, zc, off, pos in points]))


REQUESTS = [
    _request([
        _sum("delta.sum", DELTA, [(T0, T0 + 1 * S, 5), (T0 + 1 * S, T0 + 2 * S, 7)]),
        _sum("cumulative.sum", CUMULATIVE, [(T0, T0 + 2 * S, 12), (T0, T0 + 1 * S, 5)]),  # out of order
        _gauge("gauge", [(T0 + 1 * S, 1.5)]),
        _hist("delta.hist", DELTA, [(T0, T0 + S, [1, 2, 0], 6.0, 0.5, 4.0)]),
        _exp("delta.exp", DELTA, [(T0 + S, 1, 1, 2, [1, 1])]),
        _sum("delta.updown", DELTA, [(T0, T0 + S, 3)], monotonic=False),
    ]),
    _request([
        _sum("delta.sum", DELTA, [(T0 + 2 * S, T0 + 3 * S, 100)]),
        _gauge("gauge", [(T0 + 3 * S, 2.5), (T0 + 2 * S, 9.9)]),
        _hist("delta.hist", DELTA, [(T0 + S, T0 + 2 * S, [0, 1, 3], 50.5, 0.25, 20.0)]),
        _exp("delta.exp", DELTA, [(T0 + 2 * S, 0, 2, 1, [3])]),  # coarser scale
        _sum("delta.updown", DELTA, [(T0 + S, T0 + 2 * S, -5)], monotonic=False),
    ]),
]
EXPECTED = {
    "delta.sum": {"value": 112, "start_ns": T0, "time_ns": T0 + 3 * S},
    "cumulative.sum": {"value": 12, "start_ns": T0, "time_ns": T0 + 2 * S},
    "gauge": {"value": 2.5, "time_ns": T0 + 3 * S},
    "delta.hist": {"count": 7, "sum": 56.5, "min": 0.25, "max": 20.0, "start_ns": T0, "time_ns": T0 + 2 * S,
                   "buckets": {"bounds": [1.0, 10.0], "counts": [1, 3, 3]}},
    # scale 1 buckets 2, 3 (offset 2) fold into scale 0 bucket 1 (2>>1, 3>>1); + scale 0 bucket 1: 3 more
    "delta.exp": {"count": 8, "buckets": {"scale": 0, "zero_count": 3, "zero_threshold": 0.0,
                                          "positive": {"offset": 1, "counts": [5]},
                                          "negative": {"offset": 0, "counts": []}}},
    "delta.updown": {"value": -2},
}


def _states(path) -> dict[str, dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT s.name, st.* FROM metric_series_state st JOIN metric_series s "
                            "ON s.id = st.series_id").fetchall()
    finally:
        conn.close()
    out = {}
    for r in rows:
        d = dict(r)
        del d["slot"]  # where the row lies in the table (migration 0012), not part of the state
        if d["buckets"]:
            d["buckets"] = json.loads(d["buckets"])
        out[d.pop("name")] = d
    return out


def _write_with_writer(path: str, requests, *, migrate: bool = True) -> None:
    """`migrate=False`: write into the file at the schema it has (a store of an older release)."""
    if migrate:
        prepare_database(path)
    writer = Writer(path, SqliteExporterConfig(path=path), BatchProcessorConfig())
    writer.start()
    try:
        for req in requests:
            writer.submit(metrics_to_batch(req, 1)).result(10)
    finally:
        writer.close(10)


def test_writer_keeps_the_latest_state_and_exact_delta_totals(tmp_path):
    path = str(tmp_path / "w.db")
    _write_with_writer(path, REQUESTS)
    states = _states(path)
    assert set(states) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        got = {k: states[name][k] for k in expected}
        assert got == expected, name


def test_a_value_point_state_keeps_its_flags_and_exemplars_and_clears_nothing_else(tmp_path):
    """A gauge's or a sum's state row holds the newest point's flags (a no-recorded-value point's 1), value
    and start, NULL in the columns of the other kinds, and a newer point without exemplars keeps the last
    ones seen."""
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar
    path = str(tmp_path / "v.db")
    with_exemplar = _gauge("g.exemplar", [(T0 + S, 1.5)])
    with_exemplar.gauge.data_points[0].exemplars.append(Exemplar(time_unix_nano=T0 + S, as_double=1.5,
                                                                 span_id=b"\x01" * 8, trace_id=b"\x02" * 16))
    no_value = metrics_pb2.NumberDataPoint(time_unix_nano=T0 + 2 * S, flags=1)
    _write_with_writer(path, [
        _request([with_exemplar, _gauge("g.novalue", [(T0 + S, 4.0)]), _sum("s.flags", CUMULATIVE, [(T0, T0 + S, 3)])]),
        _request([_gauge("g.exemplar", [(T0 + 2 * S, 2.5)]),
                  metrics_pb2.Metric(name="g.novalue", gauge=metrics_pb2.Gauge(data_points=[no_value]))]),
    ])
    states = _states(path)
    assert states["g.exemplar"]["value"] == 2.5 and states["g.exemplar"]["time_ns"] == T0 + 2 * S
    assert json.loads(states["g.exemplar"]["exemplars"])  # the first point's, kept
    assert (states["g.novalue"]["value"], states["g.novalue"]["flags"], states["g.novalue"]["time_ns"]) == (
        None, 1, T0 + 2 * S)
    assert (states["s.flags"]["value"], states["s.flags"]["start_ns"], states["s.flags"]["flags"]) == (3, T0, 0)
    for name in ("g.exemplar", "g.novalue", "s.flags"):
        assert [states[name][c] for c in ("count", "sum", "min", "max", "buckets")] == [None] * 5


def test_one_batch_holding_every_point_gives_the_same_state(tmp_path):
    # The writer merges concurrent requests into one commit; the fold must not depend on that.
    merged = ExportMetricsServiceRequest()
    for req in REQUESTS:
        merged.resource_metrics.extend(req.resource_metrics)
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    _write_with_writer(a, REQUESTS)
    _write_with_writer(b, [merged])
    assert _states(a) == _states(b)


def test_migration_backfills_the_state_of_an_older_store(tmp_path):
    """A store written before 0003_series_state gets the same states, computed from its stored points."""
    old = str(tmp_path / "old.db")
    conn = sqlite3.connect(old)
    db = Database(conn)
    MIGRATIONS.apply(db, stop_before="0003_series_state")
    db.execute("PRAGMA user_version = 2")
    for req in REQUESTS:  # rows exactly as the writer of that version inserted them
        batch = metrics_to_batch(req, 1)
        conn.executemany(f"INSERT OR IGNORE INTO metric_series ({', '.join(SERIES_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(SERIES_COLUMNS))})", list(batch.series.values()))
        conn.executemany(f"INSERT INTO metric_points ({', '.join(POINT_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(POINT_COLUMNS))})", batch.points)
    conn.commit()
    assert "metric_series_state" not in db.table_names()
    migrate(db)
    conn.close()
    fresh = str(tmp_path / "fresh.db")
    _write_with_writer(fresh, REQUESTS)
    assert _states(old) == _states(fresh)


def _slots(path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT s.name, st.slot FROM metric_series_state st JOIN metric_series s "
                                 "ON s.id = st.series_id"))
    finally:
        conn.close()


def test_migration_0012_keeps_every_state_and_lays_the_rows_out_in_first_seen_order(tmp_path):
    """A store of schema 11 (state rows keyed by the series fingerprint) gets the same state rows, in the
    order their series were first seen, and the writer then updates them in place."""
    old = str(tmp_path / "v11.db")
    conn = sqlite3.connect(old)
    db = Database(conn)
    MIGRATIONS.apply(db, stop_before="0012_series_state_by_arrival")
    db.execute("PRAGMA user_version = 11")
    conn.commit()
    conn.close()
    # Written by the writer as the release before 0012 would: its statements name no slot.
    _write_with_writer(old, REQUESTS, migrate=False)
    conn = sqlite3.connect(old)
    assert "slot" not in [r[1] for r in conn.execute("PRAGMA table_info(metric_series_state)")]
    # Series first seen in an order unlike their fingerprints' (the old table's key order).
    names = [r[0] for r in conn.execute("SELECT name FROM metric_series ORDER BY id DESC")]
    for i, name in enumerate(names):
        conn.execute("UPDATE metric_series SET first_seen_ns = ? WHERE name = ?", (T0 + i, name))
    before = conn.execute("SELECT * FROM metric_series_state ORDER BY series_id").fetchall()
    conn.commit()
    migrate(Database(conn))
    conn.close()
    states = _states(old)
    conn = sqlite3.connect(old)
    after = conn.execute(f"SELECT {', '.join(STATE_COLUMNS)} FROM metric_series_state ORDER BY series_id").fetchall()
    conn.close()
    assert after == before
    slots = _slots(old)
    assert sorted(slots, key=slots.get) == names
    _write_with_writer(old, [_request([_gauge("gauge", [(T0 + 9 * S, 7.5)])]),
                             _request([_sum("delta.sum", DELTA, [(T0 + 8 * S, T0 + 9 * S, 1)])])])
    assert _slots(old) == slots  # updated in place: a newest point and a running total alike
    assert _states(old)["gauge"]["value"] == 7.5
    assert _states(old)["delta.sum"]["value"] == states["delta.sum"]["value"] + 1


@pytest.mark.parametrize("values", [[3, 4, 5], [2**62, 2**62, 2**62, 7]], ids=["small", "past-int64"])
def test_the_distribution_backfill_sums_as_the_writer_does(tmp_path, values):
    """Migration 0005's backfill of Flux distributions' running totals over the points a store holds.
    Integer observations summing past int64 made SQLite's sum() raise "integer overflow", which failed the
    migration (the store would not open); such sums are added as doubles."""
    from otelite.api.flux.ingest import metric_rows, parse_metric
    from otelite.collector.store.series_state import STATE_COLUMNS, backfill_distributions, state_row
    path = str(tmp_path / "d.db")
    prepare_database(path)
    batch = metric_rows(1, [parse_metric({"name": "d", "type": "distribution", "value": v,
                                          "timestamp": f"2026-01-01T00:00:0{i}Z"}, 0) for i, v in enumerate(values)])
    conn = sqlite3.connect(path)
    conn.executemany(f"INSERT INTO metric_series ({', '.join(SERIES_COLUMNS)}) VALUES ({', '.join('?' * len(SERIES_COLUMNS))})",
                     list(batch.series.values()))
    conn.executemany(f"INSERT INTO metric_points ({', '.join(POINT_COLUMNS)}) VALUES ({', '.join('?' * len(POINT_COLUMNS))})",
                     batch.points)
    conn.execute(f"INSERT INTO metric_series_state ({', '.join(STATE_COLUMNS)}) VALUES ({', '.join('?' * len(STATE_COLUMNS))})",
                 state_row(batch.points[-1]))  # the newest point's state, as the writer before 0005 kept it
    backfill_distributions(conn)
    count, total, lo, hi = conn.execute("SELECT count, sum, min, max FROM metric_series_state").fetchone()
    conn.close()
    assert (count, lo, hi) == (len(values), min(values), max(values))
    assert total == float(sum(values))  # (the column is REAL)


def _point(t, value=None, count=None, total=None, buckets=None, start=0, flags=0):
    return (1, 42, start, t, value, count, total, None, None, flags, buckets, None)


def test_delta_sums_stay_exact_integers_and_overflow_to_float():
    big = (1 << 63) - 10
    state = accumulate("sum", None, [_point(1, 5), _point(2, 6)])
    assert state[4] == 11 and isinstance(state[4], int)
    state = accumulate("sum", state, [_point(3, big)])
    assert state[4] == float(big + 11)  # beyond int64: kept as a double instead of failing the commit
    assert accumulate("sum", None, [_point(1, 1.5), _point(2, "NaN")])[4] == "NaN"


def test_changed_histogram_bounds_restart_the_total():
    a = json.dumps({"bounds": [1.0], "counts": [1, 1]})
    b = json.dumps({"bounds": [2.0], "counts": [0, 3]})
    state = accumulate("histogram", None, [_point(1, count=2, total=3.0, buckets=a, start=1),
                                           _point(2, count=3, total=9.0, buckets=b, start=2)])
    assert (state[3], state[5], state[6], json.loads(state[10])) == (2, 3, 9.0, {"bounds": [2.0], "counts": [0, 3]})


@pytest.mark.parametrize("kind", ["sum", "histogram"])
def test_a_delta_without_a_recorded_value_adds_nothing(tmp_path, kind):
    path = str(tmp_path / "n.db")
    point = metrics_pb2.NumberDataPoint(start_time_unix_nano=T0, time_unix_nano=T0 + S, flags=1)
    if kind == "sum":
        metric = metrics_pb2.Metric(name="m", sum=metrics_pb2.Sum(aggregation_temporality=DELTA, is_monotonic=True,
                                                                  data_points=[point]))
        first = _sum("m", DELTA, [(T0, T0 + S, 4)])
    else:
        metric = metrics_pb2.Metric(name="m", histogram=metrics_pb2.Histogram(
            aggregation_temporality=DELTA, data_points=[metrics_pb2.HistogramDataPoint(
                start_time_unix_nano=T0, time_unix_nano=T0 + 2 * S, flags=1)]))
        first = _hist("m", DELTA, [(T0, T0 + S, [4, 0, 0], 2.0, 0.5, 0.5)])
    first.ClearField("sum" if kind == "histogram" else "histogram")
    for dp in getattr(first, kind).data_points:
        del dp.attributes[:]
    _write_with_writer(path, [_request([first]), _request([metric])])
    state = _states(path)["m"]
    assert (state["value"] if kind == "sum" else state["count"]) == 4
