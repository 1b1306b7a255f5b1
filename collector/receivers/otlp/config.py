"""`receivers.otlp`: the OTLP receiver's settings (otlp.md). Each field's comment says what happens when
it is omitted; `validate()` holds the rules that span fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from otelite.collector.component import (InvalidField, check_endpoint, is_loopback, optional_section,
                                         parse_endpoint, section)


@dataclass
class GrpcServerConfig:
    endpoint: str = "127.0.0.1:4317"  # loopback unless configured otherwise (otlp.md: sidecar default)
    max_recv_msg_size_mib: float = 4.0  # larger messages → RESOURCE_EXHAUSTED
    max_concurrent_streams: int = 0  # 0: grpc's default


@dataclass
class HttpServerConfig:
    endpoint: str = "127.0.0.1:4318"  # serves OTLP/HTTP, the REST API, /healthz and /metrics
    max_request_body_size: int = 20 * 1024 * 1024  # bytes, enforced after decompression → 413
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"  # answered 404: logs are not stored yet


@dataclass
class OtlpProtocols:
    grpc: GrpcServerConfig | None = optional_section(GrpcServerConfig)  # null/absent disables it
    http: HttpServerConfig | None = optional_section(HttpServerConfig)


def _none_enabled() -> OtlpProtocols:
    return OtlpProtocols(grpc=None, http=None)


@dataclass
class OtlpReceiverConfig:
    # As in the Collector, a file that lists protocols enables exactly those.
    protocols: OtlpProtocols = section(OtlpProtocols, when_given=_none_enabled)
    # Unset: open on loopback, as sidecars expect (data goes to the default project or the one named by
    # the X-Otelite-Project header, honoured only from loopback or with a key), and a start-up error on a
    # non-loopback endpoint. "none": open even there, deliberately. "required": a key with the `ingest`
    # scope picks the project (auth.md).
    auth: str | None = None
    # Processes that decode and normalize protobuf payloads, so ingest uses more than the one core the
    # event loop and the writer share (collector/pipeline/walker.py); 0 does it all in the event loop.
    decode_workers: int = 1
    # Bytes of request bodies (gRPC messages, HTTP bodies, decompressed) held at once, from before a body
    # is read until its rows are committed (collector/receivers/admission.py). Beyond it requests are
    # refused before their body is read: 503 + Retry-After / UNAVAILABLE, so memory stays bounded.
    max_inflight_bytes: int = 32 * 1024 * 1024

    def validate(self) -> None:
        if self.protocols.grpc is None and self.protocols.http is None:
            raise InvalidField("protocols", "enable grpc, http or both")
        for key, endpoint in self.listeners():
            check_endpoint(key, endpoint)
        h = self.protocols.http
        if h is not None:
            for attr in ("traces_url_path", "metrics_url_path", "logs_url_path"):
                if not getattr(h, attr).startswith("/"):
                    raise InvalidField(f"protocols.http.{attr}", "must start with /")
            if h.max_request_body_size <= 0:
                raise InvalidField("protocols.http.max_request_body_size", "must be positive")
        if self.max_inflight_bytes <= 0:
            raise InvalidField("max_inflight_bytes", f"must be positive, got {self.max_inflight_bytes}")
        if not 0 <= self.decode_workers <= 64:
            raise InvalidField("decode_workers", f"must be 0 to 64, got {self.decode_workers}")
        if self.auth not in (None, "none", "required"):
            raise InvalidField("auth", f"must be none or required, got {self.auth!r}")
        if self.auth is None:
            for key, endpoint in self.otlp_listeners():
                if not is_loopback(parse_endpoint(endpoint)[0]):
                    raise InvalidField("auth", (
                        f"OTLP listens beyond loopback ({key}: {endpoint}) without receivers.otlp.auth, so "
                        f"any host that reaches it could write data into any project. Set auth: required "
                        f"(senders present an API key with the ingest scope), or auth: none to accept "
                        f"unauthenticated data from the network deliberately"))

    def otlp_listeners(self) -> Iterator[tuple[str, str]]:
        """(key, HOST:PORT) of the sockets that accept OTLP (enabled protocols only)."""
        if self.protocols.grpc is not None:
            yield "protocols.grpc.endpoint", self.protocols.grpc.endpoint
        if self.protocols.http is not None:
            yield "protocols.http.endpoint", self.protocols.http.endpoint

    def listeners(self) -> Iterator[tuple[str, str]]:
        """(key, HOST:PORT) of the sockets this receiver listens on. The REST API shares the HTTP listener,
        so it listens on the default HTTP endpoint even when OTLP/HTTP is not enabled."""
        if self.protocols.grpc is not None:
            yield "protocols.grpc.endpoint", self.protocols.grpc.endpoint
        yield "protocols.http.endpoint", (self.protocols.http or HttpServerConfig()).endpoint
