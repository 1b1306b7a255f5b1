"""The OTLP receiver's hand-off: decode and normalize → one neutral batch → the next consumer of its signal.

Transports (OTLP gRPC, OTLP HTTP, later the REST dialects' ingest routes) decode their payload, call one
method here, and map its outcome to their own status codes. Acknowledgement = durability (otlp.md): the
coroutines return only after the gating exporter (sqlite) has committed the rows; the rest of the fan-out
(collector/pipeline/fanout.py) cannot delay or fail them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from otelite.collector.pipeline.consumer import TelemetryBatch
from otelite.collector.pipeline.walker import Walker
from otelite.collector.store.writer import SeriesNotStored, StoreFull, StoreUnavailable

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otelite.collector.pipeline.fanout import Pipelines
    from otelite.collector.receivers.admission import BodyBudget
    from otelite.collector.store.records import SlicedBatch, WriteBatch
    from otelite.collector.telemetry import Telemetry

__all__ = ["ExportResult", "Ingest", "StoreFull", "StoreUnavailable"]


@dataclass(frozen=True, slots=True)
class ExportResult:
    accepted: int
    rejected: int
    error_message: str  # English, for partial_success.error_message; empty when all was stored


class Ingest:
    def __init__(self, pipelines: "Pipelines", telemetry: "Telemetry", walker: "Walker | None" = None,
                 receiver: str = "otlp", body_budget: "BodyBudget | None" = None) -> None:
        self._next = {signal: pipelines.next_consumer(signal) for signal in ("traces", "metrics")}
        self._telemetry = telemetry
        self._walker = walker or Walker(0)
        self._receiver = receiver
        # Request bytes the transports may hold at once (collector/receivers/admission.py); None: unbounded.
        self.body_budget = body_budget

    def accepts(self, signal: str) -> bool:
        """Whether a pipeline takes `signal` (receivers do not serve a signal no pipeline takes)."""
        return self._next.get(signal) is not None

    async def export_traces(self, payload: "bytes | ExportTraceServiceRequest", project_id: int,
                            transport: str, *, json_body: bool = False) -> ExportResult:
        """`payload`: protobuf bytes, an OTLP/JSON body (`json_body`) or a decoded message. Raises
        OtlpDataError (invalid request; its subclasses OtlpDecodeError for bytes that do not decode and
        OtlpJsonBodyError for a JSON body that does not map), StoreFull (retry later), StoreUnavailable."""
        if json_body:
            rows, payload = await self._walker.traces_json(payload, project_id)  # (the request as protobuf)
        else:
            rows = await self._walker.traces(payload, project_id)
        t = self._telemetry
        return await self._consume(TelemetryBatch("traces", project_id, payload, rows), rows.items,
                                   transport, t.accepted_spans, t.refused_spans)

    async def export_metrics(self, payload: "bytes | ExportMetricsServiceRequest", project_id: int,
                             transport: str, *, json_body: bool = False) -> ExportResult:
        if json_body:
            rows, payload = await self._walker.metrics_json(payload, project_id)
        else:
            rows = await self._walker.metrics(payload, project_id)
        t = self._telemetry

        def consume(rows: "WriteBatch | SlicedBatch"):
            return self._consume(TelemetryBatch("metrics", project_id, payload, rows), rows.items, transport,
                                 t.accepted_points, t.refused_points)
        try:
            result = await consume(rows)
        except SeriesNotStored:
            # The batch left out rows of series the store lacks (walker.py should have caught it): nothing
            # of it was stored. Walk it again with every row, and trust no series seen committed before.
            self._walker.forget_committed()
            rows = await self._walker.metrics(payload, project_id, whole=True)
            result = await consume(rows)
        self._walker.committed(rows)  # later batches may leave out these series' rows
        return result

    async def export_metric_rows(self, rows: "WriteBatch", project_id: int, receiver: str,
                                 transport: str = "http") -> ExportResult:
        """Metric rows a REST dialect built itself (Flux, Trifle's track/assert): the same hand-off and the
        same acknowledgement after commit as OTLP. The batch carries no OTLP request
        (`TelemetryBatch.request()` is None): the sqlite exporter queues its rows for the forwarders in
        the same commit (export_log.encode_rows). `receiver` names the dialect in the self-metrics.
        Raises StoreFull, StoreUnavailable."""
        t = self._telemetry
        return await self._consume(TelemetryBatch("metrics", project_id, None, rows), len(rows.points),
                                   transport, t.accepted_points, t.refused_points, receiver)

    def check_admission(self, signal: str) -> None:
        """Raise StoreFull at once when `signal`'s pipeline cannot take data now; receivers call it before
        reading a body, so an overloaded collector refuses cheaply instead of parsing what it will refuse."""
        self._next[signal].check_admission()
        self._walker.check_admission()

    async def _consume(self, batch: TelemetryBatch, items: int, transport: str, accepted, refused,
                       receiver: str | None = None) -> ExportResult:
        labels = (receiver or self._receiver, transport)
        rows = batch.rows
        if rows.rejected:
            refused.labels(*labels).inc(rows.rejected)
        if items:
            try:
                await self._next[batch.signal].consume(batch)
            except SeriesNotStored:
                raise  # walked again and retried (export_metrics): not refused
            except (StoreFull, StoreUnavailable):
                refused.labels(*labels).inc(items)
                raise
            accepted.labels(*labels).inc(items)
        return ExportResult(items, rows.rejected, "; ".join(rows.errors))
