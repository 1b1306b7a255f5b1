"""The `otlp` exporter type (gRPC)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.collector.component import Factory, Host
from otelite.exporters.otlp.config import OtlpExporterConfig

if TYPE_CHECKING:
    from otelite.exporters.otlp.consumer import OtlpGrpcExporter


def create_consumer(host: Host, component_id: str, config: OtlpExporterConfig) -> "OtlpGrpcExporter":
    from otelite.exporters.otlp.consumer import OtlpGrpcExporter  # loading a config needs no grpc channel

    return OtlpGrpcExporter(component_id, host, config)


FACTORY = Factory(kind="exporters", type="otlp", config=OtlpExporterConfig, create_consumer=create_consumer)
