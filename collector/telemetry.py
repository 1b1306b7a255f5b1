"""otelite's own metrics (prometheus.md, "Self-telemetry"), served at /metrics/self.

Names are fixed here once. Each `Telemetry` has its own registry, so tests and several servers in one
process never share counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
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
        # Per exporter (its component id, e.g. `sqlite` or `otlp/upstream`), with the OpenTelemetry
        # Collector's own names (issue 17), so a dashboard built for the Collector reads otelite unchanged.
        # They replace otelite_exporter_{sent,failed}_* (prometheus.md), one set only. Sent: stored (sqlite)
        # or acknowledged by the upstream (forwarders, counted when the upstream answered, not when handed
        # over). Failed: taken and then lost for that exporter (commit failed; the upstream refused it for
        # good, rejected it in a partial success, retries ran out, or the queue's bound dropped it; the
        # reason is in otelite_exporter_dropped_*). A refusal at admission (queue full) is not a failure:
        # the receiver counts it refused and the client retries.
        self.exporter_sent = {
            "traces": Counter("otelcol_exporter_sent_spans", "Spans an exporter stored or delivered.",
                              ("exporter",), registry=r),
            "metrics": Counter("otelcol_exporter_sent_metric_points",
                               "Metric data points an exporter stored or delivered.", ("exporter",), registry=r),
        }
        self.exporter_failed = {
            "traces": Counter("otelcol_exporter_send_failed_spans", "Spans an exporter took and failed to "
                              "store or deliver.", ("exporter",), registry=r),
            "metrics": Counter("otelcol_exporter_send_failed_metric_points", "Metric data points an exporter "
                               "took and failed to store or deliver.", ("exporter",), registry=r),
        }
        dropped_labels = ("exporter", "reason")
        self.exporter_dropped = {
            "traces": Counter("otelite_exporter_dropped_spans", "Spans a forwarder gave up on, by reason "
                              "(permanent, rejected, retries_exhausted, queue_full, expired, out_of_order).",
                              dropped_labels, registry=r),
            "metrics": Counter("otelite_exporter_dropped_metric_points", "Metric data points a forwarder "
                               "gave up on, by reason.", dropped_labels, registry=r),
        }
        # At-least-once: entries sent again after a restart interrupted a request that may have arrived.
        # An upper bound of the duplicates the upstream received.
        self.exporter_resent = {
            "traces": Counter("otelite_exporter_resent_spans", "Spans sent again after a restart because "
                              "the upstream may already have had them.", ("exporter",), registry=r),
            "metrics": Counter("otelite_exporter_resent_metric_points", "Metric data points sent again "
                               "after a restart because the upstream may already have had them.",
                               ("exporter",), registry=r),
        }
        # The forwarders' durable queues, read when /metrics/self is collected (lag keeps growing while an
        # upstream is down, without the forwarder having to wake up).
        self.export_queues: list = []  # objects with exporter, signal, queue_size, capacity, oldest_ns
        r.register(_ExportQueueCollector(self.export_queues))
        self.dropped_families = Counter(
            "otelite_prometheus_dropped_families",
            "Metric families left out of a scrape because of a type conflict.", registry=r)
        ProcessCollector(registry=r)


class _ExportQueueCollector:
    """otelcol_exporter_queue_size / _queue_capacity (the Collector's names; in the queue's sizer unit,
    bytes or items) and otelite_exporter_lag_seconds (age of the oldest entry not yet delivered; 0 when
    caught up), per forwarder and data type."""

    def __init__(self, queues: list) -> None:
        self._queues = queues

    def describe(self):
        return []  # built at collect time; nothing to check at registration

    def collect(self):
        labels = ("exporter", "data_type")
        size = GaugeMetricFamily("otelcol_exporter_queue_size", "Undelivered data in a forwarder's durable "
                                 "queue, in its sizer's unit.", labels=labels)
        capacity = GaugeMetricFamily("otelcol_exporter_queue_capacity", "Bound of a forwarder's durable queue, "
                                     "in its sizer's unit; beyond it the oldest data is dropped.", labels=labels)
        lag = GaugeMetricFamily("otelite_exporter_lag_seconds", "Age of the oldest data a forwarder has not "
                                "delivered yet (0: caught up).", labels=labels)
        now = time.time_ns()
        for q in list(self._queues):
            key = [q.exporter, q.signal]
            size.add_metric(key, q.queue_size)
            capacity.add_metric(key, q.capacity)
            lag.add_metric(key, max(0.0, (now - q.oldest_ns) / 1e9) if q.oldest_ns is not None else 0.0)
        yield size
        yield capacity
        yield lag
