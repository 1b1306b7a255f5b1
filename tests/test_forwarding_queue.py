"""The forwarders' durable queue in-process, on a real store file: its bounds drop the oldest undelivered
entries and count them; cursors of removed exporters are forgotten and their entries trimmed; new cursors
start at the head. Config errors name the key; the Collector-shaped example loads; status codes and
Retry-After are read as the specifications say."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from otelite.collector.config import ConfigError, config_from_mapping, load_config
from otelite.exporters.forwarding.config import RetryConfig
from otelite.exporters.forwarding.outcome import Backoff, Permanent, Retryable, retry_after_seconds
from otelite.exporters.otlp.consumer import classify
from conftest import TESTDATA, PipelineHarness, free_port, trace_request

ROOT = Path(__file__).resolve().parent.parent


class Harness(PipelineHarness):
    """A real store and pipelines with the given forwarders; the upstream is a port nobody listens on."""

    def __init__(self, path: Path, exporters: dict, signal: str = "traces") -> None:
        doc = {"receivers": {"otlp": {"decode_workers": 0}},
               "exporters": {"sqlite": {"path": str(path)}, **exporters},
               "service": {"pipelines": {signal: {"receivers": ["otlp"], "exporters": ["sqlite", *exporters]}}}}
        super().__init__(config_from_mapping(doc, "queue.yaml"))

    def sample(self, name: str, **labels: str) -> float:
        return self.telemetry.registry.get_sample_value(name, labels) or 0.0

    def lane(self, exporter: str):
        return next(q for q in self.telemetry.export_queues if q.exporter == exporter)


def _dead_upstream() -> dict:
    return {"endpoint": f"http://127.0.0.1:{free_port()}", "compression": "none",
            "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms"}}


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_the_queue_bound_drops_the_oldest_entries_and_counts_them(tmp_path):
    async def run() -> None:
        bounded = {**_dead_upstream(), "sending_queue": {"sizer": "items", "queue_size": 50}}
        async with Harness(tmp_path / "q.db", {"otlphttp/bounded": bounded,
                                               "otlphttp/aged": {**_dead_upstream(), "sending_queue": {"max_age": "1s"}}}) as h:
            for seed in range(5):
                result = await h.ingest.export_traces(trace_request(30, seed).SerializeToString(), 1, "test")
                assert result.accepted == 30  # acknowledged: the upstream being down changes nothing
            await _until(lambda: h.sample("otelite_exporter_dropped_spans_total", exporter="otlphttp/bounded",
                                          reason="queue_full") == 120)
            # Entries are whole requests: the newest one (30 items) fits the bound, two would not.
            lane = h.lane("otlphttp/bounded")
            await _until(lambda: lane.queue_size == 30)
            assert h.sample("otelcol_exporter_send_failed_spans_total", exporter="otlphttp/bounded") == 120
            assert h.sample("otelcol_exporter_queue_capacity", exporter="otlphttp/bounded", data_type="traces") == 50
            assert h.sample("otelcol_exporter_queue_size", exporter="otlphttp/bounded", data_type="traces") == 30
            # max_age: after a second everything undelivered has expired.
            await _until(lambda: h.sample("otelite_exporter_dropped_spans_total", exporter="otlphttp/aged",
                                          reason="expired") == 150)
            assert h.sample("otelcol_exporter_sent_spans_total", exporter="otlphttp/aged") == 0
            # (the lag is the lane's age of its oldest entry, set once the backlog is read again after the drop
            # was counted: under load the counter can be seen first)
            await _until(lambda: h.sample("otelite_exporter_lag_seconds", exporter="otlphttp/aged",
                                          data_type="traces") == 0)
        conn = sqlite3.connect(tmp_path / "q.db")
        try:
            # The expired cursor is at the head; the bounded one before the newest entry, kept for it.
            cursors = dict(conn.execute("SELECT exporter, seq FROM export_cursors").fetchall())
            assert cursors["otlphttp/aged"] == 5 and cursors["otlphttp/bounded"] == 4
            assert conn.execute("SELECT seq, items FROM export_log").fetchall() == [(5, 30)]
        finally:
            conn.close()

    asyncio.run(run())


def test_removed_exporters_are_forgotten_and_new_cursors_start_at_the_head(tmp_path):
    path = tmp_path / "r.db"

    async def ingest(exporters: dict, seeds: range) -> None:
        async with Harness(path, exporters) as h:
            for seed in seeds:
                await h.ingest.export_traces(trace_request(10, seed).SerializeToString(), 1, "test")

    def query(sql: str) -> list[tuple]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    asyncio.run(ingest({"otlphttp/old": _dead_upstream()}, range(3)))
    assert query("SELECT count(*), sum(items) FROM export_log") == [(3, 30)]
    # The next start lists another exporter: it starts at the head (only new data), the old one's cursor
    # and entries are gone.
    asyncio.run(ingest({"otlphttp/new": _dead_upstream()}, range(3, 5)))
    assert query("SELECT exporter, seq, end_items FROM export_cursors") == [("otlphttp/new", 3, 30)]
    assert query("SELECT seq FROM export_log ORDER BY seq") == [(4,), (5,)]
    # No forwarder at all: nothing is appended any more and what was queued is trimmed.
    asyncio.run(ingest({}, range(5, 6)))
    assert query("SELECT count(*) FROM export_log") == [(0,)]
    assert query("SELECT count(*) FROM export_cursors") == [(0,)]
    assert query("SELECT count(*) FROM spans") == [(60,)]


# --- configuration ----------------------------------------------------------------------------------------

FORWARDING_ERRORS = {
    "bad_forwarding_endpoint.yaml": "exporters.otlp/up.endpoint: is required: the upstream's HOST:PORT",
    "bad_forwarding_consumers.yaml": "exporters.otlphttp/up.sending_queue.num_consumers: otelite sends one "
                                     "request at a time per exporter and signal, in commit order; set 1 or leave it out",
    "bad_forwarding_header.yaml": "exporters.prometheusremotewrite.headers.Content-Encoding: Content-Encoding is "
                                  "set by the exporter itself",
    "bad_forwarding_signal.yaml": "service.pipelines.traces.exporters: the prometheusremotewrite exporter does "
                                  "not support traces",
    "bad_forwarding_tls.yaml": "exporters.otlp.tls.key_file: cert_file and key_file go together",
    "bad_forwarding_sizer.yaml": "exporters.otlp.sending_queue.sizer: must be bytes or items, got 'requests'",
}


@pytest.mark.parametrize("name", sorted(FORWARDING_ERRORS))
def test_forwarding_config_errors_name_the_key(name):
    path = TESTDATA / name
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {FORWARDING_ERRORS[name]}"


def test_the_forwarding_example_loads_in_the_collectors_shape(tmp_path, monkeypatch):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until start")
    text = (ROOT / "config" / "forwarding.yaml").read_text().replace("/etc/otelite/ca.pem", str(ca))
    (tmp_path / "f.yaml").write_text(text)
    monkeypatch.setenv("TENANT", "acme")
    config = load_config(tmp_path / "f.yaml")
    otlp = config.exporters["otlp/collector"]
    assert otlp.target() == ("otel-collector.observability:4317", True)
    assert otlp.headers == {"x-tenant": "acme"}
    assert (otlp.retry_on_failure.initial_interval, otlp.sending_queue.max_age) == (5.0, 86400.0)
    prw = config.exporters["prometheusremotewrite/mimir"]
    assert prw.external_labels == {"cluster": "local"} and prw.sending_queue.queue_size == 256 << 20
    assert config.service.pipelines["metrics"].exporters == ["sqlite", "otlp/collector", "prometheusremotewrite/mimir"]


# --- status codes and backoff -------------------------------------------------------------------------

def test_grpc_codes_are_retryable_or_permanent_as_the_otlp_spec_says():
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                 grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS):
        assert isinstance(classify(code, "x", ()), Retryable), code
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                 grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        assert isinstance(classify(code, "x", ()), Permanent), code
    # RESOURCE_EXHAUSTED is retryable only with RetryInfo, whose delay is honoured.
    from google.protobuf import duration_pb2
    from google.rpc import error_details_pb2
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3))
    outcome = classify(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down",
                       (("google.rpc.retryinfo-bin", info.SerializeToString()),))
    assert outcome == Retryable("gRPC RESOURCE_EXHAUSTED: slow down", 3.0)


def test_retry_after_and_backoff():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 <= retry_after_seconds(http_date) <= 61
    backoff = Backoff(RetryConfig(initial_interval=1.0, max_interval=4.0, multiplier=2.0, randomization_factor=0.5),
                      random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1.5 and all(2.0 <= d <= 6.0 for d in delays[3:])  # grows, capped at max ± 50%
    assert backoff.next_delay(throttle_s=30.0) == 30.0  # the server's delay is a minimum
    assert not backoff.exhausted()
    assert Backoff(RetryConfig(enabled=False)).exhausted()


def test_remote_write_totals_start_at_the_stores_and_fold_what_the_bound_drops(tmp_path):
    """prometheusremotewrite keeps running totals of delta series beside its cursor: a new cursor starts
    from the store's totals, and entries dropped by the queue's bound are folded in unsent, so the totals
    (and every sample sent later) stay exact."""
    from metrics_otlp import DELTA, counter

    path = tmp_path / "t.db"
    t0 = time.time_ns() - 60 * 10**9

    async def send(exporters: dict, deltas: list[int], start: int) -> None:
        async with Harness(path, exporters, "metrics") as h:
            for i, v in enumerate(deltas):
                request = counter("jobs", [(t0 + (start + i) * 10**9, v, {})], DELTA)
                assert (await h.ingest.export_metrics(request.SerializeToString(), 1, "test")).accepted == 1
            if exporters:
                await _until(lambda: h.sample("otelite_exporter_dropped_metric_points_total",
                                              exporter="prometheusremotewrite/dead", reason="queue_full") == 2)

    asyncio.run(send({}, [1, 2], 0))  # before the exporter existed: the store's total is 3
    dead = {"endpoint": f"http://127.0.0.1:{free_port()}/api/v1/write",
            "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms"},
            "sending_queue": {"sizer": "items", "queue_size": 1}}
    asyncio.run(send({"prometheusremotewrite/dead": dead}, [4, 8, 16], 2))
    conn = sqlite3.connect(path)
    try:
        (state,), = conn.execute("SELECT state FROM export_state WHERE exporter = 'prometheusremotewrite/dead' "
                                 "AND kind = 'totals'").fetchall()
        (store_total,), = conn.execute("SELECT value FROM metric_series_state").fetchall()
    finally:
        conn.close()
    assert store_total == 31
    # At the cursor (after the 4 and the 8, dropped unsent; the 16 still queued): 3 + 4 + 8.
    assert json.loads(state)[4] == 15


def test_remote_write_conversion_orders_marks_stale_and_labels_as_the_spec_says():
    """convert.py on hand-built requests: label names sorted with __name__ among them, external labels
    added unless the series has the label, an older sample of a label set left out and counted, and a
    point with no recorded value sent as the stale-marker NaN (remote-write 1.0)."""
    import struct

    from metrics_otlp import gauge
    from otelite.collector.store.export_log import Entry
    from otelite.exporters.prometheusremotewrite.config import PrometheusRemoteWriteExporterConfig
    from otelite.exporters.prometheusremotewrite.convert import Converter
    from otelite.exporters.prometheusremotewrite.proto import WriteRequest

    config = PrometheusRemoteWriteExporterConfig(endpoint="http://p/api/v1/write",
                                                 external_labels={"cluster": "eu", "Zone": "a", "region": "x"})
    config.validate()
    converter = Converter(config)
    t = 1_700_000_000_000_000_000
    resource = {"service.name": "shop"}
    requests = [gauge("temp", [(t + 2_000_000, 21.5, {"region": "eu-1"})], resource=resource),
                gauge("temp", [(t + 1_000_000, 20.0, {"region": "eu-1"})], resource=resource),  # older: left out
                gauge("temp", [(t + 3_000_000, None, {"region": "eu-1"})], resource=resource)]  # no recorded value
    entries = [Entry(i + 1, 1, 0, 1, i + 1, 0, r.SerializeToString()) for i, r in enumerate(requests)]
    need = converter.walk(entries)
    converter.load({}, {}, need)
    build = converter.build(need)
    assert (build.items, build.out_of_order) == (3, 1)
    (body,) = build.requests
    (series,) = WriteRequest.FromString(body).timeseries
    labels = [(label.name, label.value) for label in series.labels]
    assert labels == sorted(labels)
    assert labels == [("Zone", "a"), ("__name__", "temp"), ("cluster", "eu"), ("job", "shop"), ("region", "eu-1")]
    assert [(s.timestamp, s.value) for s in series.samples][0] == ((t + 2_000_000) // 1_000_000, 21.5)
    stale = series.samples[1]
    assert stale.timestamp == (t + 3_000_000) // 1_000_000
    assert struct.pack("<d", stale.value) == struct.pack("<Q", 0x7FF0000000000002)


def test_remote_write_running_totals_are_never_left_behind_by_ordering():
    """Points within one millisecond, or a late delta: a running total replaces the request's sample at
    that time or follows the last sent one by 1 ms, so Prometheus ends with the scrape's total; a gauge
    point at a time already sent is left out and counted (remote-write 1.0 "Ordering")."""
    from metrics_otlp import DELTA, counter, gauge
    from otelite.collector.store.export_log import Entry
    from otelite.exporters.prometheusremotewrite.config import PrometheusRemoteWriteExporterConfig
    from otelite.exporters.prometheusremotewrite.convert import Converter
    from otelite.exporters.prometheusremotewrite.proto import WriteRequest

    config = PrometheusRemoteWriteExporterConfig(endpoint="http://p/api/v1/write")
    config.validate()
    converter = Converter(config)
    t = 1_700_000_000_000_000_000
    ms = t // 1_000_000

    def send(*requests) -> tuple[dict, int]:
        entries = [Entry(i + 1, 1, 0, 1, i + 1, 0, r.SerializeToString()) for i, r in enumerate(requests)]
        need = converter.walk(entries)
        converter.load({}, {}, need)
        build = converter.build(need)
        converter.commit(build.state)
        samples = {}
        for body in build.requests:
            for series in WriteRequest.FromString(body).timeseries:
                name = dict((label.name, label.value) for label in series.labels)["__name__"]
                samples[name] = [(s.timestamp, s.value) for s in series.samples]
        return samples, build.out_of_order

    # Two deltas in one millisecond, one request: one sample, the total after both.
    got, left_out = send(counter("jobs", [(t, 2, {})], DELTA), counter("jobs", [(t + 10, 3, {})], DELTA),
                         gauge("temp", [(t, 20.0, {})]), gauge("temp", [(t + 10, 21.0, {})]))
    assert got == {"jobs_total": [(ms, 5.0)], "temp": [(ms, 21.0)]} and left_out == 0
    # Later requests with points at that millisecond (or before it): the total follows by 1 ms; the
    # gauge point is left out.
    got, left_out = send(counter("jobs", [(t - 5_000_000, 4, {})], DELTA), gauge("temp", [(t, 22.0, {})]))
    assert got == {"jobs_total": [(ms + 1, 9.0)]} and left_out == 1


def test_dialect_rows_round_trip_through_the_export_log_encoding():
    """A Flux batch's rows survive encode_rows/decode_rows unchanged (any text, 64-bit ids, floats), and
    the prefix that marks them can never start an OTLP request (protobuf has no field number 0)."""
    from otelite.api.flux.ingest import FluxMetric, metric_rows
    from otelite.collector.store import export_log as xl
    from metrics_otlp import gauge

    metrics = [FluxMetric("céline.\ud800", "gauge", 1.5, 1_700_000_000_000_000_001, {"k": "v\u2028"}),
               FluxMetric("big", "counter", (1 << 62) + 1, 1_700_000_000_000_000_002, {}),
               FluxMetric("members", "set", "ann", 1_700_000_000_000_000_003, {"x": "1"})]
    batch = metric_rows(1, metrics)
    payload = xl.encode_rows(batch)
    entry = xl.Entry(1, 1, 0, len(batch.points), len(batch.points), len(payload), payload)
    assert entry.holds_rows()
    back = xl.decode_rows(payload)
    assert (back.resources, back.scopes, back.series, back.points) == \
        (batch.resources, batch.scopes, batch.series, batch.points)
    otlp = gauge("temp", [(1, 2.0, {})]).SerializeToString()
    assert not xl.Entry(2, 1, 0, 1, 1, len(otlp), otlp).holds_rows() and otlp[0] != 0
