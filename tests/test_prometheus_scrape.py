"""GET /metrics on a live `otelite serve` fed by the real OpenTelemetry SDK (prometheus.md).

Every instrument kind goes through the SDK's OTLP exporters (cumulative over HTTP, delta over gRPC); a
summary, which the SDK cannot make, is posted as OTLP protobuf. The scraped text is checked value by value
against what was recorded, by `promtool check metrics` (Debian package `prometheus`, installed by .ci/run),
and as OpenMetrics by prometheus-client's parser.
"""

from __future__ import annotations

import gzip
import http.client
import math
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (ExplicitBucketHistogramAggregation,
                                            ExponentialBucketHistogramAggregation, View)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from otelite.collector.config import load_config
from conftest import free_port

OPEN = {"auth": {"mode": "none"}}  # auth.md: allowed on loopback; the key-protected case is tested below
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
SHOP = {"job": "shop/checkout", "instance": "pod-1", "otel_scope_name": "otelite.test",
        "otel_scope_version": "1.0"}
BILLING = {"job": "billing", "instance": "worker-7", "otel_scope_name": "billing.worker"}
PAYLOAD_SIZES = (1, 2, 4, 1000, 0)


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    return path


def scrape(server, accept: str | None = None, headers: dict | None = None, base: str | None = None
           ) -> httpx.Response:
    h = {"Accept-Encoding": "identity"}
    if accept is not None:
        h["Accept"] = accept
    h.update(headers or {})
    r = httpx.get(f"{base or server.http_url}/metrics", headers=h, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text, server.log())
    return r


def samples(text: str, openmetrics: bool = False) -> dict[tuple[str, frozenset], float]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, frozenset(s.labels.items())): s.value for f in parse(text) for s in f.samples}


def value(found: dict, name: str, **labels) -> float:
    return found[(name, frozenset(labels.items()))]


def promtool_check(text: str) -> set[str]:
    """`promtool check metrics`: no error (exit 0, or 3 with lint problems); returns the lint lines."""
    p = subprocess.run([_promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert p.returncode in (0, 3), (p.returncode, p.stdout, p.stderr)
    lines = {ln.strip() for ln in (p.stdout + p.stderr).decode().splitlines() if ln.strip()}
    assert (p.returncode == 3) == bool(lines), (p.returncode, lines)
    return lines


def post_metrics(server, request: ExportMetricsServiceRequest, headers: dict | None = None) -> None:
    r = httpx.post(f"{server.http_url}/v1/metrics", content=request.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf", **(headers or {})}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.content)


def _kv(**kv) -> list:
    return [common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in kv.items()]


def otlp(resource: dict, metrics: list, scope: str = "manual") -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource={"attributes": _kv(**resource)},
        scope_metrics=[metrics_pb2.ScopeMetrics(scope={"name": scope}, metrics=metrics)])])


def gauge(name: str, v: float, t: int, description: str = "A gauge.", **attrs) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, description=description, gauge=metrics_pb2.Gauge(data_points=[
        metrics_pb2.NumberDataPoint(time_unix_nano=t, as_double=v, attributes=_kv(**attrs))]))


def histogram(name: str, t: int, description: str = "A histogram.") -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, description=description, histogram=metrics_pb2.Histogram(
        aggregation_temporality=2, data_points=[metrics_pb2.HistogramDataPoint(
            start_time_unix_nano=t - 10**9, time_unix_nano=t, count=3, sum=4.5, explicit_bounds=[1.0],
            bucket_counts=[1, 2])]))


# --- every instrument kind through the SDK ----------------------------------------------------------------

def _record_with_the_sdk(server) -> dict:
    """Record known values with every instrument kind; returns the trace/span ids of the exemplars."""
    tracer = TracerProvider().get_tracer("test")
    resource = Resource.create({"service.name": "checkout", "service.namespace": "shop",
                                "service.instance.id": "pod-1", "deployment.environment": "test"})
    reader = PeriodicExportingMetricReader(
        HttpMetricExporter(endpoint=f"{server.http_url}/v1/metrics", timeout=10), export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader],
                             exemplar_filter=TraceBasedExemplarFilter(), views=[
        View(instrument_name="http.server.duration",
             aggregation=ExplicitBucketHistogramAggregation((0.1, 0.5, 1.0, 5.0))),
        View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation(max_size=20))])
    meter = provider.get_meter("otelite.test", "1.0")
    requests = meter.create_counter("http.server.requests", unit="{request}", description="Requests served.")
    requests.add(3, {"http.route": "/a"})
    requests.add(4, {"http.route": "/b"})
    with tracer.start_as_current_span("checkout") as span:
        requests.add(2, {"http.route": "/a"})  # sampled span in context: an exemplar
        ids = {"trace_id": f"{span.get_span_context().trace_id:032x}",
               "span_id": f"{span.get_span_context().span_id:016x}"}
        meter.create_histogram("http.server.duration", unit="s", description="Request latency.").record(
            0.7, {"http.route": "/a"})
    duration = meter.create_histogram("http.server.duration", unit="s", description="Request latency.")
    for v in (0.05, 0.2, 3.0, 10.0):
        duration.record(v, {"http.route": "/a"})
    size = meter.create_histogram("payload.size", unit="By", description="Payload sizes.")
    for v in PAYLOAD_SIZES:
        size.record(v)
    items = meter.create_up_down_counter("queue.items", unit="{item}", description="Items waiting.")
    items.add(5)
    items.add(-2)
    meter.create_gauge("cpu.utilization", unit="1", description="CPU in use.").set(0.25)
    logins = meter.create_counter("logins", description="Logins.")
    logins.add(1, {"2fa": True, "user.kind": "admin", "user_kind": "staff"})
    meter.create_observable_counter("process.cpu.time", unit="s", description="CPU time.", callbacks=[
        lambda options: [Observation(12.5, {"cpu.mode": "user"})]])
    meter.create_observable_up_down_counter("process.threads", unit="{thread}", description="Threads.",
                                            callbacks=[lambda options: [Observation(7)]])
    meter.create_observable_gauge("room.temperature", unit="Cel", description="Temperature.", callbacks=[
        lambda options: [Observation(21.5, {"room": "lab"})]])
    assert provider.force_flush(10_000)
    provider.shutdown()

    # A delta-temporality application (over gRPC): otelite turns its deltas into cumulative series.
    delta = PeriodicExportingMetricReader(GrpcMetricExporter(
        endpoint=server.grpc_endpoint, insecure=True, timeout=10,
        preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}),
        export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "billing", "service.instance.id": "worker-7"}),
                             metric_readers=[delta],
                             views=[View(instrument_name="job.duration",
                                         aggregation=ExplicitBucketHistogramAggregation((10.0, 100.0)))])
    meter = provider.get_meter("billing.worker")
    jobs = meter.create_counter("jobs.processed", description="Jobs done.")
    durations = meter.create_histogram("job.duration", unit="ms", description="Job durations.")
    jobs.add(2)
    durations.record(5)
    durations.record(50)
    assert provider.force_flush(10_000)
    jobs.add(3)
    jobs.add(5, {"queue": "q2"})
    durations.record(500)
    assert provider.force_flush(10_000)
    jobs.add(1)
    assert provider.force_flush(10_000)
    provider.shutdown()

    summary = metrics_pb2.Metric(name="rpc.latency", unit="s", description="RPC latency.",
                                 summary=metrics_pb2.Summary(data_points=[metrics_pb2.SummaryDataPoint(
                                     time_unix_nano=time.time_ns(), count=10, sum=3.5, attributes=_kv(method="get"),
                                     quantile_values=[
                                         metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.2),
                                         metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=1.25)])]))
    post_metrics(server, otlp({"service.name": "legacy"}, [summary], scope=""))
    return ids


def test_every_instrument_kind_reads_back_exactly(make_server):
    server = make_server(OPEN)
    ids = _record_with_the_sdk(server)

    r = scrape(server)
    assert r.headers["content-type"] == TEXT
    assert "content-encoding" not in r.headers
    text = r.text
    found = samples(text)

    # counters: _total, unit annotation dropped, attributes as labels
    assert value(found, "http_server_requests_total", http_route="/a", **SHOP) == 5
    assert value(found, "http_server_requests_total", http_route="/b", **SHOP) == 4
    # colliding attribute keys joined with `;` (order of the original keys), leading digit → key_
    assert value(found, "logins_total", key_2fa="true", user_kind="admin;staff", **SHOP) == 1
    assert value(found, "process_cpu_time_seconds_total", cpu_mode="user", **SHOP) == 12.5
    # up-down counters and gauges → gauges; `1` → _ratio for the gauge; `{item}` dropped; Cel → celsius
    assert value(found, "queue_items", **SHOP) == 3
    assert value(found, "process_threads", **SHOP) == 7
    assert value(found, "cpu_utilization_ratio", **SHOP) == 0.25
    assert value(found, "room_temperature_celsius", room="lab", **SHOP) == 21.5
    # explicit histogram: cumulative buckets ending in +Inf == _count
    buckets = {"0.1": 1, "0.5": 2, "1.0": 3, "5.0": 4, "+Inf": 5}
    for le, n in buckets.items():
        assert value(found, "http_server_duration_seconds_bucket", http_route="/a", le=le, **SHOP) == n
    assert value(found, "http_server_duration_seconds_count", http_route="/a", **SHOP) == 5
    assert value(found, "http_server_duration_seconds_sum", http_route="/a", **SHOP) == pytest.approx(13.95)
    # exponential histogram as explicit buckets: each `le` counts exactly the values ≤ le
    exp = {float(dict(k[1])["le"]): v for k, v in found.items() if k[0] == "payload_size_bytes_bucket"}
    assert len(exp) > 3 and exp[math.inf] == len(PAYLOAD_SIZES)
    for le, n in exp.items():
        assert n == sum(1 for v in PAYLOAD_SIZES if v <= le), le
    assert value(found, "payload_size_bytes_sum", **SHOP) == sum(PAYLOAD_SIZES)
    # delta counter and delta histogram: exact running totals of every delta
    assert value(found, "jobs_processed_total", **BILLING) == 6
    assert value(found, "jobs_processed_total", queue="q2", **BILLING) == 5
    for le, n in {"10.0": 1, "100.0": 2, "+Inf": 3}.items():
        assert value(found, "job_duration_milliseconds_bucket", le=le, **BILLING) == n
    assert value(found, "job_duration_milliseconds_sum", **BILLING) == 555
    # summary
    assert value(found, "rpc_latency_seconds", quantile="0.5", method="get", job="legacy") == 0.2
    assert value(found, "rpc_latency_seconds", quantile="0.99", method="get", job="legacy") == 1.25
    assert value(found, "rpc_latency_seconds_count", method="get", job="legacy") == 10
    assert value(found, "rpc_latency_seconds_sum", method="get", job="legacy") == 3.5
    # target_info: the other resource attributes, one sample per job/instance (`legacy` has none to add)
    targets = [dict(k[1]) for k in found if k[0] == "target_info"]
    assert sorted(t["job"] for t in targets) == ["billing", "shop/checkout"]
    shop = next(t for t in targets if t["job"] == "shop/checkout")
    assert shop["deployment_environment"] == "test" and shop["instance"] == "pod-1"
    assert shop["telemetry_sdk_language"] == "python"
    # One TYPE per family, each family's lines together
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(types) == len(set(types))

    # promtool: no error. The lint warnings left are forced by what the applications chose:
    assert promtool_check(text) == {
        # the billing app records job.duration in "ms"; the name must say so, and the linter prefers seconds
        'job_duration_milliseconds use base unit "seconds" instead of "milliseconds"',
    }

    # OpenMetrics: parses with prometheus-client's strict parser, ends with # EOF, carries exemplars
    om = scrape(server, PROMETHEUS_ACCEPT)
    assert om.headers["content-type"] == OPENMETRICS
    assert om.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(om.text)}
    assert families["http_server_requests"].type == "counter"
    assert families["http_server_duration_seconds"].unit == "seconds"
    assert families["target"].type == "info"
    om_found = samples(om.text, openmetrics=True)
    assert {k: v for k, v in om_found.items()} == {k: v for k, v in found.items()}
    counter_exemplars = [s.exemplar for s in families["http_server_requests"].samples if s.exemplar]
    assert [(e.labels, e.value) for e in counter_exemplars] == [(ids, 2)]
    bucket_exemplars = [(s.labels["le"], s.exemplar) for s in families["http_server_duration_seconds"].samples
                        if s.exemplar]
    assert [(le, e.labels, e.value) for le, e in bucket_exemplars] == [("1.0", ids, 0.7)]

    # gzip on request, same body
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.getheader("Content-Encoding") == "gzip"
    assert resp.getheader("Content-Type") == TEXT
    assert gzip.decompress(raw).decode() == text
    # an Accept we cannot serve falls back to text
    assert scrape(server, "application/json").headers["content-type"] == TEXT


# --- expiry ----------------------------------------------------------------------------------------------

def test_series_idle_longer_than_metric_expiration_are_not_exposed(make_server):
    server = make_server({**OPEN, "exporters": {"sqlite": {}, "prometheus": {"metric_expiration": "3s"}}})
    now = time.time_ns()
    post_metrics(server, otlp({"service.name": "exp"}, [
        gauge("fresh", 1.0, now), gauge("stale", 2.0, now - 5 * 10**9)]))
    # No scrape has happened yet: expiry is a property of the data, not of scrapes.
    found = samples(scrape(server).text)
    assert value(found, "fresh", job="exp", otel_scope_name="manual") == 1.0
    assert not any(k[0] == "stale" for k in found)
    time.sleep(max(0.0, (now + 3.2 * 10**9 - time.time_ns()) / 1e9))
    text = scrape(server).text
    assert text == ""  # nothing live, not even target_info
    post_metrics(server, otlp({"service.name": "exp"}, [gauge("fresh", 3.0, time.time_ns())]))
    assert value(samples(scrape(server).text), "fresh", job="exp", otel_scope_name="manual") == 3.0
    assert scrape(server, "application/openmetrics-text").text.endswith("# EOF\n")


# --- conflicts and duplicates ------------------------------------------------------------------------------

def _dropped_families(server) -> float:
    r = httpx.get(f"{server.http_url}/metrics/self", timeout=10)
    return value(samples(r.text), "otelite_prometheus_dropped_families_total")


def test_type_conflicts_drop_the_family_and_are_counted(make_server):
    server = make_server(OPEN)
    now = time.time_ns()
    post_metrics(server, otlp({"service.name": "app"}, [
        gauge("conflict", 1.0, now), histogram("conflict", now),  # one name, two types
        histogram("x", now), gauge("x_count", 5.0, now),  # x_count would collide with the histogram's
        gauge("kept", 7.0, now)]))
    # Two resources that differ only in attributes that are not labels: their samples would be duplicates.
    for host, v, t in (("h1", 1.0, now), ("h2", 2.0, now + 1)):
        post_metrics(server, otlp({"service.name": "dup", "host.name": host}, [gauge("same", v, t)]))
    assert _dropped_families(server) == 0
    text = scrape(server).text
    found = samples(text)
    names = {k[0] for k in found}
    assert names == {"kept", "same", "target_info"}
    assert value(found, "kept", job="app", otel_scope_name="manual") == 7.0
    assert [v for k, v in found.items() if k[0] == "same"] == [2.0]  # the newest of the two
    # target_info keeps both resources apart (`app` has no attribute beyond service.name: no target_info)
    assert sorted(dict(k[1])["host_name"] for k in found if k[0] == "target_info") == ["h1", "h2"]
    assert promtool_check(text) == set()
    assert _dropped_families(server) == 3  # conflict, x, x_count
    list(parse_openmetrics(scrape(server, "application/openmetrics-text").text))
    assert _dropped_families(server) == 6  # counted per scrape


def test_metrics_without_a_description_pass_promtool_with_exit_0(make_server):
    """Issue 10, row 9: without a description there was no HELP line and `promtool check metrics` exited 3.
    Every family now has HELP (the description, else the metric's own name); promtool exits 0."""
    server = make_server(OPEN)
    now = time.time_ns()
    post_metrics(server, otlp({"service.name": "bare"}, [
        gauge("queue.depth", 3.0, now, description=""), histogram("job.seconds", now, description=""),
        gauge("described", 1.0, now, description="Has its own.")]))
    for accept in (None, PROMETHEUS_ACCEPT):
        text = scrape(server, accept).text
        p = subprocess.run([_promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr, text)
        assert "# HELP queue_depth queue.depth\n" in text
        assert "# HELP job_seconds job.seconds\n" in text
        assert "# HELP described Has its own.\n" in text
        families = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")}
        helped = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# HELP")}
        assert families == helped


# --- access, projects, the separate listener ---------------------------------------------------------------

def test_metrics_needs_a_key_picks_its_project_and_can_have_its_own_port(make_server):
    port = free_port()
    server = make_server({"exporters": {"sqlite": {}, "prometheus": {"endpoint": f"127.0.0.1:{port}"}}})
    admin = server.admin_key()
    created = server.cli("projects", "create", "other")
    assert created.returncode == 0, created.stderr
    keyed = server.cli("keys", "create", "--project", "other", "--scope", "metrics:read")
    assert keyed.returncode == 0, keyed.stderr
    other_key = keyed.stdout.strip().splitlines()[-1]
    now = time.time_ns()
    post_metrics(server, otlp({"service.name": "main"}, [gauge("in_default", 1.0, now)]))
    post_metrics(server, otlp({"service.name": "side"}, [gauge("in_other", 2.0, now)]),
                 headers={"X-Otelite-Project": "other"})

    for base in (server.http_url, f"http://127.0.0.1:{port}"):
        r = httpx.get(f"{base}/metrics", timeout=10)
        assert r.status_code == 401, (base, r.status_code, r.text)
        default = scrape(server, headers={"Authorization": f"Bearer {admin}"}, base=base).text
        assert {k[0] for k in samples(default)} == {"in_default"}
        other = scrape(server, headers={"Authorization": f"Bearer {other_key}"}, base=base).text
        assert {k[0] for k in samples(other)} == {"in_other"}
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 404  # /metrics only
    assert "/metrics" in httpx.get(f"{server.http_url}/api/schema", timeout=10).json()["paths"]


def test_the_example_config_lists_the_prometheus_exporter():
    cfg = load_config(Path(__file__).parent.parent / "config" / "prometheus.yaml")
    assert cfg.service.pipelines["metrics"].exporters == ["sqlite", "prometheus"]
    assert (cfg.prometheus.endpoint, cfg.prometheus.metric_expiration) == ("0.0.0.0:9464", 300.0)
    assert ("exporters.prometheus.endpoint", "0.0.0.0:9464") in cfg.listeners()
    assert load_config().prometheus.endpoint is None  # by default: the HTTP listener only


# --- the scrape's cost does not grow with history -----------------------------------------------------------

def test_the_scrape_query_uses_the_indexes_and_never_reads_points(tmp_path):
    from otelite.collector.store.db import prepare_database
    from otelite.collector.store.metrics import LIVE_STATES_SQL as _SQL_LIVE
    path = str(tmp_path / "plan.db")
    prepare_database(path)
    conn = sqlite3.connect(path)
    plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + _SQL_LIVE, (1, 0)))
    conn.close()
    assert "metric_points" not in plan
    assert "SEARCH s USING COVERING INDEX metric_series_by_last_seen" in plan, plan
    assert "SEARCH st USING INDEX metric_series_state_by_series (series_id=?)" in plan, plan
    assert "SCAN" not in plan, plan
