"""Sends the export log's OTLP requests to an OTLP/gRPC upstream, as bytes (never decoded again).

Status codes as the OTLP specification says ("Failures", "Throttling"), as the Collector's otlp exporter
applies them: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried;
RESOURCE_EXHAUSTED only when the server sent RetryInfo (it can recover); anything else (INVALID_ARGUMENT,
UNAUTHENTICATED, ...) is permanent. RetryInfo's delay is the least the next attempt waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otelite.exporters.forwarding.client import USER_AGENT
from otelite.exporters.forwarding.outcome import Delivered, Outcome, Permanent, Retryable
from otelite.exporters.forwarding.queue import Forwarder, Prepared
from otelite.exporters.forwarding.tls import grpc_credentials

if TYPE_CHECKING:
    from otelite.collector.component import Host
    from otelite.exporters.otlp.config import OtlpExporterConfig

_METHODS = {
    "traces": ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", ExportTraceServiceResponse),
    "metrics": ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", ExportMetricsServiceResponse),
}
_RETRYABLE = frozenset((grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                        grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS))


class OtlpGrpcExporter(Forwarder):
    def __init__(self, component_id: str, host: "Host", config: "OtlpExporterConfig") -> None:
        super().__init__(component_id, host, retry=config.retry_on_failure, queue=config.sending_queue,
                         timeout=config.timeout)
        self._config = config
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict = {}

    async def open(self) -> None:
        c = self._config
        target, secure = c.target()
        options = [
            ("grpc.primary_user_agent", USER_AGENT),
            # An upstream that comes back is noticed within the retry interval, not grpc's 2-minute default.
            ("grpc.initial_reconnect_backoff_ms", int(min(c.retry_on_failure.initial_interval, 1.0) * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(c.retry_on_failure.max_interval * 1000)),
            ("grpc.max_send_message_length", -1),
        ]
        if c.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", c.tls.server_name_override))
        if secure:
            self._channel = grpc.aio.secure_channel(target, grpc_credentials(c.tls), options, self._compression)
        else:
            self._channel = grpc.aio.insecure_channel(target, options, self._compression)
        # Requests are the export log's bytes: no serializer, nothing decoded or re-encoded.
        self._calls = {signal: (self._channel.unary_unary(method, request_serializer=None,
                                                          response_deserializer=response.FromString))
                       for signal, (method, response) in _METHODS.items()}

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def send(self, signal: str, prepared: Prepared) -> Outcome:
        try:
            response = await self._calls[signal](prepared.body, timeout=self.timeout, metadata=self._metadata,
                                                 compression=self._compression)
        except grpc.aio.AioRpcError as e:
            return classify(e.code(), e.details() or "", e.trailing_metadata())
        ps = response.partial_success
        rejected = ps.rejected_spans if signal == "traces" else ps.rejected_data_points
        return Delivered(rejected, ps.error_message)


def classify(code: grpc.StatusCode, details: str, trailing: object) -> Outcome:
    message = f"gRPC {code.name}: {details}"
    retry_delay = _retry_info(trailing)
    if code in _RETRYABLE or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay is not None):
        return Retryable(message, retry_delay)
    return Permanent(message)


def _retry_info(trailing: object) -> float | None:
    """RetryInfo's delay from google.rpc.Status details (or the `google.rpc.retryinfo-bin` metadata)."""
    for key, value in tuple(trailing or ()):
        try:
            if key == "grpc-status-details-bin":
                for detail in status_pb2.Status.FromString(value).details:
                    if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                        info = error_details_pb2.RetryInfo()
                        detail.Unpack(info)
                        return info.retry_delay.ToTimedelta().total_seconds()
            elif key == "google.rpc.retryinfo-bin":
                return error_details_pb2.RetryInfo.FromString(value).retry_delay.ToTimedelta().total_seconds()
        except Exception:  # noqa: BLE001 - malformed details: no delay, not a different outcome
            continue
    return None
