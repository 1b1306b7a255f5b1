"""The `otlp` exporter: forwards what the store committed to an OTLP/gRPC upstream (an OpenTelemetry
Collector, Tempo, another otelite...), in order, through the durable queue (exporters/forwarding)."""
