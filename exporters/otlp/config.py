"""`exporters.otlp`: the OpenTelemetry Collector's otlp exporter settings (configgrpc.ClientConfig,
timeout, retry_on_failure, sending_queue). Each field's comment says what happens when it is omitted."""

from __future__ import annotations

from dataclasses import dataclass

from otelite.collector.component import InvalidField, duration, section
from otelite.exporters.forwarding.config import (QueueConfig, RetryConfig, TLSClientConfig, check_headers,
                                                 headers_field)


@dataclass
class OtlpExporterConfig:
    # Required. HOST:PORT; `https://HOST:PORT` is TLS and `http://HOST:PORT` plaintext whatever `tls` says.
    endpoint: str = ""
    headers: dict = headers_field()  # sent as gRPC metadata with every request (e.g. an API key)
    compression: str = "gzip"  # gzip or none
    timeout: float = duration(5.0)  # for each attempt; an attempt without an answer by then is retried
    tls: TLSClientConfig = section(TLSClientConfig)  # TLS unless `insecure: true`, with the system's CAs
    retry_on_failure: RetryConfig = section(RetryConfig)
    sending_queue: QueueConfig = section(QueueConfig)

    def validate(self) -> None:
        if not self.endpoint:
            raise InvalidField("endpoint", "is required: the upstream's HOST:PORT")
        target = self.target()[0]
        if "/" in target or ":" not in target.rsplit("]", 1)[-1]:
            raise InvalidField("endpoint", f"expected HOST:PORT (or http(s)://HOST:PORT), got {self.endpoint!r}")
        if self.compression not in ("gzip", "none", ""):
            raise InvalidField("compression", f"must be gzip or none, got {self.compression!r}")
        if self.timeout <= 0:
            raise InvalidField("timeout", "must be positive")
        self.headers = check_headers(self.headers)
        self.tls.check()
        if self.tls.insecure_skip_verify:
            raise InvalidField("tls.insecure_skip_verify", "gRPC's Python client cannot skip verification; "
                               "give the server's CA in tls.ca_file")
        self.retry_on_failure.check()
        self.sending_queue.check()

    def target(self) -> tuple[str, bool]:
        """(HOST:PORT, whether TLS is used)."""
        endpoint = self.endpoint
        for scheme, secure in (("https://", True), ("http://", False)):
            if endpoint.startswith(scheme):
                return endpoint[len(scheme):].rstrip("/"), secure
        return endpoint, not self.tls.insecure
