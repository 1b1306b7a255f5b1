"""The shared export step of every receiver: normalize → bounded queue → wait for the commit.

Transports (OTLP gRPC, OTLP HTTP, later the REST dialects' ingest routes) decode their payload, call one
method here, and map its outcome to their own status codes. Acknowledgement = durability (otlp.md): the
coroutines return only after the writer has committed the rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from otelite.collector.pipeline.walker import Walker
from otelite.collector.store.records import WriteBatch
from otelite.collector.store.writer import StoreFull, StoreUnavailable

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otelite.collector.store.writer import Writer
    from otelite.collector.telemetry import Telemetry

__all__ = ["ExportResult", "Ingest", "StoreFull", "StoreUnavailable"]


@dataclass(frozen=True, slots=True)
class ExportResult:
    accepted: int
    rejected: int
    error_message: str  # English, for partial_success.error_message; empty when all was stored


class Ingest:
    def __init__(self, writer: "Writer", telemetry: "Telemetry", walker: "Walker | None" = None,
                 receiver: str = "otlp") -> None:
        self._writer = writer
        self._telemetry = telemetry
        self._walker = walker or Walker(0)
        self._receiver = receiver

    async def export_traces(self, payload: "bytes | ExportTraceServiceRequest", project_id: int,
                            transport: str) -> ExportResult:
        """`payload`: protobuf bytes or a decoded message. Raises OtlpDataError (invalid request; its
        subclass OtlpDecodeError for bytes that do not decode), StoreFull (retry later), StoreUnavailable."""
        batch = await self._walker.traces(payload, project_id)
        t = self._telemetry
        return await self._store(batch, len(batch.spans), transport, t.accepted_spans, t.refused_spans)

    async def export_metrics(self, payload: "bytes | ExportMetricsServiceRequest", project_id: int,
                             transport: str) -> ExportResult:
        batch = await self._walker.metrics(payload, project_id)
        t = self._telemetry
        return await self._store(batch, len(batch.points), transport, t.accepted_points, t.refused_points)

    def check_admission(self) -> None:
        """Raise StoreFull at once when the store cannot take data now; receivers call it before reading a
        body, so an overloaded collector refuses cheaply instead of parsing what it will refuse."""
        self._writer.check_admission()
        self._walker.check_admission()

    async def _store(self, batch: WriteBatch, items: int, transport: str, accepted, refused) -> ExportResult:
        labels = (self._receiver, transport)
        if batch.rejected:
            refused.labels(*labels).inc(batch.rejected)
        if items:
            try:
                future = self._writer.submit(batch)
            except StoreFull:
                refused.labels(*labels).inc(items)
                raise
            try:
                # shield: a client that disconnects must not cancel the writer's future; the data is
                # committed anyway, only the acknowledgement is lost (the client will retry).
                await asyncio.shield(asyncio.wrap_future(future))
            except StoreUnavailable:
                refused.labels(*labels).inc(items)
                raise
            accepted.labels(*labels).inc(items)
        return ExportResult(items, batch.rejected, "; ".join(batch.errors))
