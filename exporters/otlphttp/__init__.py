"""The `otlphttp` exporter: forwards what the store committed to an OTLP/HTTP (protobuf) upstream, in
order, through the durable queue (exporters/forwarding)."""
