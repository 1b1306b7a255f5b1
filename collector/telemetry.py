"""otelite's own metrics (prometheus.md, "Self-telemetry"), served at /metrics/self.

Names are fixed here once. Each `Telemetry` has its own registry, so tests and several servers in one
process never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("receiver", "transport")
        self.accepted_spans = Counter(
            "otelite_receiver_accepted_spans", "Spans stored and acknowledged.", labels, registry=r)
        self.refused_spans = Counter(
            "otelite_receiver_refused_spans", "Spans refused (invalid, or the store was full).", labels,
            registry=r)
        self.accepted_points = Counter(
            "otelite_receiver_accepted_metric_points", "Metric data points stored and acknowledged.", labels,
            registry=r)
        self.refused_points = Counter(
            "otelite_receiver_refused_metric_points", "Metric data points refused.", labels, registry=r)
        self.queue_size = Gauge(
            "otelite_store_queue_size", "Items (spans + data points) waiting for the writer.", registry=r)
        self.commit_seconds = Histogram(
            "otelite_store_commit_seconds", "Time to write and commit one group of requests.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r)
        self.rows = Counter("otelite_store_rows", "Rows committed, by table.", ("table",), registry=r)
        self.database_bytes = Gauge(
            "otelite_store_database_bytes", "Size of the database file and its WAL.", registry=r)
        self.http_requests = Counter(
            "otelite_http_requests", "HTTP requests served.", ("route", "code"), registry=r)
        # Per exporter (its component id, e.g. `sqlite`), as the Collector's otelcol_exporter_sent_spans /
        # otelcol_exporter_send_failed_spans with otelite's prefix (prometheus.md: otelite_exporter_sent_*,
        # otelite_exporter_failed_*). Sent: stored or forwarded. Failed: taken and then lost for that
        # exporter (commit failed, forwarding failed or dropped); a refusal at admission (queue full) is
        # not a failure, the receiver counts it refused and the client retries.
        self.exporter_sent = {
            "traces": Counter("otelite_exporter_sent_spans", "Spans an exporter stored or forwarded.",
                              ("exporter",), registry=r),
            "metrics": Counter("otelite_exporter_sent_metric_points",
                               "Metric data points an exporter stored or forwarded.", ("exporter",), registry=r),
        }
        self.exporter_failed = {
            "traces": Counter("otelite_exporter_failed_spans", "Spans an exporter took and failed to store "
                              "or forward.", ("exporter",), registry=r),
            "metrics": Counter("otelite_exporter_failed_metric_points", "Metric data points an exporter took "
                               "and failed to store or forward.", ("exporter",), registry=r),
        }
        self.dropped_families = Counter(
            "otelite_prometheus_dropped_families",
            "Metric families left out of a scrape because of a type conflict.", registry=r)
        ProcessCollector(registry=r)
