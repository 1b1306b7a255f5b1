"""The `otlphttp` exporter type (protobuf over HTTP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.collector.component import Factory, Host
from otelite.exporters.otlphttp.config import OtlpHttpExporterConfig

if TYPE_CHECKING:
    from otelite.exporters.otlphttp.consumer import OtlpHttpExporter


def create_consumer(host: Host, component_id: str, config: OtlpHttpExporterConfig) -> "OtlpHttpExporter":
    from otelite.exporters.otlphttp.consumer import OtlpHttpExporter

    return OtlpHttpExporter(component_id, host, config)


FACTORY = Factory(kind="exporters", type="otlphttp", config=OtlpHttpExporterConfig,
                  create_consumer=create_consumer)
