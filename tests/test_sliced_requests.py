"""Large requests walked and stored in parts (collector/normalize/split.py, records.SlicedBatch): the parts
walk into exactly the rows of the whole request, the writer stores them into exactly what the whole
request would have made, in one transaction (all or nothing), and a live server stores a request of more
than SLICE_ITEMS points or spans, from both transports, item for item."""

from __future__ import annotations

import concurrent.futures
import pickle
import sqlite3
import time
import zlib

import grpc
import httpx
import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from conftest import trace_request
from metrics_otlp import DELTA, _kvs
from otelite.collector.normalize.otlp import OtlpDataError, metrics_to_batch, traces_to_batch
from otelite.collector.normalize.split import metric_items, trace_items
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.pipeline.decode import walk_metrics, walk_traces
from otelite.collector.pipeline.walker import SLICE_ITEMS
from otelite.collector.store.points import ReadTransaction, point_rows
from otelite.collector.store.records import SlicedBatch, WriteBatch
from otelite.collector.store.series_state import LAST_SEEN_LAG_NS, STATE_COLUMNS
from otelite.collector.store.store import Store
from otelite.collector.store.writer import StoreUnavailable, _merge
from otelite.exporters.sqlite.config import SqliteExporterConfig
from test_wire import _batches_equal, _requests, _trace_requests


def _every_kind(points_per_metric: int = 6) -> ExportMetricsServiceRequest:
    """Two resources with schema URLs, two scopes each, every kind of metric with its aggregation fields,
    metadata, exemplars, a metric with no data and an invalid point (rejected alone), several series."""
    req = ExportMetricsServiceRequest()
    t0 = (time.time_ns() // 10**9 - 3600) * 10**9
    for r in range(2):
        rm = req.resource_metrics.add(schema_url=f"https://r/{r}")
        rm.resource.attributes.extend(_kvs({"service.name": f"svc{r}"}))
        for s in range(2):
            sm = rm.scope_metrics.add(schema_url=f"https://s/{s}")
            sm.scope.name, sm.scope.version = f"scope{s}", "1.0"
            sm.metrics.add(name="empty", unit="1")  # no data: nothing to store
            g = sm.metrics.add(name="g", unit="By", description="a gauge")
            g.metadata.extend(_kvs({"m": "x"}))
            c = sm.metrics.add(name="c")
            c.sum.aggregation_temporality, c.sum.is_monotonic = DELTA, True
            h = sm.metrics.add(name="h")
            h.histogram.aggregation_temporality = DELTA
            e = sm.metrics.add(name="e")
            e.exponential_histogram.aggregation_temporality = DELTA
            q = sm.metrics.add(name="q")
            for i in range(points_per_metric):
                t = t0 + i * 10**9
                attrs = _kvs({"k": i % 3})
                dp = g.gauge.data_points.add(time_unix_nano=t, as_double=i / 4, attributes=attrs)
                dp.exemplars.add(time_unix_nano=t, as_int=i, span_id=bytes(7) + b"\x01", trace_id=bytes(15) + b"\x01")
                c.sum.data_points.add(time_unix_nano=t, start_time_unix_nano=t - 10**9, as_int=i, attributes=attrs)
                h.histogram.data_points.add(time_unix_nano=t, attributes=attrs, explicit_bounds=[1.0, 2.0],
                                            bucket_counts=[i, 1, 0], count=i + 1, sum=1.5)
                dp = e.exponential_histogram.data_points.add(time_unix_nano=t, attributes=attrs, scale=2,
                                                             zero_count=1, count=i + 1)
                dp.positive.offset, dp.positive.bucket_counts[:] = -1, [i]
                dp = q.summary.data_points.add(time_unix_nano=t, attributes=attrs, count=2, sum=3.0)
                dp.quantile_values.add(quantile=0.5, value=1.5)
            h.histogram.data_points.add(time_unix_nano=t0, explicit_bounds=[2.0, 1.0], bucket_counts=[1, 1, 1], count=3)
    return req


def _parts_walk_alike(walk, to_batch, count, req, project_id: int, limit: int) -> None:
    try:
        whole = to_batch(req, project_id)
    except OtlpDataError as e:
        with pytest.raises(OtlpDataError, match=str(e)):
            walk(req.SerializeToString(), project_id, limit)
        return
    sliced = walk(req.SerializeToString(), project_id, limit)
    if count(req) <= limit:
        assert isinstance(sliced, WriteBatch)
        _batches_equal(sliced, whole)
        return
    assert isinstance(sliced, SlicedBatch)
    parts = list(sliced.batches())
    assert all(0 < p.items <= limit for p in parts)
    for p in parts:  # what the writer needs of a part: the rows its rows refer to
        assert all(s[8] in p.resources and s[9] in p.scopes for s in p.series.values())
        assert all(pt[1] in p.series for pt in p.points)
        assert all(s[18] in p.resources and s[19] in p.scopes for s in p.spans)
    merged = _merge(parts) if len(parts) > 1 else parts[0] if parts else WriteBatch()  # (none: all rejected)
    merged.rejected, merged.errors = sliced.rejected, sliced.errors
    _batches_equal(merged, whole)
    assert sliced.items == whole.items


@settings(max_examples=200, deadline=None)
@given(_requests(), st.integers(1, 6))
def test_metric_parts_walk_into_the_rows_of_the_whole_request(req, limit):
    _parts_walk_alike(walk_metrics, metrics_to_batch, metric_items, req, 5, limit)


@settings(max_examples=200, deadline=None)
@given(_trace_requests(), st.integers(1, 6))
def test_trace_parts_walk_into_the_rows_of_the_whole_request(req, limit):
    _parts_walk_alike(walk_traces, traces_to_batch, trace_items, req, 5, limit)


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_every_metric_kind_and_field_survives_the_split(limit):
    req = _every_kind()
    _parts_walk_alike(walk_metrics, metrics_to_batch, metric_items, req, 1, limit)
    assert metrics_to_batch(req, 1).rejected == 4  # the unordered bounds, once per scope


def _store(path) -> Store:
    s = Store(SqliteExporterConfig(path=str(path), busy_timeout=0.05), BatchProcessorConfig())
    s.start()
    return s


def _contents(path) -> dict:
    """Every table a request writes to, and every point wherever it is kept (head or chunks)."""
    conn = sqlite3.connect(path)
    try:
        out = {t: sorted(conn.execute(f"SELECT {cols} FROM {t}").fetchall(), key=repr) for t, cols in {
            "spans": "*", "span_attribute_keys": "*", "span_attribute_values": "*", "resources": "*",
            "scopes": "*", "metric_series": "*", "metric_series_labels": "*",
            # (not the state's `slot`: where a row lies follows the order of the writes, migration 0012)
            "metric_series_state": ", ".join(STATE_COLUMNS)}.items()}
        with ReadTransaction(conn):
            out["points"] = point_rows(conn, [r[0] for r in conn.execute("SELECT id FROM metric_series")])
        return out
    finally:
        conn.close()


def _a_series_over_minutes(limit: int) -> ExportMetricsServiceRequest:
    """One gauge series of a point a second over four parts: no part spans LAST_SEEN_LAG_NS, the request
    does, so its last_seen_ns must move in a later part than the one that stored the series."""
    req = ExportMetricsServiceRequest()
    t0 = (time.time_ns() // 10**9 - 3600) * 10**9
    dps = req.resource_metrics.add().scope_metrics.add().metrics.add(name="minutes").gauge.data_points
    for i in range(4 * limit):
        dps.add(time_unix_nano=t0 + i * 10**9, as_int=i)
    return req


def test_the_writer_stores_the_parts_as_it_stores_the_whole_request(tmp_path):
    metrics = _every_kind(points_per_metric=40)
    metrics.MergeFrom(_a_series_over_minutes(37))
    traces = trace_request(300, seed=4, with_attribute=True)
    for name, limit in (("whole", None), ("parts", 37)):
        store = _store(tmp_path / f"{name}.db")
        try:
            for walk, req in ((walk_metrics, metrics), (walk_traces, traces)):
                rows = walk(req.SerializeToString(), 1, limit)
                assert isinstance(rows, SlicedBatch if limit else WriteBatch)
                store.writer.submit(rows).result(30)
        finally:
            store.close()
    whole, parts = _contents(tmp_path / "whole.db"), _contents(tmp_path / "parts.db")
    assert len(whole["points"]) == 2 * 2 * 5 * 40 + 4 * 37 and len(whole["spans"]) == 300
    # metric_series.last_seen_ns may lag the newest point by LAST_SEEN_LAG_NS, by design (series_state.py),
    # and where within that it lands depends on how the points were grouped into writes: it is checked
    # against that bound, the rest of every row for equality.
    for contents in (whole, parts):
        newest = {}
        for p in contents["points"]:
            newest[p[1]] = max(newest.get(p[1], p[3]), p[3])
        assert all(s[12] >= newest[s[0]] - LAST_SEEN_LAG_NS for s in contents["metric_series"])
        contents["metric_series"] = [s[:12] for s in contents["metric_series"]]
    assert parts == whole


def test_a_request_in_parts_is_stored_whole_or_not_at_all(tmp_path):
    """The third of five parts holds a row SQLite refuses (a span time over int64, which the walk would
    reject, but another path might not): nothing of the request is stored, its client is told 503, and
    the requests around it are stored."""
    store = _store(tmp_path / "w.db")
    try:
        sliced = walk_traces(trace_request(50, seed=1).SerializeToString(), 1, 10)
        poisoned = list(sliced.batches())
        bad = poisoned[2].spans[4]
        poisoned[2].spans[4] = bad[:8] + (1 << 63,) + bad[9:]
        sliced.parts = [zlib.compress(pickle.dumps(b)) for b in poisoned]
        before = store.writer.submit(walk_traces(trace_request(5, seed=2).SerializeToString(), 1))
        refused = store.writer.submit(sliced)
        after = store.writer.submit(walk_traces(trace_request(20, seed=3).SerializeToString(), 1, 10))
        before.result(10)
        after.result(10)
        with pytest.raises(StoreUnavailable):
            refused.result(10)
        conn = sqlite3.connect(tmp_path / "w.db")
        traces = sorted(int.from_bytes(r[0], "big") // 1_000_000 for r in conn.execute("SELECT trace_id FROM spans"))
        conn.close()
        assert traces == [2] * 5 + [3] * 20  # (trace_request's ids: seed * 10^6 + index + 1)
        assert store.writer.queued == 0
    finally:
        store.close()


def _stuck_seen_while_writing(store, monkeypatch, batch, part_seconds: float, idle_first: float = 0.0,
                              more: WriteBatch | None = None) -> list[bool]:
    """What /healthz's `is_stuck` said, every 20 ms, while `batch` was written with each part's write made
    `part_seconds` slower, after the writer idled `idle_first` seconds; `more` is submitted as soon as the
    writer is stuck (and written after `batch`)."""
    write = store.writer._write

    def slow_write(conn, part):
        time.sleep(part_seconds)
        return write(conn, part)

    monkeypatch.setattr(store.writer, "_write", slow_write)
    time.sleep(idle_first)
    done = store.writer.submit(batch)
    seen_stuck = []
    while not done.done():
        seen_stuck.append(store.writer.is_stuck())
        if more is not None and seen_stuck[-1]:
            done, more = _both(done, store.writer.submit(more)), None
        time.sleep(0.02)
    done.result()
    return seen_stuck


def _both(a, b):
    """A future done when `a` and `b` are (the result of `b`)."""
    both = concurrent.futures.Future()
    a.add_done_callback(lambda _: b.add_done_callback(lambda f: both.set_result(f.result())))
    return both


def test_a_long_transaction_of_parts_is_progress_not_a_stuck_writer(tmp_path, monkeypatch):
    """/healthz calls the writer stuck when work waits STUCK_AFTER_S without progress; a request of many
    parts (here each part's write made slow) is progressing all along."""
    from otelite.collector.store import writer as writer_module
    monkeypatch.setattr(writer_module, "STUCK_AFTER_S", 0.3)
    store = _store(tmp_path / "w.db")
    try:
        sliced = walk_traces(trace_request(80, seed=1).SerializeToString(), 1, 10)  # 8 parts: 1.2 s
        seen_stuck = _stuck_seen_while_writing(store, monkeypatch, sliced, 0.15)
        assert len(seen_stuck) > 30 and not any(seen_stuck)
    finally:
        store.close()


def test_work_arriving_at_an_idle_writer_has_not_waited_yet(tmp_path, monkeypatch):
    """The writer's idle time is not time a request has waited: after idling longer than STUCK_AFTER_S,
    a request whose first part takes a while does not make /healthz call the writer stuck (it did: a 20 MiB
    OTLP/JSON body on a loaded CI machine got 503 from /healthz while its first part was written)."""
    from otelite.collector.store import writer as writer_module
    monkeypatch.setattr(writer_module, "STUCK_AFTER_S", 0.3)
    store = _store(tmp_path / "w.db")
    try:
        # Idle for 1 s first (its wait is 30 s long: the compactor's next look), longer than STUCK_AFTER_S.
        batch = walk_traces(trace_request(5, seed=1).SerializeToString(), 1)
        seen_stuck = _stuck_seen_while_writing(store, monkeypatch, batch, 0.2, idle_first=1.0)
        assert len(seen_stuck) > 5 and not any(seen_stuck)
    finally:
        store.close()


def test_a_writer_that_makes_no_progress_is_stuck_until_it_commits(tmp_path, monkeypatch):
    """The other side: a write that takes longer than STUCK_AFTER_S with nothing committed or written
    meanwhile makes the writer stuck (/healthz 503), from STUCK_AFTER_S after the work arrived, not at once,
    and no longer once it has committed."""
    from otelite.collector.store import writer as writer_module
    monkeypatch.setattr(writer_module, "STUCK_AFTER_S", 0.5)
    store = _store(tmp_path / "w.db")
    try:
        batch = walk_traces(trace_request(5, seed=1).SerializeToString(), 1)
        more = walk_traces(trace_request(5, seed=2).SerializeToString(), 1)
        seen_stuck = _stuck_seen_while_writing(store, monkeypatch, batch, 1.5, idle_first=1.0, more=more)
        # Still stuck just after more work arrived: work joining a queue does not restart its clock (only
        # work entering an empty one does). (Not `all` of the last samples: the part's end counts as
        # progress a moment before its commit.)
        first = seen_stuck.index(True)
        assert not seen_stuck[0] and seen_stuck[first + 1]
        assert not store.writer.is_stuck()
    finally:
        store.close()


@pytest.mark.parametrize("target_info", [True, False])
def test_remote_write_forwards_a_request_in_parts_as_it_forwards_it_whole(monkeypatch, target_info):
    """The prometheusremotewrite forwarder walks an export-log entry again; a large one in parts now (one
    part's rows in memory at a time): the same state, the same WriteRequests, byte for byte."""
    from otelite.collector.store.export_log import Entry
    from otelite.exporters.prometheusremotewrite import convert
    from otelite.exporters.prometheusremotewrite.config import PrometheusRemoteWriteExporterConfig

    first = _every_kind(points_per_metric=40)
    first.MergeFrom(_a_series_over_minutes(37))
    # A resource whose newest point is not in its last part: target_info is sent once, at that point.
    t0 = (time.time_ns() // 10**9 - 3600) * 10**9
    late = first.resource_metrics.add()
    late.resource.attributes.extend(_kvs({"service.name": "late", "region": "eu"}))  # (region: target_info)
    sm = late.scope_metrics.add()
    for name, times in (("new", range(60, 134)), ("old", range(37))):
        dps = sm.metrics.add(name=name).gauge.data_points
        for i in times:
            dps.add(time_unix_nano=t0 + i * 10**9, as_int=i)
    second = _every_kind(points_per_metric=12)  # the same series, later points: totals run on
    for rm in second.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                for dp in (getattr(m, kind).data_points if kind else ()):
                    dp.time_unix_nano += 3_600 * 10**9
    entries = [Entry(i + 1, 1, 0, metric_items(r), 0, 0, r.SerializeToString()) for i, r in enumerate((first, second))]

    def forward(limit: int | None) -> tuple:
        monkeypatch.setattr(convert, "SLICE_ITEMS", limit)
        config = PrometheusRemoteWriteExporterConfig(endpoint="http://p/api/v1/write")
        config.target_info.enabled = target_info
        config.validate()
        converter = convert.Converter(config)
        need = converter.walk(entries)
        assert [isinstance(b, SlicedBatch) for b in need.batches] == [limit is not None] * 2
        converter.load({}, {}, need)
        build = converter.build(need)
        folded = convert.Converter(config).fold(need)
        return (need.totals, need.last_sent, need.windows, build.requests, build.state, build.items,
                build.out_of_order, build.samples, folded.state, folded.items)

    whole = forward(None)
    assert whole[5] == metric_items(first) + metric_items(second) - 8  # (the unordered bounds, 4 a request)
    assert whole[3] and whole[4]["totals"]
    assert forward(37) == whole


def test_a_live_server_stores_requests_larger_than_a_part(make_server):
    srv = make_server({"receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}}})
    n = SLICE_ITEMS * 2 + 1000
    t0 = time.time_ns() - n
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(_kvs({"service.name": "big"}))
    m = rm.scope_metrics.add().metrics.add(name="g")
    for i in range(n):
        m.gauge.data_points.add(time_unix_nano=t0 + i, as_int=i, attributes=_kvs({"s": i % 5}))
    r = httpx.post(srv.http_url + "/v1/metrics", content=req.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=120)
    assert (r.status_code, r.content) == (200, b"")  # no partial_success: every point taken
    spans = trace_request(n, seed=9)
    with grpc.insecure_channel(srv.grpc_endpoint, options=[("grpc.max_send_message_length", 1 << 24)]) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(spans, timeout=120)
    assert not response.HasField("partial_success")
    points = srv.point_rows()
    assert sorted((p[3], p[4]) for p in points) == [(t0 + i, i) for i in range(n)]
    assert srv.query("SELECT count(*), count(DISTINCT span_id) FROM spans") == [(n, n)]
    assert srv.query("SELECT count(*) FROM metric_series") == [(5,)]
