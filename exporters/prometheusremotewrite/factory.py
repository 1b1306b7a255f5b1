"""The `prometheusremotewrite` exporter type (metrics only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.collector.component import Factory, Host
from otelite.exporters.prometheusremotewrite.config import PrometheusRemoteWriteExporterConfig

if TYPE_CHECKING:
    from otelite.exporters.prometheusremotewrite.consumer import RemoteWriteExporter


def create_consumer(host: Host, component_id: str, config: PrometheusRemoteWriteExporterConfig
                    ) -> "RemoteWriteExporter":
    from otelite.exporters.prometheusremotewrite.consumer import RemoteWriteExporter

    return RemoteWriteExporter(component_id, host, config)


FACTORY = Factory(kind="exporters", type="prometheusremotewrite", config=PrometheusRemoteWriteExporterConfig,
                  signals=("metrics",), create_consumer=create_consumer)
