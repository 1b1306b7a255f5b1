"""`exporters.otlphttp`: the OpenTelemetry Collector's otlphttp exporter settings (confighttp.ClientConfig,
encoding, retry_on_failure, sending_queue). Each field's comment says what happens when it is omitted."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from otelite.collector.component import InvalidField, duration, section
from otelite.exporters.forwarding.config import (QueueConfig, RetryConfig, TLSClientConfig, check_headers,
                                                 headers_field)

_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}


@dataclass
class OtlpHttpExporterConfig:
    # Base URL; /v1/traces and /v1/metrics are appended. Required unless both signal URLs are given.
    endpoint: str = ""
    traces_endpoint: str = ""  # full URL for traces; "": endpoint + /v1/traces
    metrics_endpoint: str = ""  # full URL for metrics; "": endpoint + /v1/metrics
    encoding: str = "proto"  # only proto: the export log holds protobuf requests
    headers: dict = headers_field()
    compression: str = "gzip"  # gzip or none (Content-Encoding of the request)
    timeout: float = duration(30.0)  # for each attempt
    tls: TLSClientConfig = section(TLSClientConfig)  # for https:// endpoints
    retry_on_failure: RetryConfig = section(RetryConfig)
    sending_queue: QueueConfig = section(QueueConfig)

    def validate(self) -> None:
        if not self.endpoint and not (self.traces_endpoint and self.metrics_endpoint):
            raise InvalidField("endpoint", "is required: the upstream's base URL, e.g. https://otlp.example.com")
        for key in ("endpoint", "traces_endpoint", "metrics_endpoint"):
            value = getattr(self, key)
            if value:
                check_url(key, value)
        if self.encoding != "proto":
            raise InvalidField("encoding", f"only proto is supported, got {self.encoding!r}")
        if self.compression not in ("gzip", "none", ""):
            raise InvalidField("compression", f"must be gzip or none, got {self.compression!r}")
        if self.timeout <= 0:
            raise InvalidField("timeout", "must be positive")
        self.headers = check_headers(self.headers, ("content-type", "content-encoding", "content-length"))
        self.tls.check()
        self.retry_on_failure.check()
        self.sending_queue.check()

    def url(self, signal: str) -> str:
        explicit = self.traces_endpoint if signal == "traces" else self.metrics_endpoint
        return explicit or self.endpoint.rstrip("/") + _PATHS[signal]


def check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField(key, f"expected an http:// or https:// URL, got {value!r}")
