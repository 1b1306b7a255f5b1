"""`exporters.prometheus`: the scrape endpoint over the store's live series (prometheus.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from otelite.collector.component import check_endpoint, duration


@dataclass
class PrometheusExporterConfig:
    endpoint: str | None = None  # None: /metrics on the main HTTP listener only
    metric_expiration: float = duration(300.0)  # series idle this long are not exposed; 0: never expire

    def validate(self) -> None:
        if self.endpoint is not None:
            check_endpoint("endpoint", self.endpoint)

    def listeners(self) -> Iterator[tuple[str, str]]:
        if self.endpoint is not None:
            yield "endpoint", self.endpoint
