"""The consumer fan-out (collector/pipeline/fanout.py): receivers hand one neutral batch to the exporters of
`service.pipelines`; the sqlite exporter's commit gates the acknowledgement, the others cannot delay or fail
it. In-process cases use a real Store on a real file and small consumer classes registered as component
types, as a forwarding exporter will be; the live case checks the wire behaviour and /metrics/self."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from otelite.collector.component import Factory, Host
from otelite.collector.components import BUILTIN
from otelite.collector.config import config_from_mapping
from otelite.collector.pipeline import fanout
from otelite.collector.pipeline.consumer import Consumer, TelemetryBatch
from otelite.collector.pipeline.ingest import StoreFull
from conftest import PipelineHarness, trace_request


# --- test components: real consumers, registered by type like any exporter -------------------------------

@dataclass
class RecordingConfig:
    fail: bool = False  # raise from consume
    block: bool = False  # never finish consume (a forwarder whose upstream hangs)


class RecordingExporter(Consumer):
    """A forwarder-shaped (non-gating) consumer that keeps what it is given."""

    gates_ack = False

    def __init__(self, component_id: str, config: RecordingConfig) -> None:
        super().__init__(component_id)
        self.config = config
        self.batches: list[TelemetryBatch] = []
        self.started = self.stopped = False
        self.never = asyncio.Event()

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True

    async def consume(self, batch: TelemetryBatch) -> None:
        self.batches.append(batch)
        if self.config.block:
            await self.never.wait()
        if self.config.fail:
            raise ConnectionError("upstream refused")


def _create_recording(host: Host, component_id: str, config: RecordingConfig) -> RecordingExporter:
    return RecordingExporter(component_id, config)


REGISTRY = BUILTIN.with_factories(Factory(kind="exporters", type="recording", config=RecordingConfig,
                                          create_consumer=_create_recording))


class Harness(PipelineHarness):
    def __init__(self, tmp_path, exporters: dict, pipelines: dict) -> None:
        doc = {"exporters": {"sqlite": {"path": str(tmp_path / "f.db")}, **exporters},
               "service": {"pipelines": pipelines}}
        super().__init__(config_from_mapping(doc, "fanout.yaml", REGISTRY))

    def consumer(self, component_id: str) -> RecordingExporter:
        return next(c for c in self.pipelines.consumers if c.component_id == component_id)

    def counter(self, name: str, exporter: str) -> float:
        value = self.telemetry.registry.get_sample_value(f"{name}_total", {"exporter": exporter})
        return value or 0.0

    def stored_spans(self) -> int:
        conn = sqlite3.connect(self.store.path)
        try:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        finally:
            conn.close()


async def _settle() -> None:
    """Let the non-gating deliveries (tasks started after the ack) run."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_every_consumer_of_the_pipeline_gets_the_same_batch_and_the_failing_one_does_not_fail_the_ack(tmp_path):
    async def run() -> None:
        async with Harness(tmp_path, {"recording": {}, "recording/broken": {"fail": True}},
                           {"traces": {"receivers": ["otlp"], "exporters": ["sqlite", "recording", "recording/broken"]},
                            "metrics": {"receivers": ["otlp"], "exporters": ["sqlite"]}}) as h:
            request = trace_request(10, 7)
            payload = request.SerializeToString()
            result = await h.ingest.export_traces(payload, 1, "test")
            await _settle()
            assert (result.accepted, result.rejected) == (10, 0)
            assert h.stored_spans() == 10  # acknowledged: committed by the gating sqlite exporter
            good, broken = h.consumer("recording"), h.consumer("recording/broken")
            assert good.started and broken.started
            assert len(good.batches) == 1 and broken.batches == good.batches  # one neutral batch, shared
            batch = good.batches[0]
            assert (batch.signal, batch.project_id, batch.items, len(batch.rows.spans)) == ("traces", 1, 10, 10)
            assert batch.request() == request  # decoded from the payload bytes on first use
            for exporter, sent, failed in (("sqlite", 10, 0), ("recording", 10, 0), ("recording/broken", 0, 10)):
                assert h.counter("otelcol_exporter_sent_spans", exporter) == sent, exporter
                assert h.counter("otelcol_exporter_send_failed_spans", exporter) == failed, exporter
            # The metrics pipeline lists only sqlite: the recording exporters see no metrics.
            await h.ingest.export_metrics(_metrics_request(), 1, "test")
            await _settle()
            assert [b.signal for b in good.batches] == ["traces"]
            assert h.counter("otelcol_exporter_sent_metric_points", "sqlite") == 1
        assert good.stopped and broken.stopped

    asyncio.run(run())


def test_the_gating_consumer_decides_the_ack_and_refused_data_goes_nowhere_else(tmp_path):
    async def run() -> None:
        async with Harness(tmp_path, {"recording": {}},
                           {"traces": {"receivers": ["otlp"], "exporters": ["sqlite", "recording"]}}) as h:
            h.store.writer.refuse("over the memory limit")  # the memory limiter's hook: sqlite refuses
            with pytest.raises(StoreFull, match="over the memory limit"):
                h.ingest.check_admission("traces")
            with pytest.raises(StoreFull):
                await h.ingest.export_traces(trace_request(5).SerializeToString(), 1, "test")
            await _settle()
            assert h.consumer("recording").batches == []  # not acknowledged, so not forwarded either
            assert h.stored_spans() == 0
            # A refusal is backpressure, not an exporter failure: the receiver counts it refused.
            assert h.counter("otelcol_exporter_send_failed_spans", "sqlite") == 0
            assert h.telemetry.registry.get_sample_value(
                "otelite_receiver_refused_spans_total", {"receiver": "otlp", "transport": "test"}) == 5
            h.store.writer.refuse(None)
            assert (await h.ingest.export_traces(trace_request(5).SerializeToString(), 1, "test")).accepted == 5
            await _settle()
            assert len(h.consumer("recording").batches) == 1

    asyncio.run(run())


def test_a_hanging_consumer_neither_delays_acks_nor_grows_without_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(fanout, "MAX_IN_FLIGHT", 4)

    async def run() -> None:
        async with Harness(tmp_path, {"recording": {"block": True}},
                           {"traces": {"receivers": ["otlp"], "exporters": ["sqlite", "recording"]}}) as h:
            for seed in range(10):
                result = await asyncio.wait_for(
                    h.ingest.export_traces(trace_request(3, seed).SerializeToString(), 1, "test"), 10)
                assert result.accepted == 3
                await _settle()
            hanging = h.consumer("recording")
            assert len(hanging.batches) == 4  # the bound: the rest were dropped for it, and counted
            assert h.counter("otelcol_exporter_send_failed_spans", "recording") == 6 * 3
            assert h.counter("otelcol_exporter_sent_spans", "sqlite") == 10 * 3
            assert h.stored_spans() == 30
            # Shutdown waits a bounded time, then cancels what still hangs (counted failed too).
            await h.pipelines._fanouts["traces"].drain(grace=0.1)
            assert h.counter("otelcol_exporter_send_failed_spans", "recording") == 10 * 3

    asyncio.run(run())


def test_an_exporter_listed_by_two_pipelines_of_a_signal_gets_each_batch_once(tmp_path):
    async def run() -> None:
        async with Harness(tmp_path, {"recording": {}},
                           {"traces": {"receivers": ["otlp"], "exporters": ["sqlite", "recording"]},
                            "traces/copy": {"receivers": ["otlp"], "exporters": ["recording", "sqlite"]},
                            "metrics": {"receivers": ["otlp"], "exporters": ["sqlite", "recording"]}}) as h:
            await h.ingest.export_traces(trace_request(4).SerializeToString(), 1, "test")
            await h.ingest.export_metrics(_metrics_request(), 1, "test")
            await _settle()
            assert [b.signal for b in h.consumer("recording").batches] == ["traces", "metrics"]
            assert h.stored_spans() == 4
            assert len(h.pipelines.consumers) == 2  # one instance per exporter id, shared by the signals

    asyncio.run(run())


def _metrics_request() -> metrics_service_pb2.ExportMetricsServiceRequest:
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "orders"
    dp = m.gauge.data_points.add()
    dp.as_double, dp.time_unix_nano = 1.0, 1_700_000_000_000_000_000
    return req


# --- live: a signal no pipeline takes, and the exporter self-metrics ----------------------------------------

def test_a_signal_without_a_pipeline_is_refused_and_exporter_metrics_are_served(make_server):
    server = make_server({"service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["sqlite"]}}}})
    r = httpx.post(f"{server.http_url}/v1/traces", content=trace_request(3).SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    body = _metrics_request().SerializeToString()
    r = httpx.post(f"{server.http_url}/v1/metrics", content=body,
                   headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 404
    r = httpx.post(f"{server.http_url}/v1/metrics", content=b"{}", headers={"Content-Type": "application/json"},
                   timeout=10)
    assert (r.status_code, r.json()) == (404, {"code": 5, "message": "no metrics pipeline is configured "
                                               "(service.pipelines); nothing was stored"})
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        with pytest.raises(grpc.RpcError) as err:
            metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(_metrics_request(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert server.query("SELECT count(*) FROM metric_points") == [(0,)]
    assert server.query("SELECT count(*) FROM spans") == [(3,)]
    metrics = httpx.get(f"{server.http_url}/metrics/self", timeout=10).text
    assert 'otelcol_exporter_sent_spans_total{exporter="sqlite"} 3.0' in metrics
    assert 'otelcol_exporter_send_failed_spans_total{exporter="sqlite"} 0.0' in metrics
    assert "otelcol_exporter_sent_metric_points_total" in metrics  # declared, with no sample yet
