"""POSTs the export log's OTLP requests (protobuf, gzip) to an OTLP/HTTP upstream.

Status codes as the OTLP specification says ("OTLP/HTTP Response", "Failures", "Throttling") and the
Collector's otlphttp exporter applies them: 2xx is delivered (a partial success in the body is logged and
its rejected items counted); 429, 502, 503 and 504 are retried, honouring Retry-After; every other status
is permanent. A connection that fails or times out is retried.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import TYPE_CHECKING

import httpx
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otelite.exporters.forwarding.client import USER_AGENT, HttpForwarder
from otelite.exporters.forwarding.outcome import Delivered, Outcome, Permanent, Retryable, retry_after_seconds
from otelite.exporters.forwarding.queue import Prepared

if TYPE_CHECKING:
    from otelite.collector.component import Host
    from otelite.exporters.otlphttp.config import OtlpHttpExporterConfig

RETRYABLE_STATUS = frozenset((429, 502, 503, 504))
_RESPONSES = {"traces": ExportTraceServiceResponse, "metrics": ExportMetricsServiceResponse}
_MAX_RESPONSE_BYTES = 64 << 10
_GZIP_LEVEL = 6  # gzip's default, as the Collector's


class OtlpHttpExporter(HttpForwarder):
    def __init__(self, component_id: str, host: "Host", config: "OtlpHttpExporterConfig") -> None:
        super().__init__(component_id, host, retry=config.retry_on_failure, queue=config.sending_queue,
                         timeout=config.timeout)
        self._config = config
        self._headers = {"User-Agent": USER_AGENT, **config.headers, "Content-Type": "application/x-protobuf"}
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"

    async def prepare(self, signal: str, entries) -> Prepared:
        prepared = await super().prepare(signal, entries)
        if self._config.compression == "gzip":
            prepared.body = await asyncio.to_thread(gzip.compress, prepared.body, _GZIP_LEVEL)
        return prepared

    async def send(self, signal: str, prepared: Prepared) -> Outcome:
        url = self._config.url(signal)
        extensions = {"sni_hostname": self._config.tls.server_name_override} \
            if self._config.tls.server_name_override else None
        try:
            response = await self._client.post(url, content=prepared.body, headers=self._headers,
                                               extensions=extensions)
        except httpx.HTTPError as e:
            return Retryable(f"POST {url}: {type(e).__name__}: {e}")
        body = response.content[:_MAX_RESPONSE_BYTES]
        if 200 <= response.status_code < 300:
            return _partial_success(signal, body, response.headers.get("content-type", ""))
        message = f"POST {url}: HTTP {response.status_code}{_status_message(body)}"
        if response.status_code in RETRYABLE_STATUS:
            throttle = retry_after_seconds(response.headers.get("retry-after")) \
                if response.status_code in (429, 503) else None
            return Retryable(message, throttle)
        return Permanent(message)


def _partial_success(signal: str, body: bytes, content_type: str) -> Delivered:
    if not body or "protobuf" not in content_type:
        return Delivered()
    try:
        ps = _RESPONSES[signal].FromString(body).partial_success
    except DecodeError:
        return Delivered()
    return Delivered(ps.rejected_spans if signal == "traces" else ps.rejected_data_points, ps.error_message)


def _status_message(body: bytes) -> str:
    """OTLP: 4xx/5xx bodies are a google.rpc.Status; say its message when there is one."""
    if not body:
        return ""
    try:
        message = status_pb2.Status.FromString(body).message
    except DecodeError:
        message = body.decode("utf-8", "replace")[:200]
    return f": {message}" if message else ""
