"""prometheusremotewrite against a real Prometheus (Debian's package, started with
--web.enable-remote-write-receiver): what applications send to otelite reaches Prometheus with the values
otelite's own scrape shows (counters, gauges, histograms, exponential histograms, summaries, delta
counters as running totals), across a `kill -9` of otelite; a sample Prometheus refuses (HTTP 400) is
dropped and counted while the rest of the queue goes on."""

from __future__ import annotations

import shutil
import subprocess
import time

import cramjam
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, start_server
from metrics_otlp import CUMULATIVE, DELTA, counter, exp_histogram, gauge, histogram, summary
from otelite.exporters.prometheusremotewrite.proto import WriteRequest

WAIT_S = 20.0
SEC = 10**9


class PrometheusProcess:
    """Debian's Prometheus receiving remote-write only (no scrape targets), restartable on its port and
    data directory (an upstream that is down for a while)."""

    def __init__(self, directory) -> None:
        self.binary = shutil.which("prometheus")
        assert self.binary, "prometheus is missing: install Debian's `prometheus` package (.ci/run does)"
        self.directory = directory
        (directory / "prometheus.yml").write_text("global: {evaluation_interval: 1m}\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> "PrometheusProcess":
        d = self.directory
        log = open(d / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT, cwd=d)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (d / "prometheus.log").read_text()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("Prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def prometheus_process(tmp_path):
    prom = PrometheusProcess(tmp_path).start()
    yield prom
    if prom.proc.poll() is None:
        prom.proc.kill()
        prom.proc.wait(10)


@pytest.fixture
def prometheus(prometheus_process):
    """The base URL of a Prometheus that only receives remote-write."""
    return prometheus_process.url


def query(url: str, promql: str) -> dict[tuple, float]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    assert r.status_code == 200, r.text
    return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in r.json()["data"]["result"]}


def scraped(server, key: str) -> dict[tuple, float]:
    """otelite's own scrape as {(labels with __name__)...: value}."""
    r = httpx.get(f"{server.http_url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert r.status_code == 200, r.text
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[tuple(sorted({**s.labels, "__name__": s.name}.items()))] = float(s.value)
    return out


def remote_written(url: str, names: set[str]) -> dict[tuple, float]:
    out = {}
    for name in names:
        for labels, value in query(url, f'{{__name__="{name}"}}').items():
            assert ("cluster", "ci") in labels, labels  # external_labels on every series
            out[tuple(p for p in labels if p[0] != "cluster")] = value
    return out


def send(server, request) -> None:
    r = httpx.post(f"{server.http_url}/v1/metrics", content=request.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


def self_metric(server, name: str, labels: dict) -> float:
    text = httpx.get(f"{server.http_url}/metrics/self", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def wait_until_equal(prom: str, server, key: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        expected = scraped(server, key)
        got = remote_written(prom, {dict(k)["__name__"] for k in expected})
        if got == expected or time.monotonic() > deadline:
            assert got == expected
            return got
        time.sleep(0.3)


def forwarder_config(prom: str, max_interval: str = "1s", **extra) -> dict:
    """otelite with the sqlite exporter and a remote-write forwarder to `prom` (external label cluster=ci),
    retrying fast; `extra` top-level sections are added as given."""
    return {
        "receivers": {"otlp": {"decode_workers": 0}},
        "exporters": {"sqlite": {}, "prometheusremotewrite/prom": {
            "endpoint": f"{prom}/api/v1/write", "external_labels": {"cluster": "ci"},
            "retry_on_failure": {"initial_interval": "100ms", "max_interval": max_interval}}},
        "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["sqlite", "prometheusremotewrite/prom"]}}},
        **extra,
    }


def test_prometheus_receives_what_the_scrape_shows_across_a_kill(tmp_path, prometheus):
    config = forwarder_config(prometheus)
    server = start_server(tmp_path, config, "forwarder")
    key = server.admin_key()
    shop = {"service.name": "shop", "service.instance.id": "pod-1", "deployment.environment": "ci"}
    worker = {"service.name": "worker", "service.instance.id": "w-1"}
    t0 = time.time_ns() - 30 * SEC
    try:
        send(server, counter("orders", [(t0, 7, {"region": "eu"}), (t0 + SEC, 9, {"region": "eu"})],
                             CUMULATIVE, resource=shop))
        send(server, gauge("cart.size", [(t0, 3, {}), (t0 + SEC, 2.5, {})], resource=shop))
        send(server, histogram("checkout.duration", [(t0, [0.1, 1.0], [1, 2, 1], {})], resource=shop))
        send(server, exp_histogram("payload.size", [(t0, 0, 1, [1, 2, 3], 1, {})], DELTA, resource=shop))
        send(server, summary("gc.pause", [(t0, 4, 2.0, [(0.5, 0.4), (0.99, 0.9)], {})], resource=shop))
        send(server, counter("jobs", [(t0, 4, {})], DELTA, resource=worker))
        send(server, counter("jobs", [(t0 + SEC, 6, {})], DELTA, resource=worker))
        got = wait_until_equal(prometheus, server, key)
        jobs = (("__name__", "jobs_total"), ("instance", "w-1"), ("job", "worker"))
        assert got[jobs] == 10.0  # delta counters arrive as the running total, as the scrape shows them
        assert any(dict(k)["__name__"] == "target_info" for k in got)
        assert {dict(k).get("le") for k in got if dict(k)["__name__"] == "checkout_duration_bucket"} == \
            {"0.1", "1.0", "+Inf"}

        # kill -9, restart: the running totals carry on exactly (committed with the cursor).
        server.kill()
        server.start()
        send(server, counter("jobs", [(t0 + 2 * SEC, 5, {})], DELTA, resource=worker))
        send(server, exp_histogram("payload.size", [(t0 + 2 * SEC, 0, 1, [0, 1, 0], 0, {})], DELTA, resource=shop))
        got = wait_until_equal(prometheus, server, key)
        assert got[jobs] == 15.0
        resets = query(prometheus, "resets(jobs_total[10m])")
        assert list(resets.values()) == [0.0], resets  # Prometheus never saw the total go back

        # A sample Prometheus refuses: the same series and timestamp as one it holds, another value
        # (HTTP 400, "duplicate sample for timestamp"). Its request is dropped and counted; the entry sent
        # with it in one request is delivered after the split.
        ts_ms = (t0 + 3 * SEC) // 1_000_000
        write = WriteRequest()
        ts = write.timeseries.add()
        for name, value in sorted({"__name__": "poison", "job": "shop", "instance": "pod-1",
                                   "cluster": "ci", "otel_scope_name": ""}.items()):
            if value:
                label = ts.labels.add()
                label.name, label.value = name, value
        sample = ts.samples.add()
        sample.value, sample.timestamp = 1.0, ts_ms
        r = httpx.post(f"{prometheus}/api/v1/write", content=bytes(cramjam.snappy.compress_raw(write.SerializeToString())),
                       headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                                "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert r.status_code == 204, r.text
        failed_before = self_metric(server, "otelcol_exporter_send_failed_metric_points_total",
                                    {"exporter": "prometheusremotewrite/prom"})
        send(server, gauge("poison", [(ts_ms * 1_000_000, 2.0, {})], resource={"service.name": "shop",
                                                                                "service.instance.id": "pod-1"}))
        send(server, gauge("cart.size", [(t0 + 4 * SEC, 1, {})], resource=shop))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if query(prometheus, "cart_size") and list(query(prometheus, "cart_size").values()) == [1.0]:
                break
            time.sleep(0.2)
        assert list(query(prometheus, "cart_size").values()) == [1.0]  # the queue moved on
        assert list(query(prometheus, "poison").values()) == [1.0]  # Prometheus kept its own sample
        assert self_metric(server, "otelcol_exporter_send_failed_metric_points_total",
                           {"exporter": "prometheusremotewrite/prom"}) == failed_before + 1
        assert self_metric(server, "otelite_exporter_dropped_metric_points_total",
                           {"exporter": "prometheusremotewrite/prom", "reason": "permanent"}) == 1
        assert "HTTP 400" in server.log()
    finally:
        server.kill()


def test_flux_and_trifle_metrics_reach_prometheus_as_the_scrape_shows_them(tmp_path, prometheus):
    """The REST dialects' metrics have no OTLP request: their rows go through the export log in the commit
    that stores them, and remote-write sends what the scrape shows (Flux gauge, counter as its running
    total with decrements, distribution as a summary, set as distinct members; Trifle tallies with their
    asserts), across a `kill -9`."""
    config = forwarder_config(prometheus, auth={"rate_limits": {"flux_batch": {"enabled": False}}})
    server = start_server(tmp_path, config, "forwarder")
    key = server.admin_key()
    auth = {"Authorization": f"Bearer {key}"}

    def flux(*metrics: dict) -> None:
        r = httpx.post(f"{server.http_url}/flux/api/v1/metrics/batch", json={"metrics": list(metrics)},
                       headers=auth, timeout=10)
        assert r.status_code == 200 and r.json()["data"]["rejected"] == 0, r.text

    def trifle(values: dict, operation: str = "track") -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        r = httpx.post(f"{server.http_url}/trifle/api/v1/metrics", headers=auth, timeout=10,
                       json={"key": "orders", "at": at, "values": values, "operation": operation})
        assert r.status_code == 201, r.text

    try:
        flux({"name": "queue.depth", "type": "gauge", "value": 5, "tags": {"queue": "mail"}},
             {"name": "signups", "type": "counter", "value": 4},
             {"name": "api.latency", "type": "distribution", "value": 10, "tags": {"route": "/pay"}},
             {"name": "api.latency", "type": "distribution", "value": 20, "tags": {"route": "/pay"}},
             {"name": "visitors", "type": "set", "value": "ann"},
             {"name": "visitors", "type": "set", "value": "bob"})
        flux({"name": "queue.depth", "type": "gauge", "value": 3, "tags": {"queue": "mail"}},
             {"name": "signups", "type": "counter", "value": 3},
             {"name": "signups", "type": "counter", "value": -1},  # the SDK's decrement
             {"name": "api.latency", "type": "distribution", "value": 100, "tags": {"route": "/pay"}},
             {"name": "visitors", "type": "set", "value": "ann"})
        trifle({"count": 5, "country": {"US": 2}})
        trifle({"count": 1})
        got = wait_until_equal(prometheus, server, key)
        values = {dict(k)["__name__"] + (f"{{{dict(k)['quantile']}}}" if "quantile" in dict(k) else "")
                  + (f"[{dict(k)['path']}]" if "path" in dict(k) else ""): v for k, v in got.items()}
        assert values["queue_depth"] == 3
        assert values["signups_total"] == 6  # 4 + 3 - 1: the running total
        assert values["api_latency_count"] == 3 and values["api_latency_sum"] == 130
        assert values["api_latency{0.5}"] == 20
        assert values["visitors"] == 2  # ann, bob
        assert values["orders[count]"] == 6 and values["orders[country.US]"] == 2

        # kill -9, restart: the running totals (counter, distribution count/sum, tally) carry on exactly.
        server.kill()
        server.start()
        flux({"name": "signups", "type": "counter", "value": 2},
             {"name": "api.latency", "type": "distribution", "value": 30, "tags": {"route": "/pay"}},
             {"name": "visitors", "type": "set", "value": "cy"})
        trifle({"count": 10}, "assert")  # replaces the total of `count` only
        trifle({"count": 1, "country": {"US": 1}})
        got = wait_until_equal(prometheus, server, key)
        values = {dict(k)["__name__"] + (f"[{dict(k)['path']}]" if "path" in dict(k) else ""): v
                  for k, v in got.items() if "quantile" not in dict(k)}
        assert values["signups_total"] == 8
        assert values["api_latency_count"] == 4 and values["api_latency_sum"] == 160
        assert values["visitors"] == 3
        assert values["orders[count]"] == 11 and values["orders[country.US]"] == 3
        assert list(query(prometheus, "resets(signups_total[10m])").values()) == [0.0]
        assert self_metric(server, "otelcol_exporter_send_failed_metric_points_total",
                           {"exporter": "prometheusremotewrite/prom"}) == 0
    finally:
        server.kill()


def test_prometheus_down_and_otelite_killed_in_between_every_acknowledged_point_arrives(tmp_path, prometheus_process):
    """Upstream down for a while, otelite `kill -9`ed and restarted meanwhile: every point acknowledged
    to the app reaches Prometheus. Requests that may have reached it before the kill are sent again with
    identical samples (the running totals are committed with the cursor), which Prometheus stores once:
    at least once on the wire, counted in otelite_exporter_resent_metric_points_total, and no duplicate in
    Prometheus."""
    prom = prometheus_process.url
    config = forwarder_config(prom, max_interval="500ms")
    server = start_server(tmp_path, config, "forwarder")
    key = server.admin_key()
    worker = {"service.name": "worker", "service.instance.id": "w-1"}
    t0 = time.time_ns() - 60 * SEC
    try:
        send(server, counter("jobs", [(t0, 1, {})], DELTA, resource=worker))
        wait_until_equal(prom, server, key)
        prometheus_process.stop()  # down for a while
        for i in range(1, 11):
            send(server, counter("jobs", [(t0 + i * SEC, i, {})], DELTA, resource=worker))
            send(server, gauge("temp", [(t0 + i * SEC, 20 + i, {})], resource=worker))
        deadline = time.monotonic() + WAIT_S
        while not server.health()["exporters"]["prometheusremotewrite/prom"]["metrics"]["failing"]:
            assert time.monotonic() < deadline, "the forwarder never noticed the upstream was down"
            time.sleep(0.2)
        server.kill()  # kill -9 while the backlog is being retried
        server.start()
        send(server, counter("jobs", [(t0 + 11 * SEC, 100, {})], DELTA, resource=worker))
        prometheus_process.start()
        got = wait_until_equal(prom, server, key)
        assert got[(("__name__", "jobs_total"), ("instance", "w-1"), ("job", "worker"))] == 1 + 55 + 100
        # Every sample Prometheus holds, once: one per point sent (the first counter point, 10 of each
        # while it was down, one after), none twice.
        r = httpx.get(f"{prom}/api/v1/query", params={"query": "count_over_time(jobs_total[10m])",
                                                      "time": time.time()}, timeout=5)
        assert [float(x["value"][1]) for x in r.json()["data"]["result"]] == [12.0]
        r = httpx.get(f"{prom}/api/v1/query", params={"query": "count_over_time(temp[10m])"}, timeout=5)
        assert [float(x["value"][1]) for x in r.json()["data"]["result"]] == [10.0]
        assert list(query(prom, "resets(jobs_total[10m])").values()) == [0.0]
        assert self_metric(server, "otelcol_exporter_send_failed_metric_points_total",
                           {"exporter": "prometheusremotewrite/prom"}) == 0
        # The restarted forwarder sent again what may have been in flight at the kill, and said so.
        assert self_metric(server, "otelite_exporter_resent_metric_points_total",
                           {"exporter": "prometheusremotewrite/prom"}) > 0
    finally:
        server.kill()


def test_a_builds_samples_are_kept_compactly_in_time_order_with_the_stale_marker_bits():
    """convert._add_sample: a label set's one sample is a tuple, more are two arrays (16 bytes a sample;
    a 900,000-point request held ~100 MB of tuples); what the WriteRequest gets is unchanged: time order
    (samples of one time in the order added), the last sample of a time replaced when asked, the stale
    marker's NaN payload intact."""
    import math
    import struct

    from otelite.exporters.prometheusremotewrite.convert import STALE_NAN, _add_sample, _Samples

    by_labels = {}
    _add_sample(by_labels, ("one",), 10, 1.0, False)
    _add_sample(by_labels, ("one",), 10, 1.5, True)  # replaced: still one sample
    for ts, value, replace in ((10, 1.0, False), (20, 2.0, False), (20, 2.5, True), (30, STALE_NAN, False),
                               (30, 3.0, False), (25, 4.0, False), (25, 5.0, True)):
        _add_sample(by_labels, ("many",), ts, value, replace)
    assert by_labels[("one",)] == (10, 1.5)
    s = by_labels[("many",)]
    assert isinstance(s, _Samples) and s.times.itemsize + s.values.itemsize == 16
    got = list(s.in_order())
    # (25 arrived after 30: put before it; its replace touched only the last sample, itself)
    assert [(t, v) for t, v in got if not math.isnan(v)] == [(10, 1.0), (20, 2.5), (25, 5.0), (30, 3.0)]
    assert [t for t, _ in got] == [10, 20, 25, 30, 30] and len(s) == 5
    assert [struct.pack("<d", v) for _, v in got if math.isnan(v)] == [struct.pack("<d", STALE_NAN)]
