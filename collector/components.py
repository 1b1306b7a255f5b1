"""The components otelite is built with, in one place (the Collector's `components.go`).

Adding a component type: its package holds `config.py` (a dataclass with defaults, `validate()`) and a
`FACTORY` (collector/component.py); list the factory here. No receiver, loader or pipeline code changes.
"""

from __future__ import annotations

from otelite.collector.component import Registry
from otelite.collector.pipeline import batch, memory_limiter
from otelite.collector.receivers.otlp import factory as otlp
from otelite.exporters.otlp import factory as otlp_exporter
from otelite.exporters.otlphttp import factory as otlphttp
from otelite.exporters.prometheus import factory as prometheus
from otelite.exporters.prometheusremotewrite import factory as prometheusremotewrite
from otelite.exporters.sqlite import factory as sqlite

BUILTIN = Registry([
    otlp.FACTORY,
    batch.FACTORY, memory_limiter.FACTORY,
    sqlite.FACTORY, prometheus.FACTORY,
    # Forwarders: a durable cursor over the store per exporter (exporters/forwarding/queue.py).
    otlp_exporter.FACTORY, otlphttp.FACTORY, prometheusremotewrite.FACTORY,
])

# What a config that names no components gets: the default pipeline otlp → memory_limiter, batch → sqlite.
DEFAULT_COMPONENTS = {"receivers": ("otlp",), "processors": ("batch", "memory_limiter"), "exporters": ("sqlite",)}
