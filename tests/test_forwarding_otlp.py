"""otlp (gRPC) and otlphttp (protobuf, gzip) forwarding to a second otelite as the upstream: every span and
point arrives with identical ids, attributes, resources and timestamps; nothing acknowledged is lost when
the upstream is down for a while and the forwarding otelite is `kill -9`ed in between (at least once, the
possible duplicates counted); permanent refusals are dropped, counted, and the queue moves on."""

from __future__ import annotations

import time

import httpx
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess, free_port, start_server, trace_request, write_config

WAIT_S = 20.0
FAST_RETRY = {"initial_interval": "100ms", "max_interval": "500ms"}
# No decode worker process: each server starts faster, and these tests are about forwarding.
IN_LOOP = {"receivers": {"otlp": {"decode_workers": 0}}}

# Every column but the local rowid: what "identical" means for the upstream's copy.
SPAN_COLUMNS = ("project_id, trace_id, span_id, parent_span_id, trace_state, flags, name, kind, start_ns, end_ns, "
                "status_code, status_message, attributes, events, links, dropped_attributes_count, "
                "dropped_events_count, dropped_links_count, resource_id, scope_id, service_name")
POINT_COLUMNS = "series_id, start_ns, time_ns, value, count, sum, min, max, flags, buckets, exemplars"


def rows(server: ServerProcess, table: str, columns: str = "*") -> list[tuple]:
    return sorted(server.query(f"SELECT {columns} FROM {table}"), key=repr)


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def self_metrics(server: ServerProcess) -> dict[tuple, float]:
    text = httpx.get(f"{server.http_url}/metrics/self", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def counter(server: ServerProcess, name: str, exporter: str, **labels: str) -> float:
    return self_metrics(server).get((name, tuple(sorted({"exporter": exporter, **labels}.items()))), 0.0)


def post_traces(server: ServerProcess, request) -> None:
    r = httpx.post(f"{server.http_url}/v1/traces", content=request.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


def forwarding(exporters: dict, signals=("traces", "metrics")) -> dict:
    return {**IN_LOOP, "exporters": {"sqlite": {}, **exporters},
            "service": {"pipelines": {s: {"receivers": ["otlp"], "exporters": ["sqlite", *exporters]}
                                      for s in signals}}}


def test_upstreams_get_identical_spans_and_points_over_grpc_and_http(tmp_path):
    up_grpc = start_server(tmp_path, IN_LOOP, "up_grpc")
    up_http = start_server(tmp_path, IN_LOOP, "up_http")
    fw = start_server(tmp_path, forwarding({
        "otlp/grpc": {"endpoint": up_grpc.grpc_endpoint, "tls": {"insecure": True}, "compression": "gzip",
                      "retry_on_failure": FAST_RETRY},
        "otlphttp/http": {"endpoint": up_http.http_url, "compression": "gzip", "retry_on_failure": FAST_RETRY},
    }), "forwarder")
    try:
        resource = Resource.create({"service.name": "shop", "service.instance.id": "pod-1", "k8s.pod.uid": "u-1"})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{fw.http_url}/v1/traces")))
        tracer = tracer_provider.get_tracer("shop.checkout", "1.2.3")
        with tracer.start_as_current_span("checkout", attributes={"cart.items": 3, "vip": True,
                                                                  "tags": ["a", "b"]}) as root:
            root.add_event("paid", {"amount": 9.5})
            with tracer.start_as_current_span("charge", links=[Link(root.get_span_context(), {"why": "retry"})]) as child:
                child.set_status(Status(StatusCode.ERROR, "card declined"))
        post_traces(fw, trace_request(100, seed=5, with_attribute=True))
        reader = PeriodicExportingMetricReader(GrpcMetricExporter(endpoint=fw.grpc_endpoint, insecure=True),
                                               export_interval_millis=3_600_000)
        meters = MeterProvider(resource=resource, metric_readers=[reader])
        meter = meters.get_meter("shop.checkout")
        meter.create_counter("orders").add(7, {"region": "eu"})
        meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/pay"})
        assert meters.force_flush(10_000)
        meters.shutdown()
        tracer_provider.shutdown()

        spans, points = rows(fw, "spans", SPAN_COLUMNS), rows(fw, "metric_points", POINT_COLUMNS)
        assert len(spans) == 102 and len(points) >= 2  # shutdown's final collection adds a second pair
        for up in (up_grpc, up_http):
            wait_for(lambda: len(rows(up, "spans")) >= len(spans) and len(rows(up, "metric_points")) >= len(points),
                     "the upstream to have everything")
            assert rows(up, "spans", SPAN_COLUMNS) == spans
            assert rows(up, "metric_points", POINT_COLUMNS) == points
            for table in ("resources", "scopes", "metric_series"):
                assert rows(up, table) == rows(fw, table), table
        for exporter in ("otlp/grpc", "otlphttp/http"):
            assert counter(fw, "otelcol_exporter_sent_spans_total", exporter) == 102
            assert counter(fw, "otelcol_exporter_sent_metric_points_total", exporter) == len(points)
            assert counter(fw, "otelcol_exporter_send_failed_spans_total", exporter) == 0
        assert fw.query("SELECT count(*) FROM export_log") == [(0,)]  # trimmed once every cursor passed
    finally:
        for s in (fw, up_grpc, up_http):
            s.kill()


def test_nothing_acknowledged_is_lost_when_the_upstream_stops_and_the_forwarder_is_killed(tmp_path):
    upstream = ServerProcess(db=tmp_path / "up.db", grpc_port=free_port(), http_port=free_port(),
                             config_path=write_config(tmp_path, IN_LOOP, "up.yaml")).start()
    fw = start_server(tmp_path, forwarding({"otlp/up": {"endpoint": upstream.grpc_endpoint,
                                                        "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY}},
                                           signals=("traces",)), "forwarder")
    distinct = "SELECT count(DISTINCT span_id) FROM spans"
    try:
        post_traces(fw, trace_request(20, seed=1))
        wait_for(lambda: upstream.query(distinct)[0][0] == 20, "the first batch upstream")

        upstream.stop()  # down for a while
        for seed in range(2, 7):
            post_traces(fw, trace_request(30, seed=seed))  # acknowledged: committed locally
        health = {}

        def behind() -> bool:
            nonlocal health
            health = fw.health()["exporters"]["otlp/up"]["traces"]
            return health["failing"] and health["lag_s"] > 0
        wait_for(behind, "the forwarder to report its lag")
        assert health["queue_size"] > 0 and health["queue_capacity"] == 256 << 20
        assert counter(fw, "otelcol_exporter_queue_size", "otlp/up", data_type="traces") > 0
        assert counter(fw, "otelite_exporter_lag_seconds", "otlp/up", data_type="traces") > 0

        fw.kill()  # kill -9 while requests to the dead upstream are being retried
        fw.start()
        post_traces(fw, trace_request(40, seed=9))
        upstream.start()
        wait_for(lambda: upstream.query(distinct)[0][0] == 20 + 5 * 30 + 40, "every acknowledged span upstream")
        total = upstream.query("SELECT count(*) FROM spans")[0][0]
        resent = counter(fw, "otelite_exporter_resent_spans_total", "otlp/up")
        # At least once: duplicates are possible only for what may have been in flight at the kill, and
        # every one of them is counted (an upper bound) by the restarted forwarder.
        assert resent > 0  # the kill interrupted attempts: their entries are flagged as possibly sent
        assert total - (20 + 5 * 30 + 40) <= resent
        wait_for(lambda: counter(fw, "otelcol_exporter_sent_spans_total", "otlp/up") == 5 * 30 + 40,
                 "the counters to settle")
        assert counter(fw, "otelcol_exporter_send_failed_spans_total", "otlp/up") == 0
        assert fw.health()["exporters"]["otlp/up"]["traces"]["lag_s"] == 0
    finally:
        fw.kill()
        if upstream.alive():
            upstream.kill()


def test_permanent_refusals_are_dropped_and_counted_and_the_queue_moves_on(tmp_path):
    # The upstream requires an API key (UNAUTHENTICATED without one: permanent) and takes HTTP bodies of
    # at most 4000 bytes (413 above: permanent).
    upstream = start_server(tmp_path, {"receivers": {"otlp": {"auth": "required", "decode_workers": 0, "protocols": {
        "grpc": {}, "http": {"max_request_body_size": 4000}}}}}, "up")
    key = upstream.admin_key()
    fw = start_server(tmp_path, forwarding({
        "otlp/keyed": {"endpoint": upstream.grpc_endpoint, "tls": {"insecure": True},
                       "headers": {"Authorization": f"Bearer {key}"}, "retry_on_failure": FAST_RETRY},
        "otlp/nokey": {"endpoint": upstream.grpc_endpoint, "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY},
        "otlphttp/small": {"endpoint": upstream.http_url, "headers": {"X-API-Key": key},
                           "retry_on_failure": FAST_RETRY},
    }, signals=("traces",)), "forwarder")
    try:
        big = trace_request(200, seed=1, with_attribute=True)
        assert big.ByteSize() > 4000
        post_traces(fw, big)
        for seed in (2, 3, 4):
            post_traces(fw, trace_request(1, seed=seed))
        # keyed gRPC: all 203; HTTP: the three small ones (the big one alone is refused with 413).
        wait_for(lambda: upstream.query("SELECT count(*) FROM spans")[0][0] == 203 + 3, "the deliveries")
        wait_for(lambda: counter(fw, "otelcol_exporter_send_failed_spans_total", "otlp/nokey") == 203
                 and counter(fw, "otelcol_exporter_send_failed_spans_total", "otlphttp/small") == 200,
                 "the refusals to be counted")
        assert counter(fw, "otelcol_exporter_sent_spans_total", "otlp/keyed") == 203
        assert counter(fw, "otelcol_exporter_sent_spans_total", "otlp/nokey") == 0
        assert counter(fw, "otelite_exporter_dropped_spans_total", "otlp/nokey", reason="permanent") == 203
        assert counter(fw, "otelcol_exporter_sent_spans_total", "otlphttp/small") == 3
        assert counter(fw, "otelite_exporter_dropped_spans_total", "otlphttp/small", reason="permanent") == 200
        assert "UNAUTHENTICATED" in fw.log() and "HTTP 413" in fw.log()
        time.sleep(0.5)
        assert upstream.query("SELECT count(*) FROM spans")[0][0] == 206  # nothing retried forever
    finally:
        fw.kill()
        upstream.kill()


def test_flux_gauges_and_counters_reach_an_otlp_upstream_and_otelite_types_are_counted(tmp_path):
    """Metrics the Flux and Trifle dialects wrote have no OTLP request: their rows are queued in the same
    commit, and otlphttp sends the points of OpenTelemetry types as they are stored (a Flux gauge, a Flux
    counter as DELTA sum points with negative decrements), so the upstream stores identical series and
    points; otelite's own types (distribution, set, tally) are left out and counted `no_otlp_type`."""
    upstream = start_server(tmp_path, IN_LOOP, "up")
    fw = start_server(tmp_path, {**forwarding({"otlphttp/up": {"endpoint": upstream.http_url, "compression": "gzip",
                                                                "retry_on_failure": FAST_RETRY}}, signals=("metrics",)),
                                 "auth": {"rate_limits": {"flux_batch": {"enabled": False}}}}, "forwarder")
    try:
        auth = {"Authorization": f"Bearer {fw.admin_key()}"}
        r = httpx.post(f"{fw.http_url}/flux/api/v1/metrics/batch", headers=auth, timeout=10, json={"metrics": [
            {"name": "queue.depth", "type": "gauge", "value": 5.5, "tags": {"queue": "mail", "tier": 1}},
            {"name": "signups", "type": "counter", "value": 4},
            {"name": "signups", "type": "counter", "value": -1},
            {"name": "api.latency", "type": "distribution", "value": 12.5},
            {"name": "visitors", "type": "set", "value": "ann"}]})
        assert r.status_code == 200 and r.json()["data"]["rejected"] == 0, r.text
        r = httpx.post(f"{fw.http_url}/trifle/api/v1/metrics", headers=auth, timeout=10,
                       json={"key": "orders", "at": "2026-01-24T10:00:00Z", "values": {"count": 1}})
        assert r.status_code == 201, r.text  # 3 tally points: orders.count and the system key's two
        forwarded = "SELECT id FROM metric_series WHERE type IN ('gauge', 'sum')"
        ids = {i for (i,) in fw.query(forwarded)}
        assert len(ids) == 2
        wait_for(lambda: counter(fw, "otelcol_exporter_sent_metric_points_total", "otlphttp/up") == 3
                 and counter(fw, "otelite_exporter_dropped_metric_points_total", "otlphttp/up",
                             reason="no_otlp_type") == 5, "the points to be sent and counted")
        wait_for(lambda: len(rows(upstream, "metric_points")) == 3, "the upstream to store them")
        assert rows(upstream, "metric_points", POINT_COLUMNS) == \
            [r for r in rows(fw, "metric_points", POINT_COLUMNS) if r[0] in ids]
        assert rows(upstream, "metric_series") == [r for r in rows(fw, "metric_series") if r[0] in ids]
        assert sorted(v for (v,) in upstream.query("SELECT value FROM metric_points WHERE value < 5")) == [-1, 4]
        assert counter(fw, "otelcol_exporter_send_failed_metric_points_total", "otlphttp/up") == 5
    finally:
        fw.kill()
        upstream.kill()
