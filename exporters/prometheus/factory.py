"""The `prometheus` exporter type. It consumes no batches: /metrics renders the store's latest state at
scrape time (exporters/prometheus/exposition.py), so listing it in a metrics pipeline, as a Collector
config does, adds nothing to that pipeline's fan-out."""

from __future__ import annotations

from otelite.collector.component import Factory
from otelite.exporters.prometheus.config import PrometheusExporterConfig

FACTORY = Factory(kind="exporters", type="prometheus", config=PrometheusExporterConfig, signals=("metrics",))
