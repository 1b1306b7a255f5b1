"""The real opentelemetry-sdk exporters (OTLP/HTTP and OTLP/gRPC, both gzip) against a live `otelite serve`.

Acceptance: spans and metrics (counters, up-down counters, gauges, histograms, exponential histograms)
sent by OTLPSpanExporter / OTLPMetricExporter arrive in the SQLite file with every field intact.
The expected values come from what the test recorded and from the SDK's own span objects (an
InMemorySpanExporter on the same TracerProvider sees exactly what the OTLP exporter encodes).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from fractions import Fraction

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import (Counter as SdkCounter, Histogram as SdkHistogram, MeterProvider,
                                       TraceBasedExemplarFilter)
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (ExplicitBucketHistogramAggregation,
                                            ExponentialBucketHistogramAggregation, View)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from otelite.collector.store.metrics import metric_catalog

TRANSPORTS = ["http", "grpc"]
HOUR_NS = 3_600_000_000_000
SPAN_FLAGS_HAS_IS_REMOTE = 0x100
SPAN_FLAGS_IS_REMOTE = 0x200
# Fixed ids for the remote parent and the remote link, so their bytes are known in advance.
REMOTE_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
REMOTE_SPAN_ID = 0x00F067AA0BA902B7
LINKED_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LINKED_SPAN_ID = 0xB7AD6B7169203331


def _span_exporter(transport: str, server):
    if transport == "http":
        return HttpSpanExporter(endpoint=f"{server.http_url}/v1/traces", compression=HttpCompression.Gzip,
                                timeout=10)
    return GrpcSpanExporter(endpoint=server.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip,
                            timeout=10)


def _metric_exporter(transport: str, server, **kwargs):
    if transport == "http":
        return HttpMetricExporter(endpoint=f"{server.http_url}/v1/metrics", compression=HttpCompression.Gzip,
                                  timeout=10, **kwargs)
    return GrpcMetricExporter(endpoint=server.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip,
                              timeout=10, **kwargs)


def _plain(value):
    """An SDK attribute value as the store keeps it in JSON (sequences become lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value


def _plain_attrs(attrs) -> dict:
    return {k: _plain(v) for k, v in (attrs or {}).items()}


def _label(value) -> str:
    """How a scalar attribute reads in the rollup / label tables."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


# --- traces --------------------------------------------------------------------------------------------

RESOURCE_ATTRS = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "checkout-7f9c",
    "deployment.environment": "test",
    "host.cpu.count": 8,
    "feature.enabled": True,
    "sample.ratio": 0.25,
    "region.zones": ["eu-west-1a", "eu-west-1b"],
}
RESOURCE_SCHEMA = "https://opentelemetry.io/schemas/1.21.0"

SERVER_ATTRS = {
    "http.request.method": "POST",
    "http.route": "/api/orders/{id}",
    "http.response.status_code": 500,
    "server.port": 8443,
    "retry.ratio": 0.125,
    "big.int": 2**62 + 7,
    "negative.int": -42,
    "cache.hit": False,
    "auth.ok": True,
    "text.unicode": "Grüße, 世界",
    "list.str": ["a", "b", ""],
    "list.int": [1, -2, 3],
    "list.float": [1.5, -0.25],
    "list.bool": [True, False],
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_spans_arrive_with_every_field(make_server, transport):
    server = make_server()
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(RESOURCE_ATTRS, schema_url=RESOURCE_SCHEMA))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(_span_exporter(transport, server), schedule_delay_millis=60_000))
    try:
        web = provider.get_tracer("otelite.tests.web", "1.4.2", schema_url="https://opentelemetry.io/schemas/1.24.0",
                                  attributes={"scope.owner": "payments", "scope.shard": 3})
        jobs = provider.get_tracer("otelite.tests.jobs", "0.9.0")

        base = time.time_ns() - 5_000_000_000  # recent (inside retention), fixed offsets below

        remote_parent = SpanContext(REMOTE_TRACE_ID, REMOTE_SPAN_ID, is_remote=True,
                                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                                    trace_state=TraceState([("vendor", "v1"), ("rojo", "00f067aa0ba902b7")]))
        server_span = web.start_span("POST /api/orders/{id}", context=trace.set_span_in_context(
            NonRecordingSpan(remote_parent)), kind=SpanKind.SERVER, attributes=SERVER_ATTRS, start_time=base)
        server_span.add_event("request.received", {"size": 512, "content.type": "application/json",
                                                   "tags": ["x", "y"], "urgent": True, "weight": 0.5},
                              timestamp=base + 1_000)
        server_span.add_event("no.attributes", timestamp=base + 2_000)
        server_span.set_status(Status(StatusCode.ERROR, "payment provider timed out"))

        client_span = web.start_span("GET payments", context=trace.set_span_in_context(server_span),
                                     kind=SpanKind.CLIENT, attributes={"peer.service": "payments",
                                                                       "attempt": 2},
                                     start_time=base + 10_000)
        client_span.end(end_time=base + 900_000)
        server_span.end(end_time=base + 1_000_000)

        # A root span of a new trace in another scope, linked to the server span and to a remote span.
        linked_remote = SpanContext(LINKED_TRACE_ID, LINKED_SPAN_ID, is_remote=True,
                                    trace_flags=TraceFlags(TraceFlags.SAMPLED))
        job_span = jobs.start_span("reconcile orders", context=Context(), kind=SpanKind.INTERNAL,
                                   links=[Link(server_span.get_span_context(), {"link.reason": "follows",
                                                                                "link.n": 1}),
                                          Link(linked_remote)],
                                   attributes={"job.batch": 17}, start_time=base + 2_000_000)
        job_span.set_status(Status(StatusCode.OK))
        job_span.end(end_time=base + 3_500_000)

        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    sdk_spans = {s.name: s for s in memory.get_finished_spans()}
    assert len(sdk_spans) == 3
    rows = server.query(
        "SELECT trace_id, span_id, parent_span_id, trace_state, flags, name, kind, start_ns, end_ns, status_code,"
        " status_message, attributes, events, links, dropped_attributes_count, dropped_events_count,"
        " dropped_links_count, resource_id, scope_id, service_name, project_id FROM spans ORDER BY start_ns")
    assert len(rows) == 3, server.log()
    by_name = {r[5]: r for r in rows}
    assert set(by_name) == set(sdk_spans)

    kinds = {"POST /api/orders/{id}": 2, "GET payments": 3, "reconcile orders": 1}  # SpanKind numbers
    for name, sdk in sdk_spans.items():
        (trace_id, span_id, parent_id, trace_state, flags, _, kind, start, end, status_code, status_message,
         attrs, events, links, d_attrs, d_events, d_links, resource_id, scope_id, service, project) = by_name[name]
        ctx = sdk.get_span_context()
        assert trace_id == _tid(ctx.trace_id)
        assert span_id == _sid(ctx.span_id)
        assert parent_id == (_sid(sdk.parent.span_id) if sdk.parent else None)
        assert kind == kinds[name]
        assert (start, end) == (sdk.start_time, sdk.end_time)
        assert status_code == sdk.status.status_code.value
        assert status_message == (sdk.status.description or "")
        assert json.loads(attrs) == _plain_attrs(sdk.attributes)
        expected_events = [{"name": e.name, "time_ns": e.timestamp, "attributes": _plain_attrs(e.attributes),
                            "dropped_attributes_count": 0} for e in sdk.events]
        assert (json.loads(events) if events else []) == expected_events
        assert (d_attrs, d_events, d_links) == (0, 0, 0)
        assert service == "checkout" and project == 1
        assert trace_state == ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())

    # Exact values, independent of the SDK objects.
    srv, cli, job = by_name["POST /api/orders/{id}"], by_name["GET payments"], by_name["reconcile orders"]
    assert srv[0] == _tid(REMOTE_TRACE_ID) and srv[2] == _sid(REMOTE_SPAN_ID)
    assert srv[3] == "vendor=v1,rojo=00f067aa0ba902b7" and cli[3] == srv[3]
    assert srv[4] == SPAN_FLAGS_HAS_IS_REMOTE | SPAN_FLAGS_IS_REMOTE  # the parent is remote
    assert cli[4] == SPAN_FLAGS_HAS_IS_REMOTE and job[4] == SPAN_FLAGS_HAS_IS_REMOTE
    assert cli[0] == srv[0] and cli[2] == srv[1]  # parent/child pair
    assert job[2] is None and job[0] != srv[0]  # a root of its own trace
    assert (srv[7], srv[8], cli[7], cli[8], job[7], job[8]) == (
        base, base + 1_000_000, base + 10_000, base + 900_000, base + 2_000_000, base + 3_500_000)
    assert (srv[9], srv[10]) == (2, "payment provider timed out")  # STATUS_CODE_ERROR
    assert (cli[9], cli[10]) == (0, "")  # unset
    assert (job[9], job[10]) == (1, "")  # STATUS_CODE_OK
    assert json.loads(srv[11]) == SERVER_ATTRS
    assert json.loads(cli[11]) == {"peer.service": "payments", "attempt": 2}
    assert json.loads(srv[12]) == [
        {"name": "request.received", "time_ns": base + 1_000,
         "attributes": {"size": 512, "content.type": "application/json", "tags": ["x", "y"], "urgent": True,
                        "weight": 0.5}, "dropped_attributes_count": 0},
        {"name": "no.attributes", "time_ns": base + 2_000, "attributes": {}, "dropped_attributes_count": 0}]
    assert cli[12] is None and cli[13] is None and srv[13] is None
    assert json.loads(job[13]) == [
        {"trace_id": srv[0].hex(), "span_id": srv[1].hex(), "trace_state": "", "flags": SPAN_FLAGS_HAS_IS_REMOTE,
         "attributes": {"link.reason": "follows", "link.n": 1}, "dropped_attributes_count": 0},
        {"trace_id": f"{LINKED_TRACE_ID:032x}", "span_id": f"{LINKED_SPAN_ID:016x}", "trace_state": "",
         "flags": SPAN_FLAGS_HAS_IS_REMOTE | SPAN_FLAGS_IS_REMOTE, "attributes": {},
         "dropped_attributes_count": 0}]

    # One resource row, with the service columns surfaced.
    resources = server.query("SELECT id, project_id, attributes, dropped_attributes_count, schema_url, service_name,"
                             " service_namespace, service_instance_id FROM resources")
    assert len(resources) == 1
    rid, project, rattrs, rdropped, rschema, svc, ns, instance = resources[0]
    assert json.loads(rattrs) == RESOURCE_ATTRS
    assert (project, rdropped, rschema, svc, ns, instance) == (1, 0, RESOURCE_SCHEMA, "checkout", "shop",
                                                               "checkout-7f9c")
    assert {r[17] for r in rows} == {rid}

    # Two scope rows: name, version, schema_url, attributes.
    scopes = {r[1]: r for r in server.query(
        "SELECT id, name, version, attributes, dropped_attributes_count, schema_url, project_id FROM scopes")}
    assert set(scopes) == {"otelite.tests.web", "otelite.tests.jobs"}
    w, j = scopes["otelite.tests.web"], scopes["otelite.tests.jobs"]
    assert w[2:] == ("1.4.2", json.dumps({"scope.owner": "payments", "scope.shard": 3}, separators=(",", ":"),
                                         sort_keys=True), 0, "https://opentelemetry.io/schemas/1.24.0", 1)
    assert j[2:] == ("0.9.0", "{}", 0, "", 1)
    assert srv[18] == w[0] and cli[18] == w[0] and job[18] == j[0]

    # Attribute-picker rollups: every span counts its keys (and short scalar values) once per hour, and
    # the resource's attributes once per span.
    want_keys: Counter = Counter()
    want_values: Counter = Counter()
    for sdk in sdk_spans.values():
        hour = sdk.start_time // HOUR_NS
        for kind, attrs in (("span", _plain_attrs(sdk.attributes)), ("resource", RESOURCE_ATTRS)):
            for k, v in attrs.items():
                want_keys[(1, kind, k, hour)] += 1
                if not isinstance(v, list):
                    want_values[(1, kind, k, _label(v), hour)] += 1
    got_keys = {r[:4]: r[4] for r in server.query(
        "SELECT project_id, attribute_type, key, hour, count FROM span_attribute_keys")}
    got_values = {r[:5]: r[5] for r in server.query(
        "SELECT project_id, attribute_type, key, value, hour, count FROM span_attribute_values")}
    assert got_keys == dict(want_keys)
    assert got_values == dict(want_values)
    hour = base // HOUR_NS
    if all(s.start_time // HOUR_NS == hour for s in sdk_spans.values()):
        assert got_keys[(1, "resource", "service.name", hour)] == 3
        assert got_values[(1, "resource", "service.name", "checkout", hour)] == 3
        assert got_values[(1, "span", "auth.ok", "true", hour)] == 1
        assert got_values[(1, "span", "http.response.status_code", "500", hour)] == 1


# --- metrics -------------------------------------------------------------------------------------------

METER_RESOURCE = {
    "service.name": "inventory",
    "service.namespace": "shop",
    "service.instance.id": "inv-1",
    "host.cpu.count": 4,
    "region.zones": ["a", "b"],
}
LATENCY_BOUNDS = [0.0, 10.0, 100.0, 1000.0]
LATENCY_VALUES = [5, 50, 50, 500, 5000]
SIZE_VALUES = [0, 1, 2, 4, 8, 16, 16]
EXEMPLAR_TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C
EXEMPLAR_SPAN_ID = 0xEEE19B7EC3C1B174


def _exp_index(value: float, scale: int) -> int:
    """Index of the exponential-histogram bucket (base^i, base^(i+1)] holding `value`, a power of two."""
    exponent = int(math.log2(value))
    assert 2.0 ** exponent == value
    ratio = Fraction(exponent) * (Fraction(2) ** scale)  # log_base(value) = exponent * 2**scale
    return math.ceil(ratio) - 1


def _series(server) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for row in server.query("SELECT id, name, type, unit, description, temporality, is_monotonic, attributes,"
                            " resource_id, scope_id, first_seen_ns, last_seen_ns, project_id FROM metric_series"):
        out.setdefault(row[1], []).append(row)
    return out


def _points(server, series_id: int) -> list[tuple]:
    return server.query("SELECT start_ns, time_ns, value, count, sum, min, max, flags, buckets, exemplars"
                        " FROM metric_points WHERE series_id = ? ORDER BY time_ns, id", (series_id,))


def _one(series: dict, name: str, attrs: dict | None = None) -> tuple:
    rows = series[name]
    if attrs is not None:
        rows = [r for r in rows if json.loads(r[7]) == attrs]
    assert len(rows) == 1, (name, attrs, series.get(name))
    return rows[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_metrics_arrive_with_every_field(make_server, transport):
    server = make_server()
    reader = PeriodicExportingMetricReader(_metric_exporter(transport, server), export_interval_millis=3_600_000)
    views = [
        View(instrument_name="http.server.latency",
             aggregation=ExplicitBucketHistogramAggregation(boundaries=LATENCY_BOUNDS)),
        View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation(max_size=160,
                                                                                               max_scale=20)),
    ]
    provider = MeterProvider(metric_readers=[reader], resource=Resource(METER_RESOURCE), views=views,
                             exemplar_filter=TraceBasedExemplarFilter())
    has_sync_gauge = False
    try:
        meter = provider.get_meter("otelite.tests.meter", "2.0.1", schema_url="https://opentelemetry.io/schemas/1.24.0")
        requests = meter.create_counter("http.server.requests", unit="{request}", description="Requests served")
        sampled = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            EXEMPLAR_TRACE_ID, EXEMPLAR_SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        requests.add(3, {"route": "/a", "ok": True})
        requests.add(4, {"route": "/a", "ok": True}, context=sampled)  # → one exemplar with these ids
        requests.add(10, {"route": "/b", "ok": False})
        transferred = meter.create_counter("bytes.sent", unit="By", description="Bytes sent")
        transferred.add(1.5)
        transferred.add(2.25)
        depth = meter.create_up_down_counter("queue.depth", unit="{item}", description="Items waiting")
        depth.add(5, {"queue": "orders"})
        depth.add(-2, {"queue": "orders"})

        def temperatures(_options):
            yield Observation(41.5, {"core": 0})
            yield Observation(39.25, {"core": 1})

        meter.create_observable_gauge("cpu.temperature", [temperatures], unit="Cel", description="CPU temperature")
        if hasattr(meter, "create_gauge"):
            has_sync_gauge = True
            free = meter.create_gauge("memory.free", unit="By", description="Free memory")
            free.set(1024, {"pool": "heap"})
            free.set(2048, {"pool": "heap"})
        latency = meter.create_histogram("http.server.latency", unit="ms", description="Request latency")
        for v in LATENCY_VALUES:
            latency.record(v, {"route": "/a"})
        size = meter.create_histogram("payload.size", unit="By", description="Payload sizes")
        for v in SIZE_VALUES:
            size.record(v)
        assert reader.force_flush(10_000)

        series = _series(server)
        expected_names = {"http.server.requests", "bytes.sent", "queue.depth", "cpu.temperature",
                          "http.server.latency", "payload.size"} | ({"memory.free"} if has_sync_gauge else set())
        assert set(series) == expected_names, server.log()
        assert sum(len(v) for v in series.values()) == len(expected_names) + 2  # two routes, two cores
        assert server.query("SELECT count(*) FROM metric_points") == [(len(expected_names) + 2,)]

        # Every series shares one resource and one scope row.
        resources = server.query("SELECT id, attributes, schema_url, service_name, service_namespace,"
                                 " service_instance_id FROM resources")
        assert len(resources) == 1
        rid = resources[0][0]
        assert json.loads(resources[0][1]) == METER_RESOURCE
        assert resources[0][2:] == ("", "inventory", "shop", "inv-1")
        scopes = server.query("SELECT id, name, version, attributes, schema_url FROM scopes")
        assert len(scopes) == 1
        assert scopes[0][1:] == ("otelite.tests.meter", "2.0.1", "{}", "https://opentelemetry.io/schemas/1.24.0")
        for rows in series.values():
            for r in rows:
                assert (r[8], r[9], r[12]) == (rid, scopes[0][0], 1)

        def check_point(row, **want):
            start, time_ns = row[0], row[1]
            assert time_ns > 0 and 0 <= start <= time_ns
            got = dict(zip(("value", "count", "sum", "min", "max", "flags"), row[2:8]))
            for k, v in want.items():
                assert got[k] == v, (k, got)
                assert type(got[k]) is type(v), (k, got)
            return row

        # Counter (monotonic cumulative sum), int values, exemplar with the span context's ids.
        a = _one(series, "http.server.requests", {"route": "/a", "ok": True})
        assert a[2:8] == ("sum", "{request}", "Requests served", 2, 1, '{"ok":true,"route":"/a"}')
        [pa] = _points(server, a[0])
        check_point(pa, value=7, count=None, sum=None, flags=0)
        assert pa[0] > 0 and pa[8] is None
        [exemplar] = json.loads(pa[9])
        assert exemplar["value"] == 4 and exemplar["time_ns"] > 0
        assert (exemplar["trace_id"], exemplar["span_id"]) == (f"{EXEMPLAR_TRACE_ID:032x}",
                                                              f"{EXEMPLAR_SPAN_ID:016x}")
        assert exemplar["filtered_attributes"] == {}
        b = _one(series, "http.server.requests", {"route": "/b", "ok": False})
        [pb] = _points(server, b[0])
        check_point(pb, value=10)
        assert pb[9] is None  # no sampled context → no exemplar

        f = _one(series, "bytes.sent", {})
        assert f[2:8] == ("sum", "By", "Bytes sent", 2, 1, "{}")
        check_point(_points(server, f[0])[0], value=3.75)

        # UpDownCounter: a non-monotonic cumulative sum.
        q = _one(series, "queue.depth")
        assert q[2:8] == ("sum", "{item}", "Items waiting", 2, 0, '{"queue":"orders"}')
        check_point(_points(server, q[0])[0], value=3)

        # Gauges: no temporality; the SDK sends no start time for them.
        for core, temp in ((0, 41.5), (1, 39.25)):
            g = _one(series, "cpu.temperature", {"core": core})
            assert g[2:7] == ("gauge", "Cel", "CPU temperature", 0, 0)
            [pg] = _points(server, g[0])
            check_point(pg, value=temp)
            assert pg[0] == 0
        if has_sync_gauge:
            m = _one(series, "memory.free")
            assert m[2:8] == ("gauge", "By", "Free memory", 0, 0, '{"pool":"heap"}')
            check_point(_points(server, m[0])[0], value=2048)

        # Explicit-bucket histogram with the View's bounds.
        h = _one(series, "http.server.latency")
        assert h[2:8] == ("histogram", "ms", "Request latency", 2, 0, '{"route":"/a"}')
        [ph] = _points(server, h[0])
        check_point(ph, value=None, count=5, sum=5605.0, min=5.0, max=5000.0, flags=0)
        assert ph[0] > 0
        assert json.loads(ph[8]) == {"bounds": LATENCY_BOUNDS, "counts": [0, 1, 2, 1, 1]}

        # Exponential histogram: scale, zero bucket and positive buckets consistent with the values.
        e = _one(series, "payload.size")
        assert e[2:8] == ("exponential_histogram", "By", "Payload sizes", 2, 0, "{}")
        [pe] = _points(server, e[0])
        check_point(pe, value=None, count=len(SIZE_VALUES), sum=float(sum(SIZE_VALUES)), min=0.0, max=16.0)
        buckets = json.loads(pe[8])
        scale, offset, counts = buckets["scale"], buckets["positive"]["offset"], buckets["positive"]["counts"]
        assert buckets["zero_count"] == 1 and buckets["zero_threshold"] == 0.0
        assert sum(buckets["negative"]["counts"]) == 0  # no negative values recorded
        assert buckets["zero_count"] + sum(counts) == len(SIZE_VALUES)
        assert -10 <= scale <= 20
        # The largest scale at which 1..16 fit in 160 buckets: indexes -1 .. 4*2**s - 1.
        assert scale == 5
        want = Counter(_exp_index(v, scale) for v in SIZE_VALUES if v > 0)
        got = {offset + i: c for i, c in enumerate(counts) if c}
        assert got == dict(want)

        # Labels: point attributes and resource attributes, per series.
        for rows in series.values():
            for r in rows:
                labels = set(server.query("SELECT project_id, key, value, source FROM metric_series_labels"
                                          " WHERE series_id = ?", (r[0],)))
                want_labels = {(1, k, _label(v), "point") for k, v in json.loads(r[7]).items()}
                want_labels |= {(1, k, _label(v), "resource") for k, v in METER_RESOURCE.items()}
                assert labels == want_labels, r[1]
        assert (1, "ok", "true", "point") in set(server.query(
            "SELECT project_id, key, value, source FROM metric_series_labels WHERE series_id = ?", (a[0],)))
        assert (1, "region.zones", '["a","b"]', "resource") in set(server.query(
            "SELECT project_id, key, value, source FROM metric_series_labels WHERE series_id = ?", (a[0],)))
        assert server.query("SELECT count(*) FROM metric_series_labels") == [(
            sum(len(json.loads(r[7])) + len(METER_RESOURCE) for rows in series.values() for r in rows),)]
    finally:
        provider.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_delta_temporality(make_server, transport):
    server = make_server()
    exporter = _metric_exporter(transport, server, preferred_temporality={
        SdkCounter: AggregationTemporality.DELTA, SdkHistogram: AggregationTemporality.DELTA})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource({"service.name": "worker"}))
    try:
        meter = provider.get_meter("otelite.tests.delta")
        jobs = meter.create_counter("jobs.done", unit="{job}", description="Jobs finished")
        durations = meter.create_histogram("job.duration", unit="s")
        jobs.add(5, {"queue": "q1"})
        durations.record(0.5)
        assert reader.force_flush(10_000)
        jobs.add(7, {"queue": "q1"})
        durations.record(2.0)
        durations.record(3.0)
        assert reader.force_flush(10_000)

        [s] = server.query("SELECT id, type, unit, description, temporality, is_monotonic, attributes"
                           " FROM metric_series WHERE name = 'jobs.done'")
        assert s[1:] == ("sum", "{job}", "Jobs finished", 1, 1, '{"queue":"q1"}')
        p1, p2 = _points(server, s[0])
        assert (p1[2], p2[2]) == (5, 7)  # each point holds only its interval's increase
        assert 0 < p1[0] <= p1[1] == p2[0] <= p2[1]  # consecutive, non-overlapping intervals

        [h] = server.query("SELECT id, type, unit, temporality, is_monotonic FROM metric_series"
                           " WHERE name = 'job.duration'")
        assert h[1:] == ("histogram", "s", 1, 0)
        q1, q2 = _points(server, h[0])
        assert (q1[3], q1[4], q1[5], q1[6]) == (1, 0.5, 0.5, 0.5)
        assert (q2[3], q2[4], q2[5], q2[6]) == (2, 5.0, 2.0, 3.0)
        assert q1[1] == q2[0]
        assert sum(json.loads(q2[8])["counts"]) == 2
        # The catalog's newest time is exact (metric_series.last_seen_ns alone may lag: metrics.LAST_SEEN_SQL).
        [info] = server.read(metric_catalog, 1, "jobs.done")
        assert (info.first_seen_ns, info.last_seen_ns) == (p1[1], p2[1])
    finally:
        provider.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_sdk_export_larger_than_a_part_is_stored_whole(make_server, transport):
    """A metric reader's export of more data points than walker.SLICE_ITEMS (high cardinality: 9 counters
    of 1,900 attribute sets, under the SDK's cardinality limit) is walked and stored in parts
    (normalize/split.py), in one transaction: every point arrives, with its value and attributes."""
    from otelite.collector.pipeline.walker import SLICE_ITEMS
    server = make_server()
    reader = PeriodicExportingMetricReader(_metric_exporter(transport, server), export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource({"service.name": "wide"}))
    counters, per = 9, 1_900
    assert counters * per > SLICE_ITEMS
    try:
        meter = provider.get_meter("otelite.tests.wide")
        for c in range(counters):
            counter = meter.create_counter(f"wide.c{c}")
            for i in range(per):
                counter.add(c * 10_000 + i, {"i": i})
        assert reader.force_flush(60_000)
    finally:
        provider.shutdown()
    series = {sid: (name, json.loads(attrs)["i"]) for sid, name, attrs in server.query(
        "SELECT id, name, attributes FROM metric_series WHERE name LIKE 'wide.c%'")}
    points = server.point_rows()
    # Two exports, each over SLICE_ITEMS points: force_flush's and the final one of shutdown (cumulative).
    assert len(series) == counters * per and len(points) == 2 * len(series)
    stored: dict[tuple, set] = {}
    for p in points:
        stored.setdefault(series[p[1]], set()).add(p[4])
    assert stored == {(f"wide.c{c}", i): {c * 10_000 + i} for c in range(counters) for i in range(per)}
