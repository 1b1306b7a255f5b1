"""What a receiver hands on, and to what: the neutral batch and the consumer interface (the Collector's
`pdata` and `consumer.Traces` / `consumer.Metrics`).

A receiver knows only its signal's "next consumer" (collector/pipeline/fanout.py builds it from
`service.pipelines`); exporters implement `Consumer`. Nothing here knows a protocol's wire format or SQL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

if TYPE_CHECKING:
    from otelite.collector.store.records import SlicedBatch, WriteBatch


class TelemetryBatch:
    """One accepted request after normalization: its signal (`traces` or `metrics`), the project it belongs
    to, the OTLP request and its normalized rows (collector/store/records.py: what the store writes).

    `request()` is decoded on first use: with decode workers (collector/pipeline/walker.py) the event loop
    receives only the rows and keeps the original bytes, so a consumer that never looks at the request
    costs nothing. Consumers must treat the batch as read-only: every consumer of a fan-out gets the same
    object.
    """

    __slots__ = ("signal", "project_id", "rows", "_payload")

    def __init__(self, signal: str, project_id: int, payload: Any, rows: "WriteBatch | SlicedBatch") -> None:
        self.signal = signal
        self.project_id = project_id
        self.rows = rows
        # protobuf bytes, or the decoded message (OTLP/JSON, gRPC in-process), or None for rows a REST
        # dialect built (Flux metrics: no OTLP request exists; `request()` is None)
        self._payload = payload

    @property
    def items(self) -> int:
        """Spans or data points: what the exporter self-metrics count."""
        return self.rows.items

    def encoded(self) -> bytes | None:
        """The OTLP request as protobuf bytes (what the export log keeps for forwarders): the received
        bytes themselves, or the decoded message serialized; None for a batch that has no OTLP request."""
        payload = self._payload
        if isinstance(payload, bytes):
            return payload
        if isinstance(payload, (bytearray, memoryview)):
            return bytes(payload)
        if payload is None:
            return None
        return payload.SerializeToString()

    def request(self) -> ExportTraceServiceRequest | ExportMetricsServiceRequest | None:
        if isinstance(self._payload, (bytes, bytearray, memoryview)):
            request_type = ExportTraceServiceRequest if self.signal == "traces" else ExportMetricsServiceRequest
            # Already validated: the walker decoded these very bytes to produce `rows`.
            self._payload = request_type.FromString(bytes(self._payload))
        return self._payload


class Consumer(ABC):
    """An exporter's side of a pipeline: `consume(batch)` for every batch of the pipelines it is listed in.

    `gates_ack = True` (the sqlite exporter): the acknowledgement waits for `consume` to return, and an
    exception from it (StoreFull: retry later; StoreUnavailable: not stored) fails the request. Such a
    consumer also answers `check_admission()` before the receiver reads a body.

    `gates_ack = False` (forwarders: otlp, otlphttp, prometheusremotewrite): `consume` runs after the gating
    consumers committed the batch, as a task the acknowledgement does not wait for; the fan-out bounds its
    tasks in flight (beyond the bound the batch is dropped for it and counted failed) and counts whatever it
    raises as failed. It can neither delay nor fail an acknowledgement. A forwarder that must not lose data
    reads a durable cursor over the store and treats `consume` as a wake-up.
    """

    gates_ack: ClassVar[bool] = True
    # False for a forwarder whose `consume` is only a wake-up: it counts what its upstream acknowledged
    # itself (otelcol_exporter_sent_*), so the fan-out does not count the hand-off.
    counts_delivery: ClassVar[bool] = True

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id  # e.g. "sqlite" or "otlphttp/upstream": the self-metrics' label

    def check_admission(self) -> None:
        """Raise StoreFull if a batch could not be taken now (gating consumers; advisory)."""

    def serve_signals(self, signals: frozenset[str]) -> None:
        """Called once when the pipelines are built, before `start`: the signals whose pipelines list
        this consumer (a forwarder queues only those)."""

    @abstractmethod
    async def consume(self, batch: TelemetryBatch) -> None:
        ...

    async def start(self) -> None:
        """Called once before the receivers start."""

    async def shutdown(self) -> None:
        """Called once after the receivers stopped and the fan-out's in-flight deliveries ended."""
