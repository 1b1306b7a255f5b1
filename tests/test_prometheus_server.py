"""A real Prometheus scrapes otelite and sees what the OpenTelemetry SDK recorded (prometheus.md).

Prometheus (Debian package `prometheus`, installed by .ci/run) runs with a temporary config and data
directory on a free loopback port, scraping otelite's /metrics every second with the API key, as the
README's `scrape_configs` entry does. Values are read back through Prometheus' HTTP API: a cumulative
counter, a gauge, histogram buckets, and the running total of a delta-temporality exporter's counter.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from conftest import free_port

# Prometheus 2 hands new targets to its scrape loop at most every 5 s, so the first samples take ~6 s.
WAIT_S = 15.0


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus against a config written by the test; yields a function (target, key) → API URL."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: install Debian's `prometheus` package (.ci/run does)"
    procs: list[subprocess.Popen] = []

    def start(target: str, key: str) -> str:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "otelite",
                # keep the job/instance labels otelite derives from each application's resource
                "honor_labels": True,
                "authorization": {"credentials": key},
                "static_configs": [{"targets": [target]}],
            }],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("Prometheus did not become ready:\n" + (tmp_path / "prometheus.log").read_text())

    yield start
    for p in procs:
        p.kill()
        p.wait(10)


def query(url: str, promql: str) -> dict[tuple, float]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return {tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): float(s["value"][1])
            for s in body["data"]["result"]}


def wait_for(url: str, expected: dict[str, dict[tuple, float]]) -> None:
    """Poll until every query returns exactly the expected series and values (bounded)."""
    deadline = time.monotonic() + WAIT_S
    got: dict = {}
    while time.monotonic() < deadline:
        got = {q: query(url, q) for q in expected}
        if got == expected:
            return
        time.sleep(0.25)
    assert got == expected


def test_prometheus_scrapes_what_the_sdk_recorded(make_server, prometheus):
    server = make_server()  # auth required (the default): Prometheus authenticates with the key
    url = prometheus(f"127.0.0.1:{server.http_port}", server.admin_key())
    resource = Resource.create({"service.name": "shop", "service.instance.id": "pod-1"})

    cumulative = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{server.http_url}/v1/metrics", timeout=10), export_interval_millis=3_600_000)
    app = MeterProvider(resource=resource, metric_readers=[cumulative], views=[
        View(instrument_name="checkout.duration", aggregation=ExplicitBucketHistogramAggregation((0.1, 1.0)))])
    meter = app.get_meter("shop.checkout")
    meter.create_counter("orders", description="Orders placed.").add(7, {"region": "eu"})
    meter.create_gauge("cart.size", unit="{item}", description="Items in the cart.").set(3)
    duration = meter.create_histogram("checkout.duration", unit="s", description="Checkout latency.")
    for v in (0.05, 0.5, 0.7, 2.0):
        duration.record(v)
    assert app.force_flush(10_000)

    delta_reader = PeriodicExportingMetricReader(OTLPMetricExporter(
        endpoint=f"{server.http_url}/v1/metrics", timeout=10,
        preferred_temporality={Counter: AggregationTemporality.DELTA}), export_interval_millis=3_600_000)
    worker = MeterProvider(resource=Resource.create({"service.name": "worker", "service.instance.id": "w-1"}),
                           metric_readers=[delta_reader])
    jobs = worker.get_meter("worker").create_counter("jobs", description="Jobs done.")
    jobs.add(4)
    assert worker.force_flush(10_000)
    jobs.add(6)
    assert worker.force_flush(10_000)

    shop = (("instance", "pod-1"), ("job", "shop"), ("otel_scope_name", "shop.checkout"))
    wait_for(url, {
        'up{job="otelite"}': {(("instance", f"127.0.0.1:{server.http_port}"), ("job", "otelite")): 1.0},
        "orders_total": {tuple(sorted(shop + (("region", "eu"),))): 7.0},
        "cart_size": {shop: 3.0},
        "checkout_duration_seconds_bucket": {
            tuple(sorted(shop + (("le", le),))): n for le, n in (("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0))},
        "checkout_duration_seconds_count": {shop: 4.0},
        'jobs_total{job="worker"}': {(("instance", "w-1"), ("job", "worker"), ("otel_scope_name", "worker")): 10.0},
    })

    # Another delta arrives: Prometheus sees the counter keep counting, not restart.
    jobs.add(5)
    assert worker.force_flush(10_000)
    wait_for(url, {'jobs_total{job="worker"}': {
        (("instance", "w-1"), ("job", "worker"), ("otel_scope_name", "worker")): 15.0}})
    assert query(url, 'resets(jobs_total{job="worker"}[1m])') == {
        (("instance", "w-1"), ("job", "worker"), ("otel_scope_name", "worker")): 0.0}
    targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
    app.shutdown()
    worker.shutdown()
