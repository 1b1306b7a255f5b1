"""`exporters.prometheusremotewrite`: the Collector's prometheusremotewrite exporter settings that change
what is sent (endpoint, headers, timeout, tls, external_labels, namespace, resource_to_telemetry_conversion,
target_info, max_batch_size_bytes, retry_on_failure) and otelite's flux_window, with otelite's durable
sending_queue in place of the Collector's in-memory remote_write_queue / wal. Each field's comment says what happens when omitted."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from otelite.collector.component import InvalidField, duration, section
from otelite.exporters.forwarding.config import (QueueConfig, RetryConfig, TLSClientConfig, check_headers,
                                                 headers_field)
from otelite.exporters.otlphttp.config import check_url
from otelite.exporters.prometheus import translation as tr

# remote-write 1.0: senders "MUST NOT allow users to configure [headers] in such a way as to send reserved
# headers".
RESERVED_HEADERS = ("content-encoding", "content-type", "x-prometheus-remote-write-version", "user-agent",
                    "content-length")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass
class EnabledConfig:
    enabled: bool = False


@dataclass
class TargetInfoConfig:
    enabled: bool = True  # one target_info sample per application, as the scrape shows


@dataclass
class PrometheusRemoteWriteExporterConfig:
    endpoint: str = ""  # required: the receiver's URL, e.g. http://prometheus:9090/api/v1/write
    headers: dict = headers_field()  # e.g. X-Scope-OrgID for Mimir, Authorization
    timeout: float = duration(5.0)  # for each HTTP request
    tls: TLSClientConfig = section(TLSClientConfig)  # for https:// endpoints
    # Labels added to every series (a label the series already has wins), e.g. {cluster: eu-1}.
    external_labels: dict = field(default_factory=dict)
    namespace: str = ""  # prefix of every metric name (`<namespace>_<name>`); "": none
    # true: every resource attribute also becomes a label of each series of that resource.
    resource_to_telemetry_conversion: EnabledConfig = section(EnabledConfig)
    target_info: TargetInfoConfig = section(TargetInfoConfig)
    max_batch_size_bytes: int = 3_000_000  # a WriteRequest larger than this (uncompressed) is split
    # Flux distributions' quantiles and sets' distinct members are computed over the observations of this
    # window before each sample, as the scrape does over its metric_expiration (keep the two equal).
    flux_window: float = duration(300.0)
    retry_on_failure: RetryConfig = section(RetryConfig)
    sending_queue: QueueConfig = section(QueueConfig)

    def validate(self) -> None:
        if not self.endpoint:
            raise InvalidField("endpoint", "is required: the remote-write URL, e.g. http://prometheus:9090/api/v1/write")
        check_url("endpoint", self.endpoint)
        if self.timeout <= 0:
            raise InvalidField("timeout", "must be positive")
        self.headers = check_headers(self.headers, RESERVED_HEADERS)
        labels = {}
        for k, v in self.external_labels.items():
            if not isinstance(k, str) or not k or not isinstance(v, str) or not v:
                raise InvalidField(f"external_labels.{k}", "an external label needs a name and a non-empty text value")
            name = tr.label_name(k)
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise InvalidField(f"external_labels.{k}", "not a usable label name")
            labels[name] = v
        self.external_labels = labels
        if self.namespace and not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", self.namespace):
            raise InvalidField("namespace", f"must be a valid metric name prefix, got {self.namespace!r}")
        if self.flux_window <= 0:
            raise InvalidField("flux_window", "must be positive")
        if self.max_batch_size_bytes <= 0:
            raise InvalidField("max_batch_size_bytes", "must be positive")
        self.tls.check()
        self.retry_on_failure.check()
        self.sending_queue.check()
