"""The client settings every forwarding exporter has, in the OpenTelemetry Collector's shape
(`configtls.ClientConfig`, `configretry.BackOffConfig`, `exporterhelper.QueueConfig`). Each field's
comment says what happens when it is omitted."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from otelite.collector.component import InvalidField, duration


@dataclass
class TLSClientConfig:
    # otlp (gRPC): true sends in plaintext. For URL endpoints (otlphttp, prometheusremotewrite) the scheme
    # decides, as in the Collector: http:// is plaintext, https:// is TLS.
    insecure: bool = False
    insecure_skip_verify: bool = False  # do not check the server's certificate (HTTP exporters only)
    ca_file: str = ""  # CA certificates (PEM) the server's certificate must chain to; "": the system's
    cert_file: str = ""  # client certificate (PEM) for mutual TLS, with key_file
    key_file: str = ""
    server_name_override: str = ""  # the name the server's certificate is checked against; "": the host

    def check(self, prefix: str = "tls") -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise InvalidField(f"{prefix}.{'key_file' if self.cert_file else 'cert_file'}",
                               "cert_file and key_file go together")
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path and not os.access(path, os.R_OK):
                raise InvalidField(f"{prefix}.{key}", f"cannot read {path!r}")


@dataclass
class RetryConfig:
    enabled: bool = True  # false: a failed request is dropped (and counted) at once
    initial_interval: float = duration(5.0)  # the first wait after a failure
    randomization_factor: float = 0.5  # each wait is randomized by ± this fraction
    multiplier: float = 1.5  # each wait is this many times the previous one...
    max_interval: float = duration(30.0)  # ...up to this
    # How long one request is retried before it is dropped. The Collector's default is 5m because its
    # queue lives in memory; otelite's is on disk and bounded by sending_queue, so 0 (the default here)
    # retries until the upstream takes the data or the queue's bound drops it.
    max_elapsed_time: float = duration(0.0)

    def check(self) -> None:
        if self.initial_interval <= 0 or self.max_interval <= 0:
            raise InvalidField("retry_on_failure.initial_interval", "intervals must be positive")
        if self.multiplier < 1:
            raise InvalidField("retry_on_failure.multiplier", f"must be at least 1, got {self.multiplier}")
        if not 0 <= self.randomization_factor < 1:
            raise InvalidField("retry_on_failure.randomization_factor",
                               f"must be in [0, 1), got {self.randomization_factor}")
        if self.max_elapsed_time < 0:
            raise InvalidField("retry_on_failure.max_elapsed_time", "must not be negative")


DEFAULT_QUEUE_SIZE = {"bytes": 256 << 20, "items": 1_000_000}


@dataclass
class QueueConfig:
    # The durable queue is the store itself (a cursor over what was committed); it cannot be turned off.
    enabled: bool = True
    # One request in flight per exporter and signal keeps the upstream's order (remote-write requires it).
    num_consumers: int = 1
    sizer: str = "bytes"  # what queue_size counts: bytes of OTLP requests, or items (spans, data points)
    queue_size: int = 0  # 0: 256 MiB (bytes) or 1,000,000 (items). Beyond it the oldest data is dropped
    max_age: float = duration(0.0)  # undelivered data older than this is dropped; 0: no age limit

    def check(self) -> None:
        if not self.enabled:
            raise InvalidField("sending_queue.enabled", "otelite's queue is the store and cannot be disabled")
        if self.num_consumers != 1:
            raise InvalidField("sending_queue.num_consumers", "otelite sends one request at a time per exporter "
                               "and signal, in commit order; set 1 or leave it out")
        if self.sizer not in DEFAULT_QUEUE_SIZE:
            raise InvalidField("sending_queue.sizer", f"must be bytes or items, got {self.sizer!r}")
        if self.queue_size < 0:
            raise InvalidField("sending_queue.queue_size", f"must not be negative, got {self.queue_size}")
        if self.queue_size == 0:
            self.queue_size = DEFAULT_QUEUE_SIZE[self.sizer]
        if self.max_age < 0:
            raise InvalidField("sending_queue.max_age", "must not be negative")


def check_headers(headers: Any, reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """`headers:` as a mapping of strings (numbers allowed as values); `reserved` names may not be set."""
    out = {}
    for k, v in headers.items():
        if not isinstance(k, str) or not k or isinstance(v, (dict, list, bool)) or v is None:
            raise InvalidField(f"headers.{k}", "headers are names mapped to text values")
        if k.lower() in reserved:
            raise InvalidField(f"headers.{k}", f"{k} is set by the exporter itself")
        out[k] = str(v)
    return out


def headers_field() -> Any:
    return field(default_factory=dict)
