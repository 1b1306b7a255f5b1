"""The `sqlite` exporter type: every pipeline includes it (its commit gates the acknowledgement), and
otelite keeps one store, so all pipelines name the same instance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.collector.component import Factory, Host
from otelite.exporters.sqlite.config import SqliteExporterConfig

if TYPE_CHECKING:
    from otelite.exporters.sqlite.consumer import SqliteExporter


def create_consumer(host: Host, component_id: str, config: SqliteExporterConfig) -> "SqliteExporter":
    # Imported here: loading a config (e.g. to report an error in it) should not load the store.
    from otelite.exporters.sqlite.consumer import SqliteExporter

    return SqliteExporter(component_id, host.store)


FACTORY = Factory(kind="exporters", type="sqlite", config=SqliteExporterConfig,
                  create_consumer=create_consumer, acknowledges=True)
