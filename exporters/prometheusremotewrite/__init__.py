"""The `prometheusremotewrite` exporter: forwards the metrics the store committed to Prometheus-compatible
storage (Prometheus, Mimir, Thanos, VictoriaMetrics) with remote-write 1.0, translated exactly as the
scrape translates them, through the durable queue (exporters/forwarding)."""
